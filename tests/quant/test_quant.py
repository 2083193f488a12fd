"""NF4 pre-quantization: byte equality with bitsandbytes and transformers.

The oracle for every byte is the installed bitsandbytes (CPU path) and a checkpoint that
transformers itself saves after quantizing on load. Tests build both on the fly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import bitsandbytes.functional as bnbf
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from ladle import _core
from ladle.errors import QuantError
from ladle.quant import QuantSettings, prequantized, quantize_checkpoint, quantize_nf4

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def bnb_quantize(t: torch.Tensor, blocksize: int, double_quant: bool, quant_type: str = "nf4"):
    return bnbf.quantize_4bit(
        t, blocksize=blocksize, quant_type=quant_type, compress_statistics=double_quant
    )


def assert_same_quant(t: torch.Tensor, blocksize: int, double_quant: bool, qt: str = "nf4"):
    want_q, want = bnb_quantize(t, blocksize, double_quant, qt)
    got_q, got = quantize_nf4(t, blocksize=blocksize, double_quant=double_quant, quant_type=qt)
    assert got_q.dtype == want_q.dtype == torch.uint8
    assert got_q.shape == want_q.shape
    assert torch.equal(got_q, want_q)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.blocksize == want.blocksize and got.quant_type == want.quant_type
    assert torch.equal(got.code, want.code)
    assert got.absmax.dtype == want.absmax.dtype and got.absmax.shape == want.absmax.shape
    if not double_quant:
        assert torch.equal(got.absmax, want.absmax)
        assert got.state2 is None
        return
    # The uint8 codes must be equal; the nested float statistics within one ulp.
    assert torch.equal(got.absmax, want.absmax)
    np.testing.assert_array_max_ulp(got.offset.numpy(), want.offset.numpy(), maxulp=1)
    np.testing.assert_array_max_ulp(got.state2.absmax.numpy(), want.state2.absmax.numpy(), maxulp=1)
    assert torch.equal(got.state2.code, want.state2.code)
    assert got.state2.blocksize == want.state2.blocksize == 256
    assert got.state2.dtype == want.state2.dtype
    # The packed (serialised) forms agree too, quant_state JSON included.
    a, b = got.as_dict(packed=True), want.as_dict(packed=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- tensors


def test_tables_match_installed_bitsandbytes() -> None:
    """The code tables compiled into Rust are the installed library's, bit for bit."""
    tables = _core.nf4_tables()
    for qt in ("nf4", "fp4"):
        want = bnbf.get_4bit_type(qt, device="cpu")
        assert torch.equal(torch.tensor(tables[qt], dtype=torch.float32), want)
    _, state = bnb_quantize(torch.randn(512), 64, True)
    assert torch.equal(torch.tensor(tables["dynamic"], dtype=torch.float32), state.state2.code)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("blocksize", [32, 64, 256, 4096])
@pytest.mark.parametrize("shape", [(7,), (64, 128), (33, 17), (3, 4101)])
def test_matches_bitsandbytes(dtype: torch.dtype, blocksize: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(sum(shape) + blocksize)
    t = (torch.randn(shape) * torch.rand(shape[0], *[1] * (len(shape) - 1))).to(dtype)
    assert_same_quant(t, blocksize, double_quant=False)
    assert_same_quant(t, blocksize, double_quant=True)


def test_fp4_matches_bitsandbytes() -> None:
    torch.manual_seed(3)
    t = torch.randn(96, 130, dtype=torch.bfloat16)
    assert_same_quant(t, 64, double_quant=True, qt="fp4")


def test_all_zero_blocks_follow_the_cpu_path() -> None:
    """A full zero block stores absmax 0 and code 7 (0x77); the partial last block stores
    the clamped absmax 1e-38, as bitsandbytes' torch path does on CPU."""
    t = torch.zeros(64 * 3 + 10)
    t[64:128] = torch.randn(64)
    packed, state = quantize_nf4(t, blocksize=64)
    assert state.absmax[0].item() == 0.0
    assert state.absmax[2].item() == 0.0
    assert state.absmax[3].item() == pytest.approx(1e-38)
    assert set(packed[:32].flatten().tolist()) == {0x77}
    assert_same_quant(t, 64, double_quant=False)
    assert_same_quant(t, 64, double_quant=True)
    assert_same_quant(torch.zeros(1000, dtype=torch.bfloat16), 64, double_quant=True)


def test_large_tensor_double_quant_uses_torch_threaded_mean() -> None:
    """Past 32768 blocks torch sums absmax in per-thread chunks; the offset follows it."""
    torch.manual_seed(0)
    t = torch.randn(2100, 1024, dtype=torch.bfloat16)  # 33600 blocks of 64
    assert_same_quant(t, 64, double_quant=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 5000),
    cols=st.sampled_from([1, 3, 64]),
    blocksize=st.sampled_from([32, 64, 128, 256, 512, 1024, 2048, 4096]),
    dtype=st.sampled_from(DTYPES),
    zero_frac=st.sampled_from([0.0, 0.3]),
    scale_exp=st.integers(-20, 10),
    double_quant=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_equal_bytes(
    n: int,
    cols: int,
    blocksize: int,
    dtype: torch.dtype,
    zero_frac: float,
    scale_exp: int,
    double_quant: bool,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cols)).astype(np.float32) * np.float32(2.0**scale_exp)
    x *= rng.random((n, 1)).astype(np.float32)  # rows of different magnitude
    if zero_frac:
        x[rng.random((n, cols)) < zero_frac] = 0.0
        x[: min(n, 40)] = 0.0  # whole zero blocks
    t = torch.from_numpy(x).to(dtype)
    if not torch.isfinite(t).all():
        return  # float16 overflow: not a weight anyone quantizes
    assert_same_quant(t, blocksize, double_quant)


