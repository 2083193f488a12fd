"""``train(recipe, rows) -> RunResult``: one run folder from a recipe and prepared rows.

Run folder::

    RUN/
      run.json            resolved recipe + data fingerprint, written first (resume checks it)
      checkpoints/        step-NNNNNNNN/ (weights, optimizer, scheduler, RNG, position)
      metrics.jsonl       step, loss, lr, grad_norm, tokens, tokens_per_s (+ DPO/ORPO/KTO
                          rewards and log-probs; GRPO: reward components, KL, completion length, clip fraction)
      completions.jsonl   GRPO only: sampled completions with their rewards every N steps
      tensorboard/        when train.report_to has tensorboard (the default)
      adapter/ | model/   peft adapter (or full weights) + tokenizer + chat template
      loss_curve.png
      manifest.json       written last: its presence means the run finished

A folder is never silently overwritten: an existing one is an error unless ``resume``
(continue it) or ``output.overwrite`` is given, which replaces only a Ladle run folder and
only once the new run has finished (``ladle.train.folder``).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladle.device import pick_device
from ladle.errors import TrainError
from ladle.models import TOKENIZER_FILES, resolve_model
from ladle.paths import atomic_dir, atomic_write_text
from ladle.recipe.schema import PREFERENCE_METHODS, Recipe
from ladle.train import adapters, checkpoint, distributed, heldout, loop, manifest
from ladle.train import model as model_mod
from ladle.train.dpo import DPO
from ladle.train.folder import open_run_folder
from ladle.train.kto import KTO
from ladle.train.orpo import ORPO
from ladle.train.rows import (
    DPO_COLUMNS,
    KTO_COLUMNS,
    Step,
    TokenTable,
    plan_steps,
    sft_table,
    to_table,
)
from ladle.train.sft import PackedSFT, PaddedSFT

# Methods whose loss compares the policy with a reference (the base with the adapter
# switched off, or a frozen copy of model.adapter). ORPO needs none.
REFERENCED = ("dpo", "kto")


@dataclass
class RunResult:
    run_dir: Path
    output: Path  # adapter/ (peft) or model/ (full fine-tuning)
    steps: int  # optimizer steps in the plan
    final_loss: float | None
    losses: list[float]  # loss of every step run by this process (resumed: from the resume on)
    eval: dict[str, float]
    tokens: int
    tokens_per_s: float
    wall_s: float
    manifest: dict[str, Any]


def default_run_dir(recipe: Recipe) -> Path:
    name = recipe.output.run_name or f"{recipe.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    return Path(recipe.output.dir) / name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _snapshot(recipe: Recipe) -> dict[str, Any]:
    """The recipe parts that decide the run (output location and logging cadence excluded)."""
    snap = recipe.model_dump(mode="json", exclude={"output", "evaluate"})
    for k in ("log_every", "report_to", "save_every", "keep_checkpoints", "threads"):
        snap["train"].pop(k, None)
    return snap


def _objective(recipe: Recipe, table: Any, pad_id: int) -> loop.Objective:
    t, max_length = recipe.train, recipe.data.max_length
    if t.method == "dpo":
        return DPO(TokenTable(table, DPO_COLUMNS), t.dpo, max_length)
    if t.method == "orpo":
        return ORPO(TokenTable(table, DPO_COLUMNS), t.orpo, max_length)
    if t.method == "kto":
        tt = TokenTable(table, KTO_COLUMNS)
        labels = kto_labels(table)
        # The labels are part of the data: the fingerprint (resume's check) must see them.
        tt.add("label", labels.astype(np.int64), np.arange(len(labels) + 1, dtype=np.int64))
        return KTO(tt, labels, t.kto, max_length)
    tt = sft_table(table)
    if recipe.data.packing == "none":
        return PaddedSFT(tt, pad_id)
    return PackedSFT(tt, stack=recipe.model.attn_implementation not in model_mod.VARLEN_ATTENTION)


def kto_labels(table: Any) -> np.ndarray:
    """The ``label`` column (true: desirable) of KTO rows, as booleans."""
    if "label" not in table.column_names:
        raise TrainError(
            "train.method: kto needs a boolean `label` column (true: desirable); found "
            f"{table.column_names}. Prepare the data with this recipe (`ladle prep`)"
        )
    col = table.column("label")
    if col.null_count:
        raise TrainError(f"column 'label' has {col.null_count} null rows")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=bool)


def _plan(recipe: Recipe, obj: loop.Objective, world: int, *, training: bool) -> list[Step]:
    t = recipe.train
    return plan_steps(
        lengths=obj.lengths,
        units=obj.units,
        packed=obj.packed and recipe.train.method == "sft",
        micro_batch_tokens=t.micro_batch_tokens or recipe.data.max_length,
        micro_batch_size=t.micro_batch_size,
        grad_accum=t.grad_accum if training else 1,
        world_size=world,
        epochs=t.epochs if training else 1.0,
        max_steps=t.max_steps if training else None,
        seed=recipe.seed,
        shuffle=recipe.data.shuffle and training,
        drop_tail=training,
        stack_rows=getattr(obj, "stack", False),
    )


@dataclass
class RunContext:
    """What one call of ``train`` runs with: the recipe, where it writes, the device and
    process group, and how it reports. Built once in ``train``; every stage reads it."""

    recipe: Recipe
    run_dir: Path
    device: torch.device
    dist: distributed.Dist
    resume: bool
    progress: bool
    on_step: loop.StepHook | None
    wall0: float  # when train() was called (the manifest's wall time)


@dataclass
class Trained:
    """What a finished loop leaves for the manifest and the result."""

    model_dir: Path
    weights_dir: Path | None  # where the base weights really came from (NF4 cache for QLoRA)
    data_fp: str
    objective: loop.Objective
    plan: list[Step]
    start_step: int
    loop: loop.LoopResult
    eval: dict[str, float]
    isolation: float | None
    params: tuple[int, int]  # (trainable, total)
    warnings: list[str]


def train(
    recipe: Recipe,
    train_rows: Any,
    eval_rows: Any = None,
    output_dir: str | Path | None = None,
    resume: bool = False,
    *,
    progress: bool | None = None,
    on_step: loop.StepHook | None = None,
) -> RunResult:
    """Train per ``recipe`` on prepared rows and write one run folder.

    ``train_rows``/``eval_rows``: a pyarrow Table, a list of dicts, a polars frame, a
    ``datasets.Dataset`` or a path (prepared folder or Parquet) holding packed SFT rows
    (``input_ids``, ``labels``, ``position_ids`` and/or ``seq_lengths``) or DPO triples
    (``prompt_input_ids``, ``chosen_input_ids``, ``rejected_input_ids``). With
    ``train.eval_every`` and no ``eval_rows``, a ``ladle prep`` result's eval split gives
    the held-out rows (:mod:`ladle.train.heldout`).
    ``on_step(StepInfo)`` runs on every rank after each optimizer step (progress
    reporting, early stopping by raising, tests that kill the process mid-run).
    Under ``torchrun``/``accelerate launch`` every rank calls this; rank 0 writes.
    """
    wall0 = time.perf_counter()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    device = pick_device()
    d = distributed.init(device, fsdp=recipe.train.fsdp)
    try:
        final = Path(d.broadcast(str(output_dir or default_run_dir(recipe)))).resolve()
        folder = open_run_folder(final, overwrite=recipe.output.overwrite, resume=resume, d=d)
        ctx = RunContext(
            recipe=recipe,
            run_dir=folder.work,
            device=device,
            dist=d,
            resume=folder.resuming,
            progress=sys.stderr.isatty() if progress is None else progress,
            on_step=on_step,
            wall0=wall0,
        )
        try:
            result = _train(ctx, train_rows, eval_rows)
        except BaseException:
            folder.abandon(d)
            raise
        folder.commit(d)
        return folder.relocate(result)
    finally:
        d.close()


def _train(ctx: RunContext, train_rows: Any, eval_rows: Any) -> RunResult:
    if ctx.recipe.train.method == "grpo":  # generation + rewards: TRL's GRPOTrainer
        from ladle.train.grpo import train_grpo

        return train_grpo(ctx, train_rows)
    recipe, run_dir, device, d = ctx.recipe, ctx.run_dir, ctx.device, ctx.dist
    resuming = ctx.resume  # the run folder decided: an unfinished run of the same recipe
    autocast = model_mod.autocast_dtype(recipe.train.precision, device)

    model_dir = resolve_model(recipe.model.base)
    tokenizer = model_mod.load_tokenizer(model_dir, recipe)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    obj = _objective(recipe, to_table(train_rows), pad_id)
    data_fp = obj.tt.fingerprint()
    state = {"recipe": _snapshot(recipe), "data_fingerprint": data_fp, "world_size": d.world}
    if resuming:
        saved = json.loads((run_dir / "run.json").read_text())
        if saved != state:
            changed = sorted(k for k in state if saved.get(k) != state[k])
            raise TrainError(
                f"cannot resume {run_dir}: {', '.join(changed)} changed since the run started"
            )
    elif d.main:
        atomic_write_text(run_dir / "run.json", json.dumps(state, indent=1))

    if d.fsdp and d.world > 1 and recipe.train.adapter == "qlora":
        raise TrainError(
            "train.fsdp with qlora is not supported: it needs bnb_4bit_quant_storage equal to "
            "the compute dtype on GPUs, untested here; use lora/dora/full, or DDP for qlora"
        )
    seed_everything(recipe.seed)
    base = model_mod.load_base(recipe, model_dir, device)
    packed = recipe.data.packing != "none" or recipe.train.method in PREFERENCE_METHODS
    if packed:
        model_mod.use_packed_attention(base, device)
    core = adapters.attach(
        base, recipe.train, recipe.model.adapter, reference=recipe.train.method in REFERENCED
    )
    isolation = model_mod.verify_packing_isolation(core, device) if packed else None

    plan = _plan(recipe, obj, d.world, training=True)
    if not plan and recipe.train.max_steps != 0:
        raise TrainError("no training rows")
    total = len(plan)
    t = recipe.train
    core = distributed.shard(core, d)  # FSDP: before the optimizer sees the parameters
    warmup = t.warmup_steps or int(np.ceil(t.warmup_ratio * total))
    optimizer = torch.optim.AdamW(adapters.optimizer_groups(core, t.weight_decay), lr=t.lr)
    from transformers import get_scheduler

    scheduler = get_scheduler(
        t.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=max(total, 1)
    )
    start_step, start_tokens = 0, 0
    track = loop.EvalTrack()
    ckpt = checkpoint.latest(run_dir) if resuming else None
    if ckpt is not None:
        pos = checkpoint.load(ckpt, model=core, optimizer=optimizer, scheduler=scheduler, dist=d)
        start_step, start_tokens = int(pos["step"]), int(pos["tokens"])
        ev = pos.get("eval") or {}
        track = loop.EvalTrack(
            ev.get("best_loss"), ev.get("best_step"), ev.get("since", 0), checkpoint.load_best(ckpt)
        )

    model = distributed.wrap(core, d, device)
    metrics = manifest.MetricsLog(run_dir / "metrics.jsonl", start_step) if d.main else None
    trackers = (
        manifest.Trackers(t.report_to, run_dir, run_dir.name, recipe.model_dump(mode="json"))
        if d.main and total
        else None
    )
    if eval_rows is None and t.eval_every and t.method == "sft":
        source = heldout.prepared_source(train_rows)
        if source is not None:
            eval_rows = heldout.heldout_rows(recipe, source, model_dir) or None
    eval_table = to_table(eval_rows) if eval_rows is not None else None
    evaluator = None
    if eval_table is not None and eval_table.num_rows:
        eval_obj = _objective(recipe, eval_table, pad_id)
        eval_plan = _plan(recipe, eval_obj, d.world, training=False)
    cfg = loop.LoopConfig(
        device=device,
        autocast=autocast,
        max_grad_norm=t.max_grad_norm,
        log_every=t.log_every,
        save_every=t.save_every,
        keep_checkpoints=t.keep_checkpoints,
        run_dir=run_dir,
        progress=ctx.progress,
        on_step=ctx.on_step,
        eval_every=t.eval_every,
        patience=t.early_stopping.patience if t.early_stopping else None,
        min_delta=t.early_stopping.min_delta if t.early_stopping else 0.0,
        keep_best=t.keep_best,
    )
    if eval_table is not None and eval_table.num_rows:
        evaluator = partial(loop.evaluate, model, core, eval_obj, eval_plan, d, cfg)
        cfg.evaluator = evaluator
    try:
        result = loop.run(
            model=model,
            core=core,
            objective=obj,
            plan=plan,
            start_step=start_step,
            start_tokens=start_tokens,
            optimizer=optimizer,
            scheduler=scheduler,
            dist=d,
            cfg=cfg,
            metrics=metrics,
            trackers=trackers,
            track=track,
        )
        done = result.stopped_early_at or total
        if t.keep_best and result.track.best_weights is not None:
            distributed.load_trainable(core, result.track.best_weights)
            done = result.track.best_step or 0
            result.last_eval = None  # re-score the restored weights below
        eval_out: dict[str, float] = {}
        if result.last_eval is not None and result.last_eval_step == done:
            eval_out = result.last_eval  # the loop just evaluated these weights
        elif evaluator is not None:
            eval_out = evaluator()
            if metrics is not None:
                metrics.write({"step": done, **eval_out})
            if trackers is not None:
                trackers.log({"step": done, **eval_out})
    finally:
        if metrics is not None:
            metrics.close()
        if trackers is not None:
            trackers.close()

    out = run_dir / ("model" if t.adapter == "full" else "adapter")
    info: dict[str, Any] = {}
    # Under FSDP every rank takes part in gathering the weights rank 0 writes.
    full = distributed.trainable_state(core) if d.fsdp and d.world > 1 else None
    if d.main:
        with atomic_dir(out, replace=True) as tmp:
            adapters.save_trained(core, tmp, t.adapter, tokenizer, state_dict=full)
        rows = metrics.rows if metrics is not None else []
        manifest.plot_loss(rows, run_dir / "loss_curve.png", run_dir.name)
        trained = Trained(
            model_dir=model_dir,
            weights_dir=getattr(base, "ladle_weights_dir", None),
            data_fp=data_fp,
            objective=obj,
            plan=plan,
            start_step=start_step,
            loop=result,
            eval=eval_out,
            isolation=isolation,
            params=adapters.param_counts(core),
            warnings=[*(trackers.warnings if trackers else []), *result.warnings],
        )
        info = _manifest(ctx, trained)
        manifest.write_manifest(run_dir, info)
    d.barrier()
    losses = [r["loss"] for r in (metrics.rows if metrics else []) if "loss" in r]
    return RunResult(
        run_dir=run_dir,
        output=out,
        steps=total,
        final_loss=result.losses[-1] if result.losses else (losses[-1] if losses else None),
        losses=result.losses,
        eval=eval_out,
        tokens=result.tokens,
        tokens_per_s=info.get("throughput", {}).get("tokens_per_s", 0.0),
        wall_s=time.perf_counter() - ctx.wall0,
        manifest=info,
    )


def quantization_record(recipe: Recipe, weights_dir: Path | None) -> dict[str, Any] | None:
    """How the base was quantized: Ladle's pre-quantized NF4 folder (with the provenance
    ``ladle quantize`` wrote: source fingerprint, settings, versions) or bitsandbytes on load."""
    if recipe.train.adapter != "qlora":
        return None
    if recipe.model.quantize != "nf4" or weights_dir is None:
        return {"method": "bitsandbytes on load", "quant_type": "nf4"}
    record: dict[str, Any] = {"method": "ladle pre-quantized", "path": str(weights_dir)}
    try:
        record["provenance"] = json.loads((weights_dir / "ladle_quantized.json").read_text())
    except (OSError, ValueError):
        record["provenance"] = None
    return record


def _manifest(ctx: RunContext, r: Trained) -> dict[str, Any]:
    recipe, result = ctx.recipe, r.loop
    session_tokens = result.tokens - sum(s.tokens for s in r.plan[: r.start_step])
    tps = session_tokens / result.train_s if result.train_s > 0 else 0.0
    track = result.track
    return {
        "ladle_run": 1,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": recipe.model_dump(mode="json"),
        "model": {
            "path": str(r.model_dir),
            "fingerprint": manifest.fingerprint_globs(r.model_dir, manifest.WEIGHT_FILES),
            "tokenizer_fingerprint": manifest.fingerprint_globs(r.model_dir, TOKENIZER_FILES),
            "trainable_params": r.params[0],
            "total_params": r.params[1],
            "quantization": quantization_record(recipe, r.weights_dir),
        },
        "data": {
            "fingerprint": r.data_fp,
            "rows": len(r.objective.lengths),
            "tokens_per_epoch": int(r.objective.lengths.sum()),
            # Preference rows whose reply truncation removed (they weigh 0).
            "dropped_pairs": len(getattr(getattr(r.objective, "replies", None), "dropped", [])),
        },
        "training": {
            "method": recipe.train.method,
            "steps": len(r.plan),
            "steps_done": result.stopped_early_at or len(r.plan),
            "stopped_early_at": result.stopped_early_at,
            "resumed_from_step": r.start_step or None,
            "final_loss": result.losses[-1] if result.losses else None,
            "eval": r.eval,
            "best_eval": (
                {"step": track.best_step, "eval_loss": track.best_loss}
                if track.best_step is not None
                else None
            ),
            "weights_from_step": (
                track.best_step
                if recipe.train.keep_best and track.best_weights is not None
                else (result.stopped_early_at or len(r.plan))
            ),
            "tokens": result.tokens,
            "world_size": ctx.dist.world,
            "packing_isolation_max_logit_diff": r.isolation,
        },
        "throughput": {
            "tokens_per_s": round(tps, 1),
            "train_s": round(result.train_s, 3),
            "wall_s": round(time.perf_counter() - ctx.wall0, 3),
            **manifest.peak_memory(ctx.device),
        },
        "versions": manifest.package_versions(),
        "git": manifest.git_commit(Path.cwd()),
        "hardware": manifest.hardware(ctx.device),
        "warnings": r.warnings,
    }
