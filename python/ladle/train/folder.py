"""The run folder a training run writes: new, resumed, or replacing an older run.

A folder is user data until proven otherwise. Training writes into a new or empty folder,
continues a Ladle run with ``--resume``, or, with ``output.overwrite``, replaces a folder
that holds a Ladle run (its ``run.json``) and nothing else: any other folder is refused.
A replacement trains in a temporary sibling and is swapped in only when the new run has
finished, so a run that fails (bad data, out of memory, Ctrl-C) leaves the old one as it
was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ladle.errors import TrainError
from ladle.paths import replace_dir
from ladle.train.distributed import Dist

RUN_MARKER = "run.json"
"""Written first by every run (the resolved recipe and data fingerprint); a folder that
holds it is a Ladle run folder."""

R = TypeVar("R")


@dataclass(frozen=True)
class RunFolder:
    final: Path
    """Where the run is when it has finished."""
    work: Path
    """Where this run writes: ``final``, or a folder in a temporary sibling when replacing."""
    resuming: bool
    staging: Path | None = None
    """The temporary sibling that holds ``work`` while an older run is being replaced."""
    created: bool = False
    """``final`` was created here (so a run that fails before writing anything removes it)."""

    def commit(self, d: Dist) -> None:
        """The run finished: swap it in for the run it replaces (rank 0; all ranks wait)."""
        d.barrier()
        if self.staging is not None and d.main:
            replace_dir(self.work, self.final)
            shutil.rmtree(self.staging, ignore_errors=True)
        d.barrier()

    def abandon(self, d: Dist) -> None:
        """The run failed: drop the half-written replacement (the older run stays), or the
        folder this run created if the run wrote nothing into it."""
        if not d.main:
            return
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        elif self.created:
            with contextlib.suppress(OSError):
                self.final.rmdir()  # only if still empty

    def relocate(self, result: R) -> R:
        """``result`` (a dataclass of paths and numbers) with paths under ``work`` moved
        to ``final``."""
        if self.work == self.final or not dataclasses.is_dataclass(result):
            return result
        moved: dict[str, Any] = {}
        for f in dataclasses.fields(result):
            value = getattr(result, f.name)
            if isinstance(value, Path) and value.is_relative_to(self.work):
                moved[f.name] = self.final / value.relative_to(self.work)
        return dataclasses.replace(result, **moved)  # type: ignore[type-var]


def open_run_folder(final: Path, *, overwrite: bool, resume: bool, d: Dist) -> RunFolder:
    """Check ``final`` (every rank) and decide where this run writes."""
    if final.exists() and not final.is_dir():
        raise TrainError(f"run folder {final} exists and is not a folder")
    exists = final.is_dir() and any(final.iterdir())
    is_run = (final / RUN_MARKER).is_file()
    if not exists:
        created = not final.exists()
        if d.main:
            try:
                final.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise TrainError(f"cannot create run folder {final}: {e.strerror}") from e
        d.barrier()
        return RunFolder(final, final, resuming=False, created=created)
    if resume:
        if not is_run:
            raise TrainError(f"{final} is not a Ladle run folder (no {RUN_MARKER}): cannot resume")
        if (final / "manifest.json").is_file():
            raise TrainError(f"run {final} already finished (manifest.json present)")
        return RunFolder(final, final, resuming=True)
    if not overwrite:
        raise TrainError(
            f"run folder {final} already exists; pass --resume to continue it, set "
            "output.overwrite: true to replace it, or choose another output.run_name"
        )
    if not is_run:
        raise TrainError(
            f"{final} is not a Ladle run folder (no {RUN_MARKER}), and output.overwrite "
            "replaces only run folders; choose another output.run_name or --output"
        )
    staging = None
    if d.main:
        try:
            staging = tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent)
        except OSError as e:
            raise TrainError(f"cannot write next to {final}: {e.strerror}") from e
    staging_dir = Path(d.broadcast(staging))
    # The work folder keeps the final name, so logs and trackers name the run correctly.
    return RunFolder(final, staging_dir / final.name, resuming=False, staging=staging_dir)
