"""GRPO: reinforcement from the recipe's own metrics, through TRL's ``GRPOTrainer``.

The prompts are the train split's conversations up to their last assistant turn (the
reference answer, handed to the rewards), deduplicated and decontaminated against the
eval prompts with the recipe's own rule. Each reward is an evaluation metric
(``train.grpo.rewards``: same names and parameters as ``evaluate.metrics``) scored by
``ladle.evaluate.metrics.score_metric`` itself, so "better" means the same thing during
training and at the gate. TRL sums the weighted components and normalises per group.

Why TRL here, when SFT and DPO run Ladle's own loop: GRPO's cost is generation, which
TRL already batches (and hands to vLLM on a GPU: ``use_vllm``), and its loss variants
(GRPO, Dr. GRPO, DAPO normalisation, clipping, KL to a frozen copy of a starting adapter)
are maintained upstream. Ladle keeps what makes a run a Ladle run: the model and adapter
loading (``model``, ``adapters``), the run folder, ``metrics.jsonl``, trackers, the loss
PNG and the manifest, so ``ladle eval`` and ``ladle run`` treat a GRPO run like any other.
Not supported yet: ``--resume`` and several processes (TRL's own paths are untested here).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ladle.errors import EvalError, TrainError
from ladle.evaluate.metrics import score_metric
from ladle.models import TOKENIZER_FILES, resolve_model
from ladle.paths import atomic_dir, atomic_write_text
from ladle.recipe.schema import Recipe, RewardSpec
from ladle.train import adapters, manifest
from ladle.train import model as model_mod
from ladle.train.loop import StepHook, StepInfo

if TYPE_CHECKING:  # run.py imports this module lazily (its dispatch), never the reverse
    from ladle.train.run import RunContext, RunResult

COMPLETIONS_FILE = "completions.jsonl"

# TRL's metric names -> metrics.jsonl's (flat, no slashes); the rest keep TRL's name with
# `/` as `_`. Reward components become reward_KEY_mean / reward_KEY_std.
RENAME = {
    "learning_rate": "lr",
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "truncated_fraction",
    "clip_ratio/region_mean": "clip_fraction",
    "reward": "reward_mean",
}
DROP = {"epoch", "num_tokens"}


# ----------------------------------------------------------------------------- rewards


def completion_text(completion: Any) -> str:
    """The text of one completion: TRL passes ``[{"role": "assistant", "content": ...}]``
    for conversational prompts and a string otherwise."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


def reward_values(
    spec: RewardSpec, preds: Sequence[str], refs: Sequence[str], allow_code: bool
) -> list[float]:
    """Unweighted per-completion values of one reward: the evaluation metric's own
    per-example scores (json_field_accuracy: the mean over its fields). NaN (nothing to
    score, e.g. a field the reference lacks) stays NaN: TRL leaves it out of the sum."""
    return [float(v) for v in score_metric(spec, preds, refs, allow_code=allow_code)[0].values]


def total_reward(
    specs: Sequence[RewardSpec], preds: Sequence[str], refs: Sequence[str], allow_code: bool
) -> np.ndarray:
    """The weighted sum TRL trains on for these completions."""
    columns = {s.key: reward_values(s, preds, refs, allow_code) for s in specs}
    return weighted_sum(specs, columns, len(preds))


def weighted_sum(
    specs: Sequence[RewardSpec], columns: Mapping[str, Sequence[float]], n: int
) -> np.ndarray:
    """TRL's total reward: ``nansum`` over components of weight x value (a NaN component,
    or a missing one, adds nothing)."""
    cols = np.array([columns.get(s.key, [math.nan] * n) for s in specs], dtype=np.float64)
    weights = np.array([s.weight for s in specs], dtype=np.float64)[:, None]
    return np.nansum(cols.reshape(len(specs), n) * weights, axis=0)


