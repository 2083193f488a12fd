"""Several processes through the CLI, as the README launches them: torchrun and accelerate
launch with 2 CPU processes on gloo, rank 0 preparing the data while the others wait."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

BIN = Path(sys.executable).parent


def write_recipe(folder: Path, model_dir: Path, steps: int = 2) -> Path:
    """A chat dataset the CLI prepares itself (no --data) and a 2-step LoRA run."""
    convs = [
        {
            "messages": [
                {"role": "user", "content": f"count from {i}"},
                {"role": "assistant", "content": " ".join(str(i + k) for k in range(12))},
            ]
        }
        for i in range(40)
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs))
    recipe = folder / "r.yaml"
    recipe.write_text(
        textwrap.dedent(f"""\
        name: ranks
        model: {{base: {model_dir}}}
        data:
          datasets: [{{path: train.jsonl}}]
          max_length: 128
          dedup: {{enabled: false}}
        train: {{max_steps: {steps}, lr: 0.01, report_to: [none], threads: 1, lora: {{r: 4}}}}
        evaluate: {{enabled: false}}
        """)
    )
    return recipe


def launch(cmd: list[str], env: dict[str, str], timeout: int = 400) -> str:
    """Run a launcher in its own process group (a hang must not leave workers behind)."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, out[-4000:]
    return out


PREP_ORDER = """
import json, os, sys, time
import ladle.data
from ladle.cli import main

real, rank = ladle.data.prep, int(os.environ["RANK"])

def logged(recipe, *args, **kwargs):
    if rank == 0:
        time.sleep(3)  # rank 0 arrives late: only waiting for it keeps rank 1 from building
    t0 = time.time()
    res = real(recipe, *args, **kwargs)
    with open(os.path.join(sys.argv[1], f"prep-{rank}.json"), "w") as f:
        json.dump({"start": t0, "end": time.time(), "hit": res.cache_hit}, f)
    return res

ladle.data.prep = logged
sys.exit(main(sys.argv[2:]))
"""


def test_rank_zero_prepares_the_others_wait(tiny_llama_dir: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, tiny_llama_dir)
    (tmp_path / "launch.py").write_text(PREP_ORDER)
    run = tmp_path / "run"
    launch(
        [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            str(tmp_path / "launch.py"),
            str(tmp_path),
            "train",
            str(recipe),
            "--output",
            str(run),
            "--no-progress",
        ],
        {"LADLE_HOME": str(tmp_path / "home")},
    )
    first, second = (json.loads((tmp_path / f"prep-{r}.json").read_text()) for r in (0, 1))
    assert not first["hit"] and second["hit"], (first, second)
    assert second["start"] >= first["end"]
    entries = [p.name for p in (tmp_path / "home" / "prep").iterdir() if p.is_dir()]
    assert len(entries) == 1, entries  # one entry, nothing renamed aside
    assert json.loads((run / "manifest.json").read_text())["training"]["world_size"] == 2


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_readme_launch_commands(launcher: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    """The README's commands, verbatim but for the recipe: `torchrun --nproc_per_node 2 -m
    ladle.cli train R` and `accelerate launch --multi_gpu --num_processes 2 -m ladle.cli
    train R` (without --multi_gpu and a config, accelerate starts ONE process on a CPU
    machine; the flag makes it run torchrun's launcher, which works on CPUs too)."""
    recipe = write_recipe(tmp_path, tiny_llama_dir)
    run = tmp_path / "run"
    head = {
        "torchrun": [str(BIN / "torchrun"), "--nproc_per_node", "2"],
        "accelerate": [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"],
    }[launcher]
    out = launch(
        [*head, "-m", "ladle.cli", "train", str(recipe), "--output", str(run), "--no-progress"],
        {"LADLE_HOME": str(tmp_path / "home"), "ACCELERATE_CONFIG_FILE": "/nonexistent"},
    )
    assert "2 steps" in out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["training"]["world_size"] == 2 and manifest["training"]["steps"] == 2
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
