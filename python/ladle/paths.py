"""Where Ladle keeps things, and how it writes them without leaving debris.

Every cache entry and output folder is built in a sibling temporary folder and moved
into place with one ``rename``: a run killed half way leaves a ``.tmp-*`` folder that
the next run ignores, never a half-written entry that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def ladle_home() -> Path:
    """Root of Ladle's caches: ``$LADLE_HOME``, else ``~/.cache/ladle``."""
    env = os.environ.get("LADLE_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ladle"


def _read_umask() -> int:
    # Linux reports it without changing it; elsewhere it can only be read by setting it.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def created_mode(*, directory: bool) -> int:
    """The mode ``open``/``mkdir`` would give a new file or folder under the umask.

    ``tempfile`` creates private (0600/0700) files and folders; an output written through
    one is given this mode before it takes its final name, so a run folder, a prep cache
    entry or an exported model is as readable as anything else the user writes.
    """
    return (0o777 if directory else 0o666) & ~_read_umask()


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An error creating the temporary file names the output the user asked for (the
    temporary name means nothing to them)."""
    try:
        yield
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(path)) from e


@contextlib.contextmanager
def atomic_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``final`` only if the block succeeds.

    With ``replace=False`` an existing ``final`` is an error (``FileExistsError``), so
    outputs are never silently overwritten. When two processes race to fill the same
    cache entry, the loser's folder is discarded and the winner's kept.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not replace:
        raise FileExistsError(f"{final} already exists")
    with _naming(final):
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        tmp.chmod(created_mode(directory=True))
        yield tmp
        if final.exists() and replace:
            replace_dir(tmp, final)
        else:
            try:
                tmp.rename(final)
            except OSError:
                if not final.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # lost a race: keep the winner
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_dir(
    out: Path, marker: str, *, overwrite: bool, command: str, error: type[Exception]
) -> bool:
    """May ``command`` write the folder ``out``? Returns True when it replaces one.

    A new path is always fine. An existing one needs ``overwrite``, and is replaced only
    when it is an empty folder or holds ``marker``, the file ``command`` writes into every
    folder it makes: a typo in OUT must never delete a model, a dataset or a home folder.
    """
    out = Path(out)
    if not out.exists():
        return False
    if not overwrite:
        raise error(f"{out} already exists; pass --overwrite to replace it")
    if not out.is_dir():
        raise error(f"{out} exists and is not a folder; choose another output")
    if any(out.iterdir()) and not (out / marker).is_file():
        raise error(
            f"{out} was not written by {command} (no {marker}), so --overwrite does not "
            "replace it; choose another output folder"
        )
    return True


def replace_dir(new: Path, final: Path) -> None:
    """Put the folder ``new`` where ``final`` is, deleting the old ``final`` only once the
    new one is in place (two renames on one file system; the old copy is never lost)."""
    trash = final.with_name(f".old-{final.name}-{os.getpid()}")
    final.rename(trash)
    try:
        new.rename(final)
    except BaseException:
        trash.rename(final)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _naming(path):
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, created_mode(directory=False))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
