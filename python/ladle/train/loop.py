"""The training loop: plain PyTorch, nothing it does not need.

One optimizer step = this rank's micro-batches of the planned step (gradient
accumulation), each forward under autocast, each backward of ``loss_sum * world /
step_units`` (so accumulation and DDP average over the step's trained tokens exactly
like one big batch), gradient clipping, AdamW, scheduler. Gradient all-reduce happens
once per step (``no_sync`` on the other micro-batches).

With ``train.eval_every``, the held-out loss is computed before the first step, every N
steps and after the last one; early stopping and keep-best act on it. Every rank gets the
same all-reduced loss, so all ranks stop at the same step.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ladle.train import checkpoint, distributed
from ladle.train.distributed import Dist
from ladle.train.manifest import MetricsLog, Trackers
from ladle.train.model import inference_mode
from ladle.train.rows import MicroBatch, Step, TokenTable


@dataclass(frozen=True)
class StepInfo:
    """What ``on_step`` hooks see after each optimizer step (on every rank)."""

    step: int  # optimizer steps done
    loss: float  # this step's loss, averaged over all ranks
    rank: int
    rows: tuple[int, ...]  # row indices this rank trained on in this step


StepHook = Callable[[StepInfo], None]


class Objective(Protocol):
    """What the loop trains: SFT (packed or padded), DPO, ORPO or KTO."""

    packed: bool
    name: str
    tt: TokenTable
    lengths: np.ndarray  # tokens per row (what micro-batches are planned from)
    units: np.ndarray  # what the loss is averaged over, per row

    def batch(self, rows: Any, device: torch.device) -> dict[str, torch.Tensor]: ...

    def loss(
        self, model: Any, core: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class LoopConfig:
    device: torch.device
    autocast: torch.dtype | None
    max_grad_norm: float
    log_every: int
    save_every: int
    keep_checkpoints: int
    run_dir: Path
    progress: bool
    on_step: StepHook | None = None
    eval_every: int = 0
    evaluator: Callable[[], dict[str, float]] | None = None  # held-out loss, all ranks
    patience: int | None = None  # early stopping: evaluations without improvement
    min_delta: float = 0.0
    keep_best: bool = False


@dataclass
class EvalTrack:
    """Held-out losses seen so far: the best, and how long ago it was (saved in checkpoints
    so that early stopping and keep-best survive a resume)."""

    best_loss: float | None = None
    best_step: int | None = None
    since_best: int = 0
    best_weights: dict[str, torch.Tensor] | None = None  # keep_best, CPU copy

    def update(self, step: int, loss: float, min_delta: float) -> bool:
        """Record one evaluation; True when it is the new best."""
        if self.best_loss is None or loss < self.best_loss - min_delta:
            self.best_loss, self.best_step, self.since_best = loss, step, 0
            return True
        self.since_best += 1
        return False

    def position(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_step": self.best_step, "since": self.since_best}


@dataclass
class LoopResult:
    losses: list[float] = field(default_factory=list)  # every step run by this process
    tokens: int = 0
    units: int = 0
    train_s: float = 0.0  # wall time of the steps run in this process (not model loading)
    steps_run: int = 0
    warnings: list[str] = field(default_factory=list)  # from the objective's ``watch``
    last_eval: dict[str, float] | None = None  # the latest held-out evaluation
    last_eval_step: int | None = None
    stopped_early_at: int | None = None  # early stopping: the step it stopped after
    track: EvalTrack = field(default_factory=EvalTrack)


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def run(
    *,
    model: Any,
    core: Any,
    objective: Objective,
    plan: list[Step],
    start_step: int,
    start_tokens: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dist: Dist,
    cfg: LoopConfig,
    metrics: MetricsLog | None,
    trackers: Trackers | None,
    track: EvalTrack | None = None,
) -> LoopResult:
    params = [p for p in core.parameters() if p.requires_grad]
    result = LoopResult(tokens=start_tokens, track=track or EvalTrack())

    def held_out(done: int) -> bool:
        """Evaluate and log; True when early stopping says stop."""
        if cfg.evaluator is None:
            return False
        out = cfg.evaluator()
        model.train()
        result.last_eval, result.last_eval_step = out, done
        improved = result.track.update(done, out["eval_loss"], cfg.min_delta)
        if improved and cfg.keep_best:
            result.track.best_weights = distributed.trainable_state(core)
        if dist.main:
            row = {"step": done, **out}
            if metrics is not None:
                metrics.write(row)
            if trackers is not None:
                trackers.log(row)
        return cfg.patience is not None and result.track.since_best >= cfg.patience

    evaluating = cfg.eval_every > 0 and cfg.evaluator is not None
    if evaluating and start_step == 0 and plan:
        held_out(0)  # the curve starts from the untrained model
    model.train()
    # fp16 (GPUs without bf16) needs loss scaling; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(cfg.device.type) if cfg.autocast == torch.float16 else None
    t0 = time.perf_counter()
    session_tokens = 0
    with _progress(cfg.progress and dist.main, len(plan), start_step) as bar:
        for s in range(start_step, len(plan)):
            step = plan[s]
            ts = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            loss_sum, extras = _accumulate(model, core, objective, step, dist, cfg, scaler)
            if scaler is not None:
                scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            grad_norm = float(distributed.full_tensor(norm))
            if scaler is not None:
                scaler.step(optimizer)  # skips the step on inf/nan gradients
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            keys = sorted(extras)
            totals = dist.sum([loss_sum, *(extras[k] for k in keys)], cfg.device)
            units = max(step.units, 1)
            loss = totals[0] / units
            result.losses.append(loss)
            result.tokens += step.tokens
            result.units += step.units
            result.steps_run += 1
            session_tokens += step.tokens
            now = time.perf_counter()
            result.train_s = now - t0
            done = s + 1
            if dist.main and (done % cfg.log_every == 0 or done == len(plan)):
                row: dict[str, Any] = {
                    "step": done,
                    "epoch": step.epoch,
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens": result.tokens,
                    "loss_tokens": step.units if objective.name == "sft" else None,
                    "tokens_per_s": round(session_tokens / max(now - t0, 1e-9), 1),
                    "step_s": round(now - ts, 4),
                }
                for k, v in zip(keys, totals[1:], strict=True):
                    row[k] = v / units
                row = {k: v for k, v in row.items() if v is not None}
                if metrics is not None:
                    metrics.write(row)
                if trackers is not None:
                    trackers.log(row)
                # An objective may watch its own metrics (DPO: likelihood displacement).
                for msg in getattr(objective, "watch", lambda _row: [])(row):
                    result.warnings.append(msg)
                    print(f"ladle train: warning: {msg}", file=sys.stderr, flush=True)
            stop = False
            if evaluating and (done % cfg.eval_every == 0 or done == len(plan)):
                stop = held_out(done)
                if stop and done < len(plan):
                    result.stopped_early_at = done
            if cfg.save_every and done % cfg.save_every == 0 and done < len(plan) and not stop:
                _checkpoint(
                    done,
                    step,
                    result.tokens,
                    model=core,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    dist=dist,
                    cfg=cfg,
                    track=result.track,
                )
            if bar is not None:
                bar(done, loss, session_tokens / max(now - t0, 1e-9))
            if cfg.on_step is not None:
                mine = step.shards[dist.rank]
                cfg.on_step(
                    StepInfo(done, loss, dist.rank, tuple(r for mb in mine for r in mb.rows))
                )
            if stop:
                break
    return result


def _accumulate(
    model: Any,
    core: Any,
    objective: Objective,
    step: Step,
    dist: Dist,
    cfg: LoopConfig,
    scaler: Any = None,
) -> tuple[float, dict[str, float]]:
    mine: tuple[MicroBatch, ...] = step.shards[dist.rank]
    scale = dist.world / max(step.units, 1)
    loss_sum = 0.0
    extras: dict[str, float] = defaultdict(float)
    for k, mb in enumerate(mine):
        batch = objective.batch(mb.rows, cfg.device)
        last = k == len(mine) - 1
        with distributed.no_sync(model, skip=not last and dist.world > 1):
            with autocast(cfg.device, cfg.autocast):
                loss, more = objective.loss(model, core, batch)
            scaled = loss * scale
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_sum += float(loss.detach())
        for key, v in more.items():
            extras[key] += v
    return loss_sum, extras


def _checkpoint(
    done: int,
    step: Step,
    tokens: int,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    dist: Dist,
    cfg: LoopConfig,
    track: EvalTrack,
) -> None:
    rngs = dist.gather(checkpoint.rng_state())
    weights = distributed.trainable_state(model)  # collectives under FSDP: every rank
    optimizer_state = distributed.optimizer_state(model, optimizer, dist)
    if dist.main:
        checkpoint.save(
            cfg.run_dir,
            done,
            weights=weights,
            optimizer_state=optimizer_state,
            scheduler=scheduler,
            rng_states=rngs,
            position={"epoch": step.epoch, "tokens": tokens, "eval": track.position()},
            keep=cfg.keep_checkpoints,
            best_weights=track.best_weights,
        )
    dist.barrier()


def evaluate(
    model: Any, core: Any, objective: Objective, plan: list[Step], dist: Dist, cfg: LoopConfig
) -> dict[str, float]:
    """Mean loss over the eval rows (and the objective's extras), all ranks together."""
    loss_sum = 0.0
    extras: dict[str, float] = defaultdict(float)
    units = 0
    with inference_mode(core):
        for step in plan:
            units += step.units
            mine = list(step.shards[dist.rank])
            # Sharded weights are gathered by collectives in every forward: under FSDP all
            # ranks run as many forwards as the busiest one (extra ones scored, not counted).
            most = max(len(s) for s in step.shards) if dist.fsdp else len(mine)
            spare = next(mb for s in step.shards for mb in s)
            for k in range(most):
                batch = objective.batch((mine[k] if k < len(mine) else spare).rows, cfg.device)
                with autocast(cfg.device, cfg.autocast):
                    loss, more = objective.loss(core, core, batch)
                if k >= len(mine):
                    continue
                loss_sum += float(loss)
                for key, v in more.items():
                    extras[key] += v
    keys = sorted(extras)
    totals = dist.sum([loss_sum, *(extras[k] for k in keys)], cfg.device)
    out = {"eval_loss": totals[0] / max(units, 1)}
    out.update({f"eval_{k}": v / max(units, 1) for k, v in zip(keys, totals[1:], strict=True)})
    return out


@contextlib.contextmanager
def _progress(
    enabled: bool, total: int, start: int
) -> Iterator[Callable[[int, float, float], None] | None]:
    """A rich progress bar with loss, tokens/s and ETA (stderr; off when not wanted)."""
    if not enabled or total == 0:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=sys.stderr)) as prog:
        task = prog.add_task("train", total=total, completed=start, loss="-", tps="-")

        def update(done: int, loss: float, tps: float) -> None:
            prog.update(task, completed=done, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")

        yield update