class Recorder:
    """Keeps the latest batch's prompts, completions and reward columns, so that every
    ``log_completions_every`` steps a sample can be written with its rewards."""

    def __init__(self) -> None:
        self.batch: dict[str, Any] | None = None

    def record(self, key: str, prompts: Any, completions: Any, refs: Any, values: Any) -> None:
        if self.batch is None or self.batch["completions"] is not completions:
            self.batch = {"prompts": prompts, "completions": completions, "refs": refs, "r": {}}
        self.batch["r"][key] = values


def reward_functions(
    specs: Sequence[RewardSpec], allow_code: bool, recorder: Recorder
) -> list[Callable[..., list[float | None]]]:
    """One TRL reward function per spec, named by its metric key (TRL logs per name)."""

    def make(spec: RewardSpec) -> Callable[..., list[float | None]]:
        def fn(
            prompts: Any, completions: Any, reference: Sequence[str], **_: Any
        ) -> list[float | None]:
            preds = [completion_text(c) for c in completions]
            try:
                values = reward_values(spec, preds, list(reference), allow_code)
            except EvalError as e:
                raise TrainError(f"train.grpo.rewards {spec.key!r}: {e}") from e
            recorder.record(spec.key, prompts, completions, reference, values)
            return list[float | None](values)

        fn.__name__ = spec.key
        return fn

    return [make(s) for s in specs]


# ----------------------------------------------------------------------------- prompts


