"""NF4 pre-quantization: bitsandbytes-exact 4-bit weights, computed in Rust.

QLoRA normally re-quantizes a 16-bit checkpoint on every load, holding the whole model in
memory while it does. Ladle quantizes once, streaming tensor by tensor from memory-mapped
safetensors, and writes a checkpoint that ``AutoModelForCausalLM.from_pretrained`` loads as
a bitsandbytes 4-bit model without quantizing again.

Bit-exactness is the contract: the packed weights, absmax and double-quantized statistics
equal what ``bitsandbytes.functional.quantize_4bit`` (0.50.x, CPU path) produces, and the
checkpoint holds the same keys, dtypes, shapes, quant_state JSON and ``quantization_config``
that transformers writes when it saves a model it quantized itself.

- :func:`quantize_nf4`: drop-in for ``bitsandbytes.functional.quantize_4bit`` on one tensor.
- :func:`quantize_checkpoint`: a whole Hugging Face folder (what ``ladle quantize`` runs).
- :func:`prequantized`: the cached variant recipes use (``model.quantize: nf4``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ladle import _core
from ladle.errors import ModelError, QuantError
from ladle.models import load_config
from ladle.paths import atomic_dir, atomic_write_text, check_output_dir, ladle_home

if TYPE_CHECKING:
    import torch
    from bitsandbytes.functional import QuantState

QuantType = Literal["nf4", "fp4"]
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_DTYPES = ("float32", "bfloat16", "float16")
# Files besides the weights that make a model folder usable: tokenizer, chat template,
# generation defaults. Copied verbatim.
_SIDE_FILE_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")
_NOT_COPIED = {"config.json", "model.safetensors.index.json"}
MARKER = "ladle_quantized.json"
"""Written into every folder this module makes (provenance); ``overwrite`` replaces only
a folder that holds it."""


@dataclass(frozen=True)
class QuantSettings:
    """Everything that changes the bytes of a quantized checkpoint (and so its cache key)."""

    double_quant: bool = True
    compute_dtype: str = "bfloat16"
    blocksize: int = 64
    quant_type: QuantType = "nf4"
    skip: tuple[str, ...] | None = None
    dtype: str | None = None  # cast weights to this model dtype first; None: as stored

    def check(self) -> None:
        if self.blocksize not in BLOCKSIZES:
            raise QuantError(f"blocksize {self.blocksize} is not one of {list(BLOCKSIZES)}")
        if self.quant_type not in ("nf4", "fp4"):
            raise QuantError(f"quant_type {self.quant_type!r}: expected 'nf4' or 'fp4'")
        if self.compute_dtype not in _DTYPES:
            raise QuantError(f"compute_dtype {self.compute_dtype!r}: expected one of {_DTYPES}")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise QuantError(f"dtype {self.dtype!r}: expected one of {_DTYPES}")


# ----------------------------------------------------------------------------- tensors


@functools.cache
def _torch_sum_lanes() -> int:
    """The float vector width torch's CPU ``sum`` runs with here.

    Double quantization subtracts ``absmax.mean()`` before coding, so the offset must
    match torch's to the last bit; torch sums in a vectorised cascade whose rounding
    depends on the kernel's lane count (8 on AVX2 builds, 16 on AVX-512, 4 on NEON).
    Probing beats guessing from the CPU flags, which do not say which kernel torch picked.
    """
    import numpy as np
    import torch

    rng = np.random.default_rng(1234)
    probes = [rng.random(n).astype(np.float32) * 3 + 0.01 for n in (97, 1000, 4099)]
    with _torch_threads(1):
        sums = [torch.from_numpy(p).sum().item() for p in probes]
    for lanes in (8, 16, 4, 32, 1):
        if all(
            _core.nf4_torch_sum(p, lanes, 1) == np.float32(s)
            for p, s in zip(probes, sums, strict=True)
        ):
            return lanes
    return 8


@contextlib.contextmanager
def _torch_threads(n: int) -> Any:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _reduction_params() -> tuple[int, int]:
    import torch

    return _torch_sum_lanes(), torch.get_num_threads()


def quantize_nf4(
    tensor: torch.Tensor,
    blocksize: int = 64,
    double_quant: bool = False,
    quant_type: QuantType = "nf4",
) -> tuple[torch.Tensor, QuantState]:
    """Quantize ``tensor`` like ``bitsandbytes.functional.quantize_4bit``.

    Same as ``quantize_4bit(tensor, blocksize=blocksize, quant_type="nf4",
    compress_statistics=double_quant)`` on CPU: a packed ``uint8`` tensor of shape
    ``((n + 1) // 2, 1)`` and a bitsandbytes ``QuantState`` with the same fields. All-zero
    blocks follow the CPU path (code 7, absmax 0). A CUDA tensor is quantized on CPU and
    the results are moved back to its device.
    """
    import torch
    from bitsandbytes.functional import QuantState, get_4bit_type

    if blocksize not in BLOCKSIZES:
        raise QuantError(f"invalid blocksize {blocksize}: expected one of {list(BLOCKSIZES)}")
    if tensor.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise QuantError(
            f"unsupported dtype {tensor.dtype}: NF4 quantizes float32, bfloat16 or float16"
        )
    device = tensor.device
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy()
    dtype_name = str(tensor.dtype).removeprefix("torch.")
    lanes, threads = _reduction_params()
    packed, absmax, nested = _core.nf4_quantize(
        raw, dtype_name, blocksize, quant_type, double_quant, lanes, threads
    )
    out = torch.from_numpy(packed).unsqueeze(1).to(device)
    code = get_4bit_type(quant_type, device=device)
    if nested is None:
        state = QuantState(
            absmax=torch.from_numpy(absmax).to(device),
            shape=tensor.shape,
            dtype=tensor.dtype,
            blocksize=blocksize,
            code=code,
            quant_type=quant_type,
        )
        return out, state
    codes, absmax2, offset = nested
    dynamic = torch.tensor(_core.nf4_tables()["dynamic"], dtype=torch.float32)
    state2 = QuantState(
        absmax=torch.from_numpy(absmax2).to(device),
        code=dynamic.to(device),
        blocksize=256,
        dtype=torch.float32,
    )
    state = QuantState(
        absmax=torch.from_numpy(codes).to(device),
        shape=tensor.shape,
        dtype=tensor.dtype,
        blocksize=blocksize,
        code=code,
        quant_type=quant_type,
        offset=torch.tensor(offset, dtype=torch.float32, device=device),
        state2=state2,
    )
    return out, state


# ----------------------------------------------------------------------------- checkpoints


def source_shards(src: Path) -> list[Path]:
    """The safetensors shards of a model folder, in index order; refuses pickles."""
    src = Path(src)
    if not src.is_dir():
        raise QuantError(f"{src} is not a folder")
    if not (src / "config.json").is_file():
        raise QuantError(f"{src} has no config.json: not a Hugging Face model folder")
    index = src / "model.safetensors.index.json"
    if index.is_file():
        names = _index_shards(index)
        missing = [n for n in names if not (src / n).is_file()]
        if missing:
            raise QuantError(f"{index} names shards that are missing: {', '.join(missing)}")
        return [src / n for n in names]
    shards = sorted(src.glob("*.safetensors"))
    if shards:
        return shards
    pickles = sorted(p.name for ext in ("*.bin", "*.pt", "*.pth") for p in src.glob(ext))
    if pickles:
        raise QuantError(
            f"{src} holds only pickle weights ({', '.join(pickles)}); Ladle reads safetensors "
            "only and does not unpickle (it can run arbitrary code). Convert once with "
            "`model.save_pretrained(out, safe_serialization=True)` in a trusted environment."
        )
    raise QuantError(f"{src} has no *.safetensors weights")


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise QuantError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict):
        raise QuantError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _index_shards(index: Path) -> list[str]:
    """Shard file names an index names; each must be a plain file name in the folder."""
    weight_map = _read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise QuantError(f"{index}: `weight_map` must map tensor names to shard file names")
    names = sorted(set(weight_map.values()))
    for n in names:
        if Path(n).name != n or n in ("", ".", ".."):
            raise QuantError(f"{index}: shard {n!r} is not a file name in {index.parent}")
    return names


def read_config(src: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, checked to be a JSON object."""
    config = _read_json_object(src / "config.json")
    qc = config.get("quantization_config")
    if qc is not None and not isinstance(qc, dict):
        raise QuantError(f"{src / 'config.json'}: quantization_config must be an object")
    return config


def linear_plan(
    src: Path, skip: Sequence[str] | None, *, trust_remote_code: bool = False
) -> tuple[list[str], list[str]]:
    """Weights transformers would quantize when loading ``src`` in 4-bit, and which of
    them are GPT-2 ``Conv1D`` (stored transposed).

    Built from the model skeleton on the meta device with transformers' own rules
    (``get_modules_to_not_convert``: output embeddings, tied and last parameters,
    ``_keep_in_fp32_modules``, or the user's skip list), so the checkpoint agrees with
    what the loader will expect.
    """
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    try:
        config = load_config(src, trust_remote_code=trust_remote_code)
    except ModelError as e:
        raise QuantError(str(e)) from e
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        except (ValueError, TypeError, KeyError, AttributeError, ImportError) as e:
            # A config with wrong types or missing fields fails inside the model's __init__.
            brief = " ".join(str(e).split())[:300]
            raise QuantError(f"{src}: transformers cannot build this model ({brief})") from e
    not_convert = HfQuantizer.get_modules_to_not_convert(
        model, list(skip) if skip is not None else None, model._keep_in_fp32_modules
    )
    weights, transposed = [], []
    for name, module in model.named_modules():
        if not name or not should_convert_module(name, not_convert):
            continue
        if type(module) is nn.Linear or isinstance(module, Conv1D):
            weights.append(f"{name}.weight")
            if isinstance(module, Conv1D):
                transposed.append(f"{name}.weight")
    return weights, transposed


def quantization_config(settings: QuantSettings) -> dict[str, Any]:
    """``BitsAndBytesConfig(...).to_dict()``, the block transformers writes to config.json."""
    from transformers import BitsAndBytesConfig

    cfg = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings.quant_type,
        bnb_4bit_use_double_quant=settings.double_quant,
        bnb_4bit_compute_dtype=settings.compute_dtype,
        llm_int8_skip_modules=list(settings.skip) if settings.skip is not None else None,
    )
    return cfg.to_dict()


