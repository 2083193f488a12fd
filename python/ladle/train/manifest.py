"""What a run records: ``manifest.json``, ``metrics.jsonl``, the loss-curve PNG, trackers.

The manifest answers "what exactly produced this adapter?" months later: the resolved
recipe, fingerprints of the data, model and tokenizer bytes, package versions, the git
commit, the hardware, and how fast and how big the run was.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ladle.paths import atomic_write_bytes, atomic_write_text

PACKAGES = (
    "ladle",
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "bitsandbytes",
    "safetensors",
    "numpy",
    "pyarrow",
)
WEIGHT_FILES = ("config.json", "*.safetensors")


def fingerprint_globs(folder: Path, patterns: Iterable[str]) -> str | None:
    from ladle._core import fingerprint_files

    files = sorted({str(p) for pat in patterns for p in folder.glob(pat) if p.is_file()})
    return fingerprint_files(files) if files else None


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(cwd: Path) -> dict[str, Any] | None:
    """HEAD of the repository around ``cwd`` and whether the tree is dirty."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    with contextlib.suppress(ValueError, OSError, AttributeError):
        info["memory_gib"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (and peak GPU allocation) in MiB."""
    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------ metrics


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step.

    On resume, lines after the checkpoint's step are dropped (atomically rewritten) so
    the file reads as one uninterrupted run.
    """

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and path.is_file():
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):  # a torn last line after kill -9
                    row = json.loads(line)
                    if row.get("step", 0) <= resume_step:
                        self.rows.append(row)
        text = "".join(json.dumps(r) + "\n" for r in self.rows)
        atomic_write_bytes(path, text.encode())
        self._f = path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def plot_loss(rows: list[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Loss (and eval loss, if any) against step, as a PNG."""
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(*zip(*train, strict=True), label="train loss")
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if evals:
        ax.plot(*zip(*evals, strict=True), "o--", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out


class Trackers:
    """TensorBoard (default), MLflow and W&B when installed; a missing one is a warning."""

    def __init__(
        self, names: Sequence[str], run_dir: Path, run_name: str, config: dict[str, Any]
    ) -> None:
        self.sinks: list[Any] = []
        self.warnings: list[str] = []
        for name in names:
            if name == "none":
                continue
            try:
                if name == "tensorboard":
                    from torch.utils.tensorboard import SummaryWriter

                    self.sinks.append(
                        ("tensorboard", SummaryWriter(log_dir=str(run_dir / "tensorboard")))
                    )
                elif name == "mlflow":
                    import mlflow

                    mlflow.start_run(run_name=run_name)
                    self.sinks.append(("mlflow", mlflow))
                elif name == "wandb":
                    import wandb

                    self.sinks.append(
                        ("wandb", wandb.init(name=run_name, config=config, dir=str(run_dir)))
                    )
            except ImportError:
                self.warnings.append(f"report_to {name}: package not installed, skipped")

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        scalars = {
            k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))
        }
        for kind, sink in self.sinks:
            if kind == "tensorboard":
                for k, v in scalars.items():
                    sink.add_scalar(f"train/{k}", v, step)
            elif kind == "mlflow":
                sink.log_metrics(scalars, step=step)
            else:
                sink.log(scalars, step=step)

    def close(self) -> None:
        for kind, sink in self.sinks:
            if kind == "tensorboard":
                sink.close()
            elif kind == "mlflow":
                sink.end_run()
            else:
                sink.finish()
