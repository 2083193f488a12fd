"""GGUF export checked against a real llama.cpp (llama-cpp-python's pinned PyPI source,
built and cached by ``tests/_llama_cpp.py``):

- Ladle's Rust blocks equal llama.cpp's reference quantizers (``quantize_row_*_ref`` of
  Q4_K, Q6_K, Q5_0, Q8_0, Q4_0, compiled from ggml-quants.c) on random and adversarial
  rows and on real weights;
- Ladle's ``q4_k_m`` file holds the same tensors (names, types, bytes) as the file
  ``llama_model_quantize(..., Q4_K_M)`` writes from Ladle's float32 export;
- llama.cpp loads the q8_0 and q4_k_m exports, tokenizes prompts as the Hugging Face
  tokenizer does, renders the stored chat template as Ladle does, and its logits agree
  with transformers' on the same weights.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

import _llama_cpp  # noqa: E402
from conftest import build_tiny_llama  # noqa: E402
from ladle._core import gguf_quantize  # noqa: E402

Q = gguf.GGMLQuantizationType
BLOCK_TYPES = {"q4_k": Q.Q4_K, "q6_k": Q.Q6_K, "q5_0": Q.Q5_0, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}
REF_ROWS = {
    "q4_k": "quantize_row_q4_K_ref",
    "q6_k": "quantize_row_q6_K_ref",
    "q5_0": "quantize_row_q5_0_ref",
    "q8_0": "quantize_row_q8_0_ref",
    "q4_0": "quantize_row_q4_0_ref",
}
CHATS = [
    [{"role": "user", "content": "Printer on floor 3 is jammed again!!"}],
    [
        {"role": "system", "content": "Reply with JSON only."},
        {"role": "user", "content": "My invoice #4411 is wrong, charged 2x $19.99."},
        {"role": "assistant", "content": '{"category": "billing"}'},
        {"role": "user", "content": "And the VPN drops every hour."},
    ],
    [{"role": "user", "content": "ünïcödé, emoji 🎉 and\nnewlines\n\n  indented"}],
]


@pytest.fixture(scope="session")
def llama_cpp() -> ModuleType:
    try:
        return _llama_cpp.load()
    except _llama_cpp.LlamaCppUnavailable as e:
        pytest.skip(f"llama.cpp unavailable: {e}")


@pytest.fixture(scope="session")
def ggml() -> ctypes.CDLL:
    try:
        return _llama_cpp.ggml_quants()
    except _llama_cpp.LlamaCppUnavailable as e:
        pytest.skip(f"llama.cpp's quantizers unavailable: {e}")


def ggml_quantize(lib: ctypes.CDLL, x: np.ndarray, name: str) -> bytes:
    block, size = gguf.GGML_QUANT_SIZES[BLOCK_TYPES[name]]
    out = np.zeros(x.size // block * size, np.uint8)
    x = np.ascontiguousarray(x, np.float32)
    row = getattr(lib, REF_ROWS[name])
    row(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(out.ctypes.data), ctypes.c_int64(x.size))
    return out.tobytes()


# Rows built to hit the edges: zeros (whole super-blocks and single sub-blocks), ties of
# the largest magnitude with both signs, one outlier, tiny and huge magnitudes.
_value = st.one_of(
    st.floats(-1e3, 1e3, width=32, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 8.5, 1e-20, -1e-20, 1e-40, 1e30, -1e30]),
    st.floats(-(2.0**-10), 2.0**-10, width=32),
)


@st.composite
def rows(draw: st.DrawFn) -> np.ndarray:
    x = draw(hnp.arrays(np.float32, draw(st.integers(1, 3)) * 256, elements=_value))
    if draw(st.booleans()):
        x[: draw(st.sampled_from([16, 32, 256]))] = 0.0
    if draw(st.booleans()):
        m = np.float32(draw(st.sampled_from([1.0, 7.0, 2.5e-3])))
        x[:256] = np.clip(x[:256], -m / 2, m / 2)
        x[draw(st.integers(0, 127))] = -m
        x[draw(st.integers(128, 255))] = m
    return x


def zero_block_led_by_negative_zero(x: np.ndarray) -> bool:
    b = x.reshape(-1, 32)
    return bool(((b == 0).all(axis=1) & np.signbit(b[:, 0])).any())


@given(x=rows())
@settings(max_examples=200, deadline=None)
def test_blocks_are_byte_identical_to_ggml(ggml: ctypes.CDLL, x: np.ndarray) -> None:
    for name in BLOCK_TYPES:
        if name == "q4_0" and zero_block_led_by_negative_zero(x):
            # Ladle's Q4_0 is gguf.quants' (numpy): for an all-zero block it divides the
            # first value by -8, so a leading -0.0 gives scale +0.0 where ggml's is -0.0,
            # the one input on which the two references differ (both decode to zeros).
            continue
        assert gguf_quantize(x, name).tobytes() == ggml_quantize(ggml, x, name), name


def test_blocks_match_ggml_on_real_weights(ggml: ctypes.CDLL, smollm2_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(smollm2_dir / "model.safetensors", framework="np") as f:
        # a slice of every tensor kind: attention, MLP (SmolLM2 is dequantized from Q4_1)
        keys = list(f.keys())
        names = [k for k in keys if ".layers.3." in k and k.endswith("proj.weight")]
        x = np.concatenate([f.get_tensor(k).astype(np.float32).reshape(-1) for k in names])
    x = x[: len(x) // 256 * 256]
    for name in BLOCK_TYPES:
        assert gguf_quantize(x, name).tobytes() == ggml_quantize(ggml, x, name), name


# ---------------------------------------------------------------- files


@pytest.fixture(scope="module")
def tiny_k(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random untied Llama whose rows are k-quant sized: 256 (Q4_K / Q6_K) except
    ffn_down (320: Q5_0 / Q8_0 fallback); 8 layers, so "more bits" layers 0, 3, 6, 7."""
    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny-k"),
        smollm2_dir,
        hidden_size=256,
        intermediate_size=320,
        num_hidden_layers=8,
        tie_word_embeddings=False,
    )


