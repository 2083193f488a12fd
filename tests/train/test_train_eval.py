"""Evaluation during training: held-out loss every N steps (from `ladle prep`'s eval split
or given rows), logged to metrics.jsonl, TensorBoard and the PNG; early stopping;
keeping the best weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ladle.errors import LadleError  # noqa: E402
from ladle.recipe.schema import Recipe  # noqa: E402
from ladle.train import train  # noqa: E402


def docs(n: int, seed: int) -> list[dict[str, Any]]:
    """Arithmetic token runs in the prepared-row contract (one document per row)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length, start = int(rng.integers(8, 24)), int(rng.integers(0, 200))
        ids = [(start + 3 * k) % 300 + 10 for k in range(length)]
        rows.append({"input_ids": ids, "labels": [-100, -100, *ids[2:]]})
    return rows


def recipe(model_dir: Path, **train_kw: Any) -> Recipe:
    t = {"lr": 1e-2, "max_steps": 6, "save_every": 0, "report_to": ["none"], "threads": 2}
    t.update(train_kw)
    return Recipe.model_validate(
        {
            "name": "ev",
            "seed": 3,
            "model": {"base": str(model_dir)},
            "data": {"datasets": [{"path": "x"}], "max_length": 64},
            "train": {"lora": {"r": 4, "alpha": 8}, **t},
        }
    )


def metric_rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_eval_every_from_prep_eval_split(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ladle prep`'s eval conversations give the held-out rows: loss on the reference
    answers, before training, every N steps and after the last, in all three sinks."""
    from ladle.data import prep

    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    convs = [
        {
            "messages": [
                {"role": "user", "content": f"count from {i}"},
                {"role": "assistant", "content": " ".join(str(i + k) for k in range(10))},
            ]
        }
        for i in range(60)
    ]
    for name, part in (("train", convs[:48]), ("eval", convs[48:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in part))
    r = Recipe.model_validate(
        {
            "name": "ev",
            "seed": 3,
            "model": {"base": str(tiny_llama_dir)},
            "data": {
                "datasets": [
                    {"path": str(tmp_path / "train.jsonl")},
                    {"path": str(tmp_path / "eval.jsonl"), "split": "eval"},
                ],
                "max_length": 128,
                "dedup": {"enabled": False},
            },
            "train": {
                "lr": 1e-2,
                "max_steps": 4,
                "eval_every": 2,
                "eval_max_rows": 8,
                "save_every": 0,
                "report_to": ["tensorboard"],
                "threads": 2,
                "lora": {"r": 4},
            },
        }
    )
    run = tmp_path / "run"
    res = train(r, prep(r), output_dir=run)
    evals = [x for x in metric_rows(run) if "eval_loss" in x]
    assert [x["step"] for x in evals] == [0, 2, 4]
    assert res.eval["eval_loss"] == evals[-1]["eval_loss"]
    # The reference answers get likelier as training goes: 10.87 -> 10.56 measured (1 and 2
    # threads), a third of that is asked.
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.1
    assert (run / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    # The PNG draws the eval-loss curve: matplotlib's second colour (C1, the eval line)
    # is there, next to the first (C0, the train loss).
    from matplotlib import colors, image

    pixels = image.imread(run / "loss_curve.png")[..., :3]
    for c in ("C0", "C1"):
        near = (abs(pixels - np.asarray(colors.to_rgb(c))) < 0.05).all(axis=-1)
        assert near.sum() > 50, c
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/eval_loss")] == [0, 2, 4]


def test_early_stopping_and_keep_best(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """A min_delta no evaluation can beat: the untrained model (step 0) stays the best,
    so patience 2 with eval_every 2 stops after step 4, and keep_best writes the untrained
    adapter (LoRA B = 0) with its held-out loss."""
    r = recipe(
        tiny_llama_dir,
        max_steps=12,
        eval_every=2,
        early_stopping={"patience": 2, "min_delta": 100.0},
        keep_best=True,
    )
    res = train(r, docs(60, seed=1), docs(8, seed=2), output_dir=tmp_path / "run")
    assert len(res.losses) == 4
    training = res.manifest["training"]
    assert training["stopped_early_at"] == 4 and training["weights_from_step"] == 0
    evals = [x for x in metric_rows(tmp_path / "run") if "eval_loss" in x]
    assert [x["step"] for x in evals[:3]] == [0, 2, 4]
    assert res.eval["eval_loss"] == pytest.approx(evals[0]["eval_loss"], abs=1e-6)
    from safetensors.torch import load_file

    weights = load_file(res.output / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(float(v.abs().max()) == 0.0 for v in lora_b)


def test_without_early_stopping_runs_every_step(tiny_llama_dir: Path, tmp_path: Path) -> None:
    r = recipe(tiny_llama_dir, max_steps=4, eval_every=3)
    res = train(r, docs(60, seed=1), docs(8, seed=2), output_dir=tmp_path / "run")
    assert len(res.losses) == 4 and res.manifest["training"]["stopped_early_at"] is None
    evals = [x["step"] for x in metric_rows(tmp_path / "run") if "eval_loss" in x]
    assert evals == [0, 3, 4]  # before, every 3rd step, and after the last


def test_early_stopping_needs_eval_every(tiny_llama_dir: Path) -> None:
    with pytest.raises((LadleError, ValueError), match="eval_every"):
        recipe(tiny_llama_dir, early_stopping={"patience": 2})
    with pytest.raises((LadleError, ValueError), match="eval_every"):
        recipe(tiny_llama_dir, keep_best=True)
