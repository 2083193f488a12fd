"""What is trained: a LoRA/DoRA adapter (peft), LoRA over a 4-bit base, or every weight.

peft is used the way its users know it (``LoraConfig`` + ``get_peft_model``), so the
saved ``adapter/`` folder loads with ``PeftModel.from_pretrained`` anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ladle.recipe.schema import TrainSection


def attach(model: Any, train: TrainSection) -> Any:
    """Return the model to optimise, with only the trainable weights requiring grad."""
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
    if state_dict is None:
        model.save_pretrained(out, safe_serialization=True)
    else:
        model.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