def tensors(path: Path) -> dict[str, tuple[Any, bytes]]:
    return {t.name: (Q(t.tensor_type), t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


def assert_same_as_llama_quantize(llama_cpp: ModuleType, folder: Path, tmp: Path) -> None:
    from ladle.gguf import write_gguf

    f32 = write_gguf(folder, tmp / "m.f32.gguf", quant="f32")
    theirs = tmp / "llama.q4_k_m.gguf"
    _llama_cpp.quantize_file(llama_cpp, f32, theirs)
    ours = tensors(write_gguf(folder, tmp / "m.q4_k_m.gguf", quant="q4_k_m"))
    want = tensors(theirs)
    assert sorted(ours) == sorted(want)
    for name, (qtype, data) in want.items():
        assert ours[name][0] == qtype, name
        assert ours[name][1] == data, name


def test_q4_k_m_file_equals_llama_quantize(
    llama_cpp: ModuleType, tiny_k: Path, tmp_path: Path
) -> None:
    assert_same_as_llama_quantize(llama_cpp, tiny_k, tmp_path)
    types = {name: qtype for name, (qtype, _) in tensors(tmp_path / "m.q4_k_m.gguf").items()}
    # the choices the test exists for, spelled out
    assert types["output.weight"] == Q.Q6_K and types["token_embd.weight"] == Q.Q4_K
    assert [types[f"blk.{i}.attn_v.weight"] for i in range(8)] == [
        Q.Q6_K if i in (0, 3, 6, 7) else Q.Q4_K for i in range(8)
    ]
    assert types["blk.1.ffn_down.weight"] == Q.Q5_0  # rows of 320: no 256 blocks
    assert types["blk.0.ffn_down.weight"] == Q.Q8_0  # Q6_K's fallback
    assert types["blk.2.ffn_up.weight"] == Q.Q4_K
    assert types["blk.2.attn_norm.weight"] == Q.F32


@pytest.mark.slow
def test_smollm2_q4_k_m_file_equals_llama_quantize(
    llama_cpp: ModuleType, smollm2_dir: Path, tmp_path: Path
) -> None:
    # Tied embeddings (-> Q6_K, or Q8_0 since 576 is not a multiple of 256), and most
    # matrices on the Q5_0 fallback: the other half of llama_tensor_get_type.
    assert_same_as_llama_quantize(llama_cpp, smollm2_dir, tmp_path)


def test_llama_cpp_runs_the_exports(llama_cpp: ModuleType, tiny_k: Path, tmp_path: Path) -> None:
    """llama.cpp loads each export, tokenizes rendered chats as the HF tokenizer does,
    renders the stored template as Ladle does, and computes the logits transformers
    computes from the same file's weights."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ladle.data import ChatTokenizer
    from ladle.gguf import write_gguf

    torch.set_num_threads(1)
    ct, tok = ChatTokenizer.from_pretrained(tiny_k), AutoTokenizer.from_pretrained(tiny_k)
    for quant in ("q8_0", "q4_k_m"):
        path = write_gguf(tiny_k, tmp_path / f"t.{quant}.gguf", quant=quant)
        llm = llama_cpp.Llama(
            str(path), n_ctx=256, n_threads=1, logits_all=True, verbose=False, seed=0
        )
        meta = llm.metadata
        fmt = Jinja2ChatFormatter(
            meta["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token="<|im_start|>"
        )
        ref = AutoModelForCausalLM.from_pretrained(
            tmp_path, gguf_file=path.name, dtype=torch.float32
        ).eval()
        for chat in CHATS:
            text = ct.render(chat, add_generation_prompt=True)
            assert fmt(messages=chat).prompt == text
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
            llm.reset()
            llm.eval(ids)
            theirs = np.asarray(llm.scores[: len(ids)])
            with torch.no_grad():
                ours = ref(torch.tensor([ids])).logits[0].numpy()
            # llama.cpp multiplies with 8-bit activations, so not bit-equal: the
            # logits must still be the same function of the input (corr ~ 0.9999).
            corr = np.corrcoef(theirs.ravel(), ours.ravel())[0, 1]
            assert corr > 0.99, (quant, corr)
        out = llm.create_completion(CHATS[0][0]["content"], max_tokens=4, temperature=0.0)
        assert out["usage"]["completion_tokens"] >= 1
        del llm
