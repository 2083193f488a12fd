"""Checkpoints that make ``--resume`` after ``kill -9`` land on the same loss curve.

A checkpoint is everything the next step depends on: the trainable weights, AdamW's
moments, the scheduler, every rank's RNG states and the data position (a step number
into the deterministic plan, see :mod:`ladle.train.rows`). It is written into a
temporary folder and renamed into ``checkpoints/step-NNNNNNNN`` (``ladle.paths.atomic_dir``),
so a kill during the write leaves the previous checkpoint as the latest complete one.

Only tensors and plain Python values are stored, and everything is read back with
``torch.load(weights_only=True)``: a checkpoint cannot execute code.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladle.errors import TrainError
from ladle.paths import atomic_dir
from ladle.train.distributed import Dist, load_optimizer_state, load_trainable

CHECKPOINTS = "checkpoints"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    kind, keys, pos, has_gauss, cached = np_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:08d}"


def save(
    run_dir: Path,
    step: int,
    *,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler: Any,
    rng_states: list[dict[str, Any]],
    position: dict[str, Any],
    keep: int,
    best_weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write one checkpoint atomically (rank 0 only) and prune older ones to ``keep``.
    ``weights``/``optimizer_state``: full tensors, gathered from all ranks under FSDP."""
    final = step_dir(run_dir, step)
    with atomic_dir(final, replace=True) as tmp:
        torch.save(
            {
                "weights": weights,
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
            },
            tmp / "state.pt",
        )
        if best_weights is not None:  # train.keep_best: the best evaluation's weights so far
            torch.save(best_weights, tmp / "best.pt")
        for rank, rng in enumerate(rng_states):
            torch.save(rng, tmp / f"rng-{rank}.pt")
        (tmp / "position.json").write_text(json.dumps({"step": step, **position}, indent=1))
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary ``.tmp-*`` folders are ignored)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / "position.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.removeprefix("step-")))


def latest(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_best(path: Path) -> dict[str, torch.Tensor] | None:
    """The keep-best weights a checkpoint carries, if any."""
    best = path / "best.pt"
    return torch.load(best, map_location="cpu", weights_only=True) if best.is_file() else None


def load(
    path: Path, *, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, dist: Dist
) -> dict[str, Any]:
    """Restore a checkpoint into live objects; returns its data position."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    weights = state["weights"]
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        raise TrainError(
            f"checkpoint {path} does not match this model's trainable weights "
            f"({len(weights)} saved vs {len(expected)} expected): was the recipe changed?"
        )
    load_trainable(model, weights)
    load_optimizer_state(model, optimizer, state["optimizer"], dist)
    scheduler.load_state_dict(state["scheduler"])
    rng_file = path / f"rng-{dist.rank}.pt"
    if not rng_file.is_file():
        raise TrainError(
            f"checkpoint {path} has no RNG state for rank {dist.rank}: resume with the "
            "same number of processes"
        )
    set_rng_state(torch.load(rng_file, weights_only=True))
    return json.loads((path / "position.json").read_text())