def prompt_rows(recipe: Recipe, prepared: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """GRPO's dataset rows ``{"prompt": messages, "reference": text}`` and what was skipped.

    The train conversations come through the data engine's loader, deduplicated and
    decontaminated against the eval prompts (the few-shot pool's rule, which is prep's);
    the eval prompts are the prepared eval split when ``prepared`` is a ``ladle prep``
    result (that covers ``data.eval_fraction``), else the recipe's eval datasets. Each
    prompt carries the candidate's system prompt when the recipe gives one, so the model
    is trained under the prompt it is evaluated with.
    """
    from ladle.evaluate.prompts import build_prompt, few_shot_pool, read_split, split_row
    from ladle.train.heldout import prepared_source

    source = prepared_source(prepared)
    if source is not None:
        from ladle.data import load_prepared

        eval_rows = [r for r in load_prepared(source)[1] if r.get("messages")]
    else:
        eval_rows = read_split(recipe, "eval")
    pool, info = few_shot_pool(recipe, eval_rows)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    dropped_fields = 0  # rows whose tools/documents the prompt does not carry (not yet)
    for r in pool:
        try:
            ex = split_row(r, str(r.get("id") or "row"))
        except EvalError as e:
            skipped.append(str(e))
            continue
        dropped_fields += bool(ex.extra)
        # Under the candidate's system prompt (else the row's own): trained as evaluated.
        prompt = build_prompt(ex, recipe.evaluate.candidate, [])
        rows.append({"prompt": prompt, "reference": ex.reference})
    if not rows:
        raise TrainError(
            "train.method: grpo found no train prompts with a reference answer "
            f"(conversations ending in an assistant turn); skipped: {skipped[:3]}"
        )
    info = {
        **info,
        "prompts": len(rows),
        "skipped": len(skipped),
        "first_skips": skipped[:5],
        "tools_or_documents_not_rendered": dropped_fields,
    }
    return rows, info


def fingerprint(rows: Sequence[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True).encode())
    return h.hexdigest()[:32]


# ----------------------------------------------------------------------------- logging


def metrics_row(step: int, logs: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl row from one TRL log dict."""
    row: dict[str, Any] = {"step": step}
    for k, v in logs.items():
        if k in DROP or not isinstance(v, (int, float)) or k.startswith("train_"):
            continue
        if k.startswith("rewards/"):
            _, key, stat = k.split("/", 2)
            name = f"reward_{key}_{stat}"
        else:
            name = RENAME.get(k, k.replace("/", "_"))
        row[name] = None if isinstance(v, float) and math.isnan(v) else v
    return row


def make_callback(
    metrics: manifest.MetricsLog,
    trackers: manifest.Trackers | None,
    recorder: Recorder,
    specs: Sequence[RewardSpec],
    every: int,
    run_dir: Path,
    on_step: StepHook | None = None,
) -> Any:
    from transformers import TrainerCallback

    class LadleLog(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs or "train_runtime" in logs:
                return  # the end-of-training summary is in the manifest
            row = metrics_row(int(state.global_step), logs)
            metrics.write(row)
            if trackers is not None:
                trackers.log({k: v for k, v in row.items() if v is not None})
            if on_step is not None:  # GRPO: after each *logged* step (train.log_every)
                on_step(StepInfo(row["step"], float(row.get("loss") or 0.0), 0, ()))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step = int(state.global_step)
            if every and recorder.batch is not None and (step % every == 0 or step == 1):
                write_completions(run_dir / COMPLETIONS_FILE, step, recorder.batch, specs)

    return LadleLog()


def write_completions(
    path: Path, step: int, batch: dict[str, Any], specs: Sequence[RewardSpec]
) -> None:
    """Append one line per completion of the batch: prompt, completion, reference, each
    reward component and the weighted total."""
    comps = [completion_text(c) for c in batch["completions"]]
    totals = weighted_sum(specs, batch["r"], len(comps))
    with path.open("a", encoding="utf-8") as f:
        for i, text in enumerate(comps):
            parts = {s.key: batch["r"].get(s.key, [math.nan] * len(comps))[i] for s in specs}
            rec = {
                "step": step,
                "prompt": batch["prompts"][i],
                "completion": text,
                "reference": batch["refs"][i],
                "rewards": {k: (None if math.isnan(v) else v) for k, v in parts.items()},
                "reward": float(totals[i]),
            }
            f.write(json.dumps(rec) + "\n")


# ----------------------------------------------------------------------------- training


def grpo_config(recipe: Recipe, out: Path, device: Any, progress: bool) -> Any:
    from trl import GRPOConfig

    t, g = recipe.train, recipe.train.grpo
    autocast = model_mod.autocast_dtype(t.precision, device)
    import torch

    return GRPOConfig(
        output_dir=str(out),
        seed=recipe.seed,
        learning_rate=t.lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps or t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=g.prompts_per_step * g.num_generations,
        gradient_accumulation_steps=t.grad_accum,
        gradient_checkpointing=t.gradient_checkpointing,
        bf16=autocast == torch.bfloat16,
        fp16=autocast == torch.float16,
        use_cpu=device.type == "cpu",
        logging_steps=t.log_every,
        save_strategy="no",  # the adapter is written by Ladle, atomically, at the end
        report_to="none",  # metrics.jsonl and the trackers are fed by the callback
        disable_tqdm=not progress,
        remove_unused_columns=False,  # `reference` must reach the rewards
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_tokens,
        temperature=g.temperature,
        beta=g.kl_coef,
        epsilon=g.clip_range,
        loss_type=g.loss,
        scale_rewards=g.scale_rewards,
        reward_weights=[r.weight for r in g.rewards],
        # Generation with the KV cache, whatever the training config says.
        generation_kwargs={"use_cache": True},
        log_completions=False,
        dataloader_num_workers=0,
    )


def train_grpo(ctx: RunContext, train_rows: Any) -> RunResult:
    """GRPO per ``ctx.recipe``; returns a ``RunResult`` like SFT/DPO (see ``run.train``)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from ladle.train.run import RunResult, _snapshot, quantization_record, seed_everything

    recipe, run_dir, device, d = ctx.recipe, ctx.run_dir, ctx.device, ctx.dist
    t, g = recipe.train, recipe.train.grpo
    if ctx.resume:
        raise TrainError("--resume is not supported for train.method: grpo yet; start a new run")
    if d.world > 1:
        raise TrainError("train.method: grpo runs in one process here (no torchrun/accelerate)")

    rows, prompt_info = prompt_rows(recipe, train_rows)
    data_fp = fingerprint(rows)
    state = {"recipe": _snapshot(recipe), "data_fingerprint": data_fp, "world_size": d.world}
    atomic_write_text(run_dir / "run.json", json.dumps(state, indent=1))

    seed_everything(recipe.seed)
    model_dir = resolve_model(recipe.model.base)
    tokenizer = model_mod.load_tokenizer(model_dir, recipe)
    tokenizer.padding_side = "left"  # generation appends on the right
    base = model_mod.load_base(recipe, model_dir, device)
    core = adapters.attach(base, t, recipe.model.adapter)

    recorder = Recorder()
    metrics = manifest.MetricsLog(run_dir / "metrics.jsonl", None)
    trackers = manifest.Trackers(t.report_to, run_dir, run_dir.name, recipe.model_dump(mode="json"))
    callback = make_callback(
        metrics, trackers, recorder, g.rewards, g.log_completions_every, run_dir, ctx.on_step
    )
    trl_dir = run_dir / "trl"  # TRL's scratch output_dir (nothing is saved there)
    trainer = GRPOTrainer(
        model=core,
        reward_funcs=list[Any](reward_functions(g.rewards, recipe.evaluate.allow_code, recorder)),
        args=grpo_config(recipe, trl_dir, device, ctx.progress),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # Ladle's log is metrics.jsonl, not stdout dicts
    t0 = time.perf_counter()
    try:
        # max_steps 0 means "no training" in Ladle; transformers would read it as "use epochs".
        out_state = trainer.train() if t.max_steps != 0 else None
    finally:
        metrics.close()
        trackers.close()
    train_s = time.perf_counter() - t0
    trained: Any = trainer.model
    if "ref" in getattr(trained, "peft_config", {}):
        trained.delete_adapter("ref")  # TRL's frozen KL reference: the starting adapter
    out = run_dir / ("model" if t.adapter == "full" else "adapter")
    with atomic_dir(out, replace=True) as tmp:
        adapters.save_trained(trained, tmp, t.adapter, tokenizer)
    if trl_dir.is_dir() and not any(trl_dir.iterdir()):
        trl_dir.rmdir()
    manifest.plot_loss(metrics.rows, run_dir / "loss_curve.png", run_dir.name)

    steps = int(trainer.state.global_step)
    losses = [float(r["loss"]) for r in metrics.rows if r.get("loss") is not None]
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    tokens_per_s = round(tokens / train_s, 1) if train_s > 0 else 0.0
    info: dict[str, Any] = {
        "ladle_run": 1,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": recipe.model_dump(mode="json"),
        "model": {
            "path": str(model_dir),
            "fingerprint": manifest.fingerprint_globs(model_dir, manifest.WEIGHT_FILES),
            "tokenizer_fingerprint": manifest.fingerprint_globs(model_dir, TOKENIZER_FILES),
            "trainable_params": adapters.param_counts(trained)[0],
            "total_params": adapters.param_counts(trained)[1],
            "quantization": quantization_record(recipe, getattr(base, "ladle_weights_dir", None)),
            "start_adapter": recipe.model.adapter,
        },
        "data": {"fingerprint": data_fp, **prompt_info},
        "training": {
            "method": "grpo",
            "steps": steps,
            "steps_done": steps,
            "final_loss": losses[-1] if losses else None,
            "final_reward": next(
                (r["reward_mean"] for r in reversed(metrics.rows) if "reward_mean" in r), None
            ),
            "eval": {},
            "tokens": tokens,
            "world_size": d.world,
            "trl_train_loss": getattr(out_state, "training_loss", None),
        },
        "throughput": {
            "tokens_per_s": tokens_per_s,
            "train_s": round(train_s, 3),
            "wall_s": round(time.perf_counter() - ctx.wall0, 3),
            **manifest.peak_memory(device),
        },
        "versions": manifest.package_versions(),
        "git": manifest.git_commit(Path.cwd()),
        "hardware": manifest.hardware(device),
        "warnings": trackers.warnings,
    }
    manifest.write_manifest(run_dir, info)
    return RunResult(
        run_dir=run_dir,
        output=out,
        steps=steps,
        final_loss=losses[-1] if losses else None,
        losses=losses,
        eval={},
        tokens=tokens,
        tokens_per_s=tokens_per_s,
        wall_s=time.perf_counter() - ctx.wall0,
        manifest=info,
    )
