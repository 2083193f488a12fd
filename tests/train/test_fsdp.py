"""FSDP2 (``train.fsdp``) with 2 CPU processes on gloo: the same losses as one process
taking the same micro-batches, full weights in checkpoints and outputs, exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from ladle.errors import TrainError  # noqa: E402
from ladle.recipe.schema import Recipe  # noqa: E402
from ladle.train import train  # noqa: E402

BIN = Path(sys.executable).parent

SCRIPT = """
import json, os, sys
import pyarrow.parquet as pq
from ladle.recipe.schema import Recipe
from ladle.train import train

recipe = Recipe.model_validate_json(open(sys.argv[1]).read())
rows = pq.read_table(sys.argv[2])
stop_at = int(sys.argv[5])
seen = []

def hook(info):
    seen.append(info.loss)
    if info.step == stop_at:
        raise SystemExit(3)  # every rank, after the step-2 checkpoint: a crash to resume from

try:
    res = train(recipe, rows, rows.slice(0, 3), output_dir=sys.argv[3], resume=stop_at == 0,
                on_step=hook)
finally:
    rank = int(os.environ["RANK"])
    with open(os.path.join(sys.argv[4], f"losses-{stop_at}-{rank}.json"), "w") as f:
        json.dump(seen, f)
"""


def rows(n: int = 60, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length, start = int(rng.integers(10, 30)), int(rng.integers(0, 200))
        ids = [(start + 3 * k) % 300 + 10 for k in range(length)]
        out.append({"input_ids": ids, "labels": [-100, -100, *ids[2:]]})
    return out


def recipe(model_dir: Path, **train_kw: Any) -> Recipe:
    t = {
        "lr": 1e-2,
        "max_steps": 4,
        "save_every": 2,
        "report_to": ["none"],
        "threads": 1,
        "precision": "fp32",
        "micro_batch_tokens": 96,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    }
    t.update(train_kw)
    return Recipe.model_validate(
        {
            "name": "fsdp",
            "seed": 5,
            "model": {"base": str(model_dir)},
            "data": {"datasets": [{"path": "x"}], "max_length": 64},
            "train": t,
        }
    )


def launch(tmp: Path, r: Recipe, run: Path, stop_at: int) -> int:
    (tmp / "recipe.json").write_text(r.model_dump_json())
    cmd = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        str(tmp / "fsdp.py"),
        str(tmp / "recipe.json"),
        str(tmp / "rows.parquet"),
        str(run),
        str(tmp),
        str(stop_at),
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if stop_at == 0:
        assert proc.returncode == 0, out[-4000:]
    return proc.returncode


def losses(tmp: Path, stop_at: int) -> list[list[float]]:
    return [json.loads((tmp / f"losses-{stop_at}-{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_fsdp_two_processes_match_one(adapter: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    """2 ranks x 1 micro-batch per step (FSDP) == 1 rank x 2 accumulated micro-batches:
    the plan deals the same micro-batches, the loss is normalised by the step's tokens.
    LoRA also crashes after step 3 and resumes from the step-2 checkpoint."""
    data = rows()
    pq.write_table(pa.Table.from_pylist(data), tmp_path / "rows.parquet")
    (tmp_path / "fsdp.py").write_text(SCRIPT)
    lr = 1e-2 if adapter == "lora" else 3e-3
    single = train(
        recipe(tiny_llama_dir, adapter=adapter, lr=lr, grad_accum=2),
        data,
        data[:3],
        output_dir=tmp_path / "single",
    )
    sharded = recipe(tiny_llama_dir, adapter=adapter, lr=lr, fsdp=True)
    run = tmp_path / "run"
    if adapter == "lora":
        assert launch(tmp_path, sharded, run, stop_at=3) != 0
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000002"]
        first = losses(tmp_path, 3)
        assert first[0] == pytest.approx(single.losses[:3], abs=1e-4)
    launch(tmp_path, sharded, run, stop_at=0)
    resumed = losses(tmp_path, 0)
    tail = single.losses[2:] if adapter == "lora" else single.losses
    assert resumed[0] == pytest.approx(tail, abs=1e-4)
    assert resumed[1] == pytest.approx(resumed[0])  # every rank logs the global loss
    man = json.loads((run / "manifest.json").read_text())
    assert man["training"]["world_size"] == 2
    assert man["training"]["eval"]["eval_loss"] == pytest.approx(single.eval["eval_loss"], abs=1e-4)
    # The output holds full (gathered) weights equal to the single-process run's.
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if adapter == "lora" else "model.safetensors"
    got = load_file(run / ("adapter" if adapter == "lora" else "model") / name)
    want = load_file(single.output / name)
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape
        assert torch.allclose(got[k], want[k], atol=1e-4), k


def test_fsdp_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    from ladle.train.distributed import init

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(TrainError, match="DeepSpeed"):
        init(torch.device("cpu"))
