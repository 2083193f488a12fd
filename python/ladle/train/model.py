"""Loading the base model for training: device, dtype, attention kernel, 4-bit NF4.

Packed rows carry several documents in one sequence; transformers keeps them apart
(block-diagonal causal mask) only when it sees per-document ``position_ids``, no 2-D
attention mask and no KV cache. Ladle therefore (1) allows packing only with attention
kernels known to honour that, (2) turns the cache off, and (3) probes the loaded model
once before training: the logits of a document inside a packed row must equal those of
the document alone. A model whose attention leaks fails here, not silently in the loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ladle import models
from ladle.device import has_bf16
from ladle.errors import TrainError
from ladle.models import load_causal_lm
from ladle.recipe.schema import PREFERENCE_METHODS, Recipe, template_kind

# Kernels that isolate packed documents given position_ids (flash-attention through
# cu_seqlens, sdpa/eager through transformers' packed-sequence mask).
PACKING_SAFE = {"sdpa", "eager", "flash_attention_2"}
# Kernels that run packed documents as variable-length sequences, and only in one
# flattened row (transformers' ``_is_packed_sequence`` wants batch size 1): packed rows are
# concatenated for them. sdpa/eager build a block-diagonal mask per row instead, which
# costs the row's length squared, so for them rows are stacked ``[B, L]`` (sft.PackedSFT).
VARLEN_ATTENTION = {"flash_attention_2"}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` (None: plain fp32).

    Weights stay fp32 (master copy) and matmuls run in bf16: on an AVX-512-bf16 CPU this
    was the fastest mode measured, and it needs no loss scaling.
    """
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise TrainError("train.precision: fp16 needs a GPU; on CPU use bf16 or fp32")
        return torch.float16
    native = has_bf16(device)
    if precision == "bf16" and not native:
        raise TrainError(f"train.precision: bf16 is not supported on this {device.type}")
    return torch.bfloat16 if native else None


def weight_dtype(recipe: Recipe, device: torch.device) -> torch.dtype:
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if recipe.model.dtype != "auto":
        return names[recipe.model.dtype]
    if device.type == "cuda" and recipe.train.adapter != "full" and has_bf16(device):
        return torch.bfloat16  # frozen base in bf16; LoRA weights are kept fp32 by peft
    return torch.float32


def check_packing_attention(attn: str, device: torch.device) -> None:
    """Refuse an attention kernel that would let packed documents see each other."""
    if attn not in PACKING_SAFE:
        raise TrainError(
            f"attention {attn!r} may leak between packed documents; use one of "
            f"{sorted(PACKING_SAFE)} or set data.packing: none"
        )
    if attn == "flash_attention_2" and device.type != "cuda":
        raise TrainError("flash_attention_2 needs a GPU; use sdpa on CPU")