def test_bad_inputs_raise_quant_errors() -> None:
    with pytest.raises(QuantError, match="unsupported dtype"):
        quantize_nf4(torch.ones(64, dtype=torch.int32))
    with pytest.raises(QuantError, match="blocksize"):
        quantize_nf4(torch.ones(64), blocksize=48)


@pytest.mark.parametrize("offset", [0.052454300224781036, 1e-05, 3.0, 123456.5, 1.5e-7])
def test_quant_state_json_is_what_bitsandbytes_packs(offset: float) -> None:
    from bitsandbytes.utils import pack_dict_to_tensor

    o32 = float(np.float32(offset))
    d = {
        "quant_type": "nf4",
        "blocksize": 64,
        "dtype": "bfloat16",
        "shape": (576, 1536),
        "nested_blocksize": 256,
        "nested_dtype": "float32",
        "nested_offset": o32,
    }
    want = bytes(pack_dict_to_tensor(d).tolist())
    assert _core.nf4_quant_state_json("nf4", 64, "bfloat16", [576, 1536], o32) == want


# ----------------------------------------------------------------------------- checkpoints


def read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for p in sorted(folder.glob("*.safetensors")):
        with safe_open(p, "pt") as f:
            for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                out[k] = f.get_tensor(k)
    return out


def bnb_config(double_quant: bool, compute_dtype: torch.dtype = torch.bfloat16):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def transformers_oracle(src: Path, out: Path, double_quant: bool) -> Path:
    """What transformers + bitsandbytes write: quantize on load, then save_pretrained."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=bnb_config(double_quant))
    model.save_pretrained(out)
    return out


def assert_same_checkpoint(ours: Path, oracle: Path) -> None:
    a, b = read_checkpoint(ours), read_checkpoint(oracle)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k
    qa = json.loads((ours / "config.json").read_text())["quantization_config"]
    qb = json.loads((oracle / "config.json").read_text())["quantization_config"]
    assert qa == qb


@pytest.fixture(scope="module")
def tiny_quantized(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("nf4")
    out = {}
    for dq in (True, False):
        out[("ladle", dq)] = quantize_checkpoint(tiny_llama_dir, root / f"ladle-{dq}", dq)
        out[("bnb", dq)] = transformers_oracle(tiny_llama_dir, root / f"bnb-{dq}", dq)
    return out


@pytest.mark.parametrize("double_quant", [True, False])
def test_tiny_checkpoint_equals_transformers_key_by_key(
    tiny_quantized: dict, double_quant: bool
) -> None:
    assert_same_checkpoint(
        tiny_quantized[("ladle", double_quant)], tiny_quantized[("bnb", double_quant)]
    )


def test_fp4_checkpoint_equals_transformers(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cfg = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="fp4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    oracle = tmp_path / "bnb"
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir, quantization_config=cfg).save_pretrained(
        oracle
    )
    ours = quantize_checkpoint(tiny_llama_dir, tmp_path / "ladle", quant_type="fp4")
    assert_same_checkpoint(ours, oracle)


def test_dtype_cast_equals_transformers_loading_in_bf16(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """``dtype="bfloat16"`` on a float32 checkpoint: what from_pretrained(dtype=bf16) saves."""
    from transformers import AutoModelForCausalLM

    oracle = tmp_path / "bnb"
    AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, quantization_config=bnb_config(True), dtype=torch.bfloat16
    ).save_pretrained(oracle)
    ours = quantize_checkpoint(tiny_llama_dir, tmp_path / "ladle", dtype="bfloat16")
    assert_same_checkpoint(ours, oracle)
    assert json.loads((ours / "config.json").read_text())["dtype"] == "bfloat16"


def test_output_folder_is_complete(tiny_quantized: dict, tiny_llama_dir: Path) -> None:
    out = tiny_quantized[("ladle", True)]
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (tiny_llama_dir / name).read_bytes()
    with safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["bnb_4bit_use_double_quant"] is True
    assert not list(out.parent.glob(".tmp-*"))


def test_loads_prequantized_with_equal_logits(
    tiny_quantized: dict, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, quantization_config=bnb_config(True)
    )

    # Loading the pre-quantized folder must not quantize anything.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("quantize_4bit called while loading a pre-quantized checkpoint")

    monkeypatch.setattr(bnb.functional, "quantize_4bit", refuse)
    model = AutoModelForCausalLM.from_pretrained(tiny_quantized[("ladle", True)])
    monkeypatch.undo()
    assert model.is_loaded_in_4bit
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q, bnb.nn.Linear4bit)
    assert q.weight.dtype == torch.uint8
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    ids = torch.tensor([[1, 2, 3, 400, 5000, 17, 9]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_qlora_smoke_from_prequantized(tiny_quantized: dict) -> None:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_quantized[("ladle", True)])
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"])
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 49152, (2, 16))
    losses = []
    for _ in range(6):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


def test_sharded_source_gets_an_index(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    src = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir).save_pretrained(src, max_shard_size="2MB")
    shutil.copy(tiny_llama_dir / "tokenizer.json", src / "tokenizer.json")
    assert len(list(src.glob("*.safetensors"))) > 1
    out = quantize_checkpoint(src, tmp_path / "out", double_quant=True)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    ckpt = read_checkpoint(out)
    assert sorted(index["weight_map"]) == sorted(ckpt)
    # All of a module's tensors live in the shard that holds its weight.
    for k, shard in index["weight_map"].items():
        if ".weight." in k:
            assert index["weight_map"][k.split(".weight.")[0] + ".weight"] == shard
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.is_loaded_in_4bit


def test_skip_list_and_options_reach_the_config(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = quantize_checkpoint(
        tiny_llama_dir,
        tmp_path / "o",
        double_quant=False,
        blocksize=32,
        skip=["lm_head", "mlp.down_proj"],
    )
    ckpt = read_checkpoint(out)
    assert ckpt["model.layers.0.mlp.down_proj.weight"].dtype == torch.float32
    assert ckpt["model.layers.0.mlp.up_proj.weight"].dtype == torch.uint8
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["llm_int8_skip_modules"] == ["lm_head", "mlp.down_proj"]
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


# ----------------------------------------------------------------------------- errors


def test_pickle_only_checkpoint_is_refused_unread(tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "pickled"
    src.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", src / "config.json")
    (src / "pytorch_model.bin").write_bytes(b"not a pickle: reading this would fail loudly")
    with pytest.raises(QuantError, match="pickle"):
        quantize_checkpoint(src, tmp_path / "out")
    (src / "pytorch_model.bin").unlink()
    with pytest.raises(QuantError, match=r"no \*\.safetensors"):
        quantize_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_dtype_and_existing_output(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    src = tmp_path / "int"
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir).save_pretrained(src)
    # Rewrite one Linear weight as int8: nothing can quantize that.
    from safetensors.torch import load_file, save_file

    tensors = load_file(src / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.ones(128, 64, dtype=torch.int8)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(QuantError, match="unsupported dtype"):
        quantize_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "exists").mkdir()
    with pytest.raises(QuantError, match="already exists"):
        quantize_checkpoint(tiny_llama_dir, tmp_path / "exists")


def test_name_collision_with_a_generated_tensor_is_refused(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A source tensor named like one the quantizer writes would give the output two
    header entries of one name (an unreadable file): one-line error, nothing written."""
    from safetensors.torch import load_file, save_file

    from ladle.cli import main

    src = tmp_path / "clash"
    shutil.copytree(tiny_llama_dir, src)
    tensors = load_file(src / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight.absmax"] = torch.ones(2)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    assert main(["quantize", str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "model.layers.0.mlp.up_proj.weight.absmax" in err[0] and "twice" in err[0]
    assert not out.exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp left


def test_write_failure_is_a_quant_error_with_the_path(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """A full disk, simulated with a file-size limit: a QuantError naming the path."""
    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
from ladle.quant import quantize_checkpoint
from ladle.errors import QuantError
try:
    quantize_checkpoint({str(tiny_llama_dir)!r}, {str(tmp_path / "out")!r})
except QuantError as e:
    print("QuantError:", e)
    sys.exit(0)
sys.exit(1)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "QuantError:" in r.stdout and str(tmp_path / "out") in r.stdout
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- cache, CLI


def test_prequantized_cache_reuses_and_keys_on_settings(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    first = prequantized(tiny_llama_dir, QuantSettings(double_quant=False))
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = prequantized(tiny_llama_dir, QuantSettings(double_quant=False))
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    other = prequantized(tiny_llama_dir, QuantSettings(double_quant=True))
    assert other != first and other.parent == tmp_path / "home" / "quantized"
    record = json.loads((other / "ladle_quantized.json").read_text())
    assert record["settings"]["double_quant"] is True and len(record["source_fingerprint"]) == 32


def test_cli_quantize(tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ladle.cli import main

    out = tmp_path / "cli-out"
    code = main(
        ["quantize", str(tiny_llama_dir), str(out), "--no-double-quant", "--blocksize", "64"]
    )
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["bnb_4bit_use_double_quant"] is False
    assert main(["quantize", str(tiny_llama_dir), str(out)]) == 2  # exists: one-line error


@pytest.mark.slow
def test_smollm2_checkpoint_equals_transformers_key_by_key(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    ours = quantize_checkpoint(smollm2_dir, tmp_path / "ladle", double_quant=True)
    oracle = transformers_oracle(smollm2_dir, tmp_path / "bnb", double_quant=True)
    assert_same_checkpoint(ours, oracle)