def quantize_checkpoint(
    src: str | Path,
    out: str | Path,
    double_quant: bool = True,
    compute_dtype: str = "bfloat16",
    blocksize: int = 64,
    skip: Sequence[str] | None = None,
    *,
    quant_type: QuantType = "nf4",
    dtype: str | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Quantize the Hugging Face folder ``src`` into ``out`` (what ``ladle quantize`` does).

    Linear weights become bitsandbytes 4-bit tensors; embeddings, norms, biases, the output
    head, tied weights and ``skip`` modules are copied in the model dtype. The config gains
    the ``quantization_config`` transformers writes, so ``from_pretrained(out)`` loads a
    4-bit model directly. The folder appears atomically; ``progress(done, total)`` gets
    source bytes processed. ``overwrite`` replaces only a folder that this function wrote
    (it holds ``ladle_quantized.json``), never another folder.
    """
    settings = QuantSettings(
        double_quant=double_quant,
        compute_dtype=compute_dtype,
        blocksize=blocksize,
        quant_type=quant_type,
        skip=tuple(skip) if skip is not None else None,
        dtype=dtype,
    )
    return _quantize(
        Path(src),
        Path(out),
        settings,
        overwrite=overwrite,
        trust_remote_code=trust_remote_code,
        progress=progress,
    )


def _quantize(
    src: Path,
    out: Path,
    settings: QuantSettings,
    *,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    progress: Callable[[int, int], None] | None = None,
    record: dict[str, Any] | None = None,
) -> Path:
    settings.check()
    replace = check_output_dir(
        out, MARKER, overwrite=overwrite, command="ladle quantize", error=QuantError
    )
    shards = source_shards(src)
    config = read_config(src)
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "?")
        raise QuantError(f"{src} is already quantized ({method}); quantize the original weights")
    weights, transposed = linear_plan(src, settings.skip, trust_remote_code=trust_remote_code)
    lanes, threads = _reduction_params()
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    try:
        with atomic_dir(out, replace=replace) as tmp:
            reports = _core.nf4_convert_checkpoint(
                [(str(s), str(tmp / n)) for s, n in zip(shards, names, strict=True)],
                weights,
                transposed,
                blocksize=settings.blocksize,
                quant_type=settings.quant_type,
                double_quant=settings.double_quant,
                dtype=settings.dtype,
                lanes=lanes,
                threads=threads,
                progress=progress,
            )
            _write_side_files(src, tmp, config, settings, reports, record or {})
    except OSError as e:
        raise QuantError(f"writing {out} failed: {e}") from e
    return out


def _write_side_files(
    src: Path,
    tmp: Path,
    config: dict[str, Any],
    settings: QuantSettings,
    reports: list[tuple[str, list[str], int]],
    record: dict[str, Any],
) -> None:
    config = dict(config)
    config["quantization_config"] = quantization_config(settings)
    if settings.dtype is not None:
        config["dtype"] = settings.dtype
    # transformers writes configs with sorted keys and 2-space indent.
    atomic_write_text(tmp / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    if len(reports) > 1:
        index = {
            "metadata": {"total_size": sum(r[2] for r in reports)},
            "weight_map": {k: Path(r[0]).name for r in reports for k in r[1]},
        }
        atomic_write_text(
            tmp / "model.safetensors.index.json",
            json.dumps(index, indent=2, sort_keys=True) + "\n",
        )
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in _SIDE_FILE_SUFFIXES and f.name not in _NOT_COPIED:
            shutil.copy2(f, tmp / f.name)
    # Provenance for run manifests: what was quantized, how, and by which versions.
    provenance = {"source": str(src), "settings": asdict(settings), **record}
    atomic_write_text(tmp / MARKER, json.dumps(provenance, indent=2) + "\n")


# ----------------------------------------------------------------------------- cache


def prequantized(
    model_dir: str | Path,
    settings: QuantSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    trust_remote_code: bool = False,
) -> Path:
    """A quantized copy of ``model_dir`` in Ladle's cache, made on first use.

    The key is a fingerprint of the source bytes (weights and config) and the settings,
    so editing the checkpoint or changing a setting makes a new entry and a second run
    with the same inputs reuses the first. Recipes with ``model.quantize: nf4`` train from
    this folder.
    """
    import bitsandbytes

    model_dir = Path(model_dir)
    settings = settings or QuantSettings()
    settings.check()
    shards = source_shards(model_dir)
    source_fp = _core.fingerprint_files([str(p) for p in [model_dir / "config.json", *shards]])
    versions = {"ladle": _core.__version__, "bitsandbytes": bitsandbytes.__version__}
    key = json.dumps(
        {"source": source_fp, "settings": asdict(settings), **versions}, sort_keys=True
    )
    fp = _core.fingerprint_bytes(key.encode())
    final = ladle_home() / "quantized" / f"{model_dir.name}-{fp[:16]}"
    if (final / "config.json").is_file():
        return final
    try:
        record = {"source_fingerprint": source_fp, "cache_key": fp, **versions}
        return _quantize(
            model_dir,
            final,
            settings,
            trust_remote_code=trust_remote_code,
            progress=progress,
            record=record,
        )
    except QuantError:
        if (final / "config.json").is_file():  # another process won the race
            return final
        raise


__all__ = [
    "BLOCKSIZES",
    "QuantSettings",
    "linear_plan",
    "prequantized",
    "quantization_config",
    "quantize_checkpoint",
    "quantize_nf4",
    "source_shards",
]