def _prequantized(model_dir: Path, compute: torch.dtype, trust_remote_code: bool) -> Path:
    """Ladle's pre-quantized NF4 copy of ``model_dir`` (``ladle.quant``, made once, cached):
    loading it skips the on-the-fly quantization of every run."""
    from ladle.quant import QuantSettings, prequantized

    name = {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(compute, "float32")
    settings = QuantSettings(double_quant=True, compute_dtype=name)
    return Path(prequantized(model_dir, settings, trust_remote_code=trust_remote_code))


def bnb_config(compute: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=torch.uint8,
    )


def load_base(recipe: Recipe, model_dir: Path, device: torch.device) -> Any:
    """The base model, ready for an adapter: cache off, attention as the recipe says."""
    attn = recipe.model.attn_implementation
    # Preference methods flatten their sequences into one row, like packing.
    flattened = recipe.data.packing != "none" or recipe.train.method in PREFERENCE_METHODS
    if flattened:
        check_packing_attention(attn, device)
    kwargs: dict[str, Any] = {
        "dtype": weight_dtype(recipe, device),
        "attn_implementation": attn,
    }
    source = model_dir
    if recipe.train.adapter == "qlora":
        compute = autocast_dtype(recipe.train.precision, device) or torch.float32
        if recipe.model.quantize == "nf4":
            # config.json has quantization_config
            source = _prequantized(model_dir, compute, recipe.model.trust_remote_code)
        else:
            kwargs["quantization_config"] = bnb_config(compute)
        kwargs["device_map"] = {"": device}
    model = load_causal_lm(source, trust_remote_code=recipe.model.trust_remote_code, **kwargs)
    # Where the weights really came from (the NF4 cache folder for pre-quantized QLoRA),
    # for the run manifest.
    model.ladle_weights_dir = Path(source)
    if "device_map" not in kwargs:
        model.to(device)
    model.config.use_cache = False
    actual = getattr(model.config, "_attn_implementation", attn)
    if actual != attn and flattened:
        check_packing_attention(actual, device)
    return model


def load_tokenizer(model_dir: Path, recipe: Recipe) -> Any:
    """The base tokenizer with the chat template the data was rendered with."""
    tok = models.load_tokenizer(model_dir, trust_remote_code=recipe.model.trust_remote_code)
    template = resolve_template(recipe.data.template)
    if template is not None:
        tok.chat_template = template
    return tok


def resolve_template(spec: str | None) -> str | None:
    """Jinja text of ``data.template`` (None: keep the model's own)."""
    if spec is None:
        return None
    kind = template_kind(spec)
    if kind == "inline":
        return spec
    path = Path(spec)
    if kind == "path" and path.is_file():
        return path.read_text(encoding="utf-8")
    from ladle.data.chat import BUILTIN_TEMPLATES

    if spec in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[spec]
    raise TrainError(f"data.template {spec!r} is neither a builtin, a .jinja file nor Jinja text")


# ------------------------------------------------------------------ isolation probe


@contextlib.contextmanager
def inference_mode(model: Any) -> Iterator[None]:
    """``model.eval()`` + ``no_grad`` for a probe or evaluation inside a training run.

    bitsandbytes (0.50) repacks a 4-bit weight into a CPU-inference layout the first time
    a Linear4bit runs in eval mode without grad, in place, and that layout has no
    backward: training afterwards would backprop through it silently wrong. The 4-bit
    layers therefore stay in training mode (they have no dropout; nothing else differs).
    """
    was = model.training
    model.eval()
    for m in model.modules():
        if type(m).__module__.startswith("bitsandbytes") and hasattr(m.weight, "quant_state"):
            m.training = True  # not peft's LoRA wrapper of the same name: its dropout must stop
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def packing_leak(model: Any, device: torch.device, vocab: int | None = None) -> tuple[float, float]:
    """Max |logit difference| of a document inside a packed row vs. alone, and the same
    difference when the row is attended as one sequence (what a leak would look like)."""
    vocab = vocab or int(model.config.vocab_size)
    g = torch.Generator().manual_seed(1234)
    a = torch.randint(3, min(vocab, 30000), (24,), generator=g)
    b = torch.randint(3, min(vocab, 30000), (16,), generator=g)
    ids = torch.cat([a, b])[None].to(device)
    pos = torch.cat([torch.arange(24), torch.arange(16)])[None].to(device)
    with inference_mode(model):
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, 24:]
        # Rows stacked [B, L] (how sdpa/eager train): each row keeps its documents apart.
        two = model(input_ids=ids.repeat(2, 1), position_ids=pos.repeat(2, 1), use_cache=False)
        stacked = two.logits[1, 24:]
        alone = model(input_ids=b[None].to(device), use_cache=False).logits[0]
        # An all-ones 2-D mask switches the packed-sequence detection off: the leak case.
        ones = torch.ones_like(ids)
        out = model(input_ids=ids, position_ids=pos, attention_mask=ones, use_cache=False)
        leaky = out.logits[0, 24:]
    iso = max((x.float() - alone.float()).abs().max().item() for x in (packed, stacked))
    leak = (leaky.float() - alone.float()).abs().max().item()
    return iso, leak


def use_packed_attention(model: Any, device: torch.device) -> bool:
    """Switch a packed-training model from sdpa's block-diagonal mask to Ladle's
    per-document kernel (``train/attention.py``); True when switched.

    CPU only: measured there (the fused causal kernel applies and the masked pairs are never
    scored); on a GPU the per-document launches are untested, so sdpa stays. The switch is
    for the training forward alone: Ladle never generates with this model object, and the
    kernel hands any call with a KV cache or a 2-D mask back to sdpa.
    """
    from ladle.train import attention

    if device.type != "cpu" or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    if not attention.supports(model.config):
        return False

    model.set_attn_implementation(attention.register())
    return True


def verify_packing_isolation(model: Any, device: torch.device) -> float:
    """Raise TrainError when the loaded model lets packed documents attend to each other."""
    iso, leak = packing_leak(model, device)
    if iso > max(1e-3, 0.05 * leak):
        raise TrainError(
            f"packed documents are not isolated with attention "
            f"{getattr(model.config, '_attn_implementation', '?')!r} (logit difference {iso:.3g}, "
            f"a full leak gives {leak:.3g}); set data.packing: none or use sdpa/eager"
        )
    return iso
