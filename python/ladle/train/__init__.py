"""Training from recipes: SFT (packed, padding-free), DPO, ORPO and KTO (preferences) and
GRPO (rewards, through TRL) with LoRA, QLoRA, DoRA or full fine-tuning, with atomic
checkpoints, exact resume and a manifest of what produced the run.

Public API::

    from ladle.train import train, export_run
    result = train(recipe, train_rows, eval_rows=None, output_dir="runs/x", resume=False)
    export_run(result.run_dir, "merged/", merge=True)

Modules: ``rows`` (prepared rows -> deterministic step plan), ``model`` (base loading,
packing isolation), ``adapters`` (peft), ``sft``/``dpo``/``orpo``/``kto`` (objectives;
``preference`` holds what the preference ones share), ``grpo`` (TRL's trainer), ``loss``
(chunked cross-entropy over the vocabulary), ``heldout`` (eval-split rows for the held-out
loss), ``loop``, ``checkpoint``, ``manifest``, ``distributed`` (DDP, FSDP2), ``export``.
"""

from ladle.train.export import export_run
from ladle.train.model import check_packing_attention, verify_packing_isolation
from ladle.train.run import RunResult, default_run_dir, train

__all__ = [
    "RunResult",
    "check_packing_attention",
    "default_run_dir",
    "export_run",
    "train",
    "verify_packing_isolation",
]
