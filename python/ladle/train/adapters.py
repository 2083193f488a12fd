"""What is trained: a LoRA/DoRA adapter (peft), LoRA over a 4-bit base, or every weight.

peft is used the way its users know it (``LoraConfig`` + ``get_peft_model``), so the
saved ``adapter/`` folder loads with ``PeftModel.from_pretrained`` anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ladle.recipe.schema import TrainSection


def attach(
    model: Any, train: TrainSection, start: str | Path | None = None, reference: bool = False
) -> Any:
    """Return the model to optimise, with only the trainable weights requiring grad.

    ``start``: a peft adapter folder to continue (``model.adapter``) instead of a fresh
    one. ``reference``: also load it a second time, frozen, as DPO's reference.
    """
    gc_kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs and no_grad
    if train.adapter == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        if train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        return model

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if train.adapter == "qlora":
        # Casts norms/embeddings to fp32 and freezes the 4-bit weights, as peft documents.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=train.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
    elif train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    if start is not None:
        return _continue(model, Path(start), reference)
    targets = train.lora.target_modules
    config = LoraConfig(
        r=train.lora.r,
        lora_alpha=train.lora.alpha,  # type: ignore[arg-type]  # peft accepts floats
        lora_dropout=train.lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        use_dora=train.adapter == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


REFERENCE = "reference"
"""peft adapter name of the frozen copy of a starting adapter (DPO's reference)."""


def _continue(model: Any, start: Path, reference: bool) -> Any:
    """Continue training a saved adapter (its own r/alpha/targets, as peft saved them).

    For DPO the reference must be the model training started from (base + this adapter),
    not the bare base: a second, frozen copy named ``reference`` is loaded next to the
    trainable ``default`` one (TRL's ``ref_adapter_name``), which costs only the adapter's
    few MB; the saved result stays one ordinary adapter relative to the base.
    """
    from peft import PeftModel

    from ladle.errors import TrainError

    if not (start / "adapter_config.json").is_file():
        raise TrainError(
            f"model.adapter: {start} is not a peft adapter folder (no adapter_config.json); "
            "point it at RUN/adapter of a finished run"
        )
    try:
        peft_model = PeftModel.from_pretrained(model, start, is_trainable=True)
        if reference:
            peft_model.load_adapter(start, adapter_name=REFERENCE, is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise TrainError(f"model.adapter: cannot load {start} onto the base model: {e}") from e
    peft_model.set_adapter("default")
    return peft_model


@contextlib.contextmanager
def reference_model(model: Any) -> Iterator[None]:
    """The DPO reference: the frozen starting adapter when there is one, else the base
    with the adapter switched off (no second model copy either way)."""
    if REFERENCE not in getattr(model, "peft_config", {}):
        with model.disable_adapter():
            yield
        return
    # set_adapter also moves requires_grad to the active adapter; switching back restores it.
    model.set_adapter(REFERENCE)
    try:
        yield
    finally:
        model.set_adapter("default")


def trainable_parameters(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def param_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.dtype == torch.uint8 and hasattr(p, "quant_state"):
            n *= 2  # two NF4 codes per byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def optimizer_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups without decay on biases and norms (1-D tensors), as transformers does."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _, p in trainable_parameters(model):
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def save_trained(
    model: Any,
    out: Path,
    adapter: str,
    tokenizer: Any,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``adapter/`` (peft format) or ``model/`` (full weights) plus the tokenizer and
    chat template, so the folder is usable on its own. ``state_dict``: the trained weights
    gathered from sharded (FSDP) parameters."""
    kwargs: dict[str, Any] = {"safe_serialization": True}
    if state_dict is not None:
        kwargs["state_dict"] = state_dict
    if REFERENCE in getattr(model, "peft_config", {}):
        # Only the trained adapter: the frozen reference copy is the starting adapter.
        kwargs["selected_adapters"] = ["default"]
    model.save_pretrained(out, **kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
