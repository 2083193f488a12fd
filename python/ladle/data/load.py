"""Loading datasets: find the files, read them, normalise every format to one form.

The per-row work (JSON parsing, format normalisation, bad-row classification) runs in
Rust (``ladle._core.normalize_rows``) on all cores; files are read by
:mod:`ladle.data.io`, which hands every file type to the same Rust code as JSON. That
keeps one definition of "a valid row" instead of one per file type.

Internal forms (what :func:`load_dataset` returns in ``rows``):

- chat: ``{"messages": [{"role", "content", "train"?, ...}], "tools"?: [...]}``
- text: ``{"text": str}``
- preference: ``{"prompt": [msgs], "chosen": [msgs], "rejected": [msgs]}``, or one
  labelled completion (KTO): ``{"prompt": [msgs], "completion": [msgs], "label": bool}``
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ladle import _core
from ladle.data import io
from ladle.errors import DataError
from ladle.recipe.schema import DatasetSpec

FIRST_BAD = 5  # locations kept per drop reason (the Rust side keeps the same number)
EVAL_SPLITS = ("eval", "validation", "valid", "test")  # DatasetDict names of an eval split
RowSink = Callable[[io.Block, Any, Any, Any], None]
"""Takes a block's kept rows instead of the loader: ``(block, buffer of JSON lines, line
ends, line numbers)``, as ``_core.normalize_rows_flat`` returns them (``ladle prep``)."""


def is_preference_row(row: Mapping[str, Any]) -> bool:
    """A pair (chosen/rejected) or a labelled completion, in the normalised form."""
    return "chosen" in row or "label" in row


def replies(row: Mapping[str, Any]) -> list[Any]:
    """A preference row's replies: chosen and rejected, or a labelled row's completion."""
    return [row["completion"]] if "label" in row else [row["chosen"], row["rejected"]]


def good_reply(row: Mapping[str, Any]) -> Any:
    """The reply a preference row holds up as right (the reference answer, a few-shot
    example): chosen, or a completion labelled desirable; None for an undesirable one."""
    if "label" in row:
        return row["completion"] if row["label"] else None
    return row["chosen"]


@dataclass
class Drops:
    """Counts per drop reason with the first few locations of each."""

    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str | None = None, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        if where is not None:
            locs = self.first.setdefault(reason, [])
            if len(locs) < FIRST_BAD:
                locs.append(where)

    def merge(self, other: Drops) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
            locs = self.first.setdefault(reason, [])
            locs.extend(other.first.get(reason, [])[: FIRST_BAD - len(locs)])

    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            r: {"count": n, "first": self.first.get(r, [])} for r, n in sorted(self.counts.items())
        }


@dataclass
class LoadedDataset:
    """One recipe dataset after loading: normalised rows plus where each came from."""

    index: int
    spec: DatasetSpec
    files: list[Path]
    rows: list[Any]  # dicts, or JSON text per row with ``as_json``; empty with a sink
    locations: list[str]  # "file:line" per row, for drop reports downstream
    rows_read: int
    drops: Drops
    kept: int  # rows loaded (in ``rows``, or handed to the sink)

    @property
    def name(self) -> str:
        p = self.spec.path
        return ", ".join(p) if isinstance(p, list) else p


@dataclass
class Rejected:
    """A row the loader skipped, with its bytes, so that nothing is lost silently."""

    location: str
    reason: str
    error: str
    raw: str


@dataclass
class FileRows:
    """One file's rows after normalising, plus (on request) the original records."""

    rows: list[Any] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)  # with keep_records: original rows
    rejected: list[Rejected] = field(default_factory=list)  # with keep_records
    rows_read: int = 0
    drops: Drops = field(default_factory=Drops)
    kept: int = 0  # rows loaded (in ``rows``, or handed to the sink)


def resolve_files(spec: DatasetSpec) -> list[Path]:
    """Expand a dataset's ``path`` (file, glob, folder or list of them) into files.

    A folder is either a ``datasets`` ``save_to_disk`` folder (its Arrow files, in the
    order ``state.json`` lists them) or a plain folder of data files (sorted).
    """
    entries = spec.path if isinstance(spec.path, list) else [spec.path]
    files: list[Path] = []
    for entry in entries:
        if any(c in entry for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(entry, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise DataError(f"{entry}: the glob matches no files")
            files.extend(matches)
            continue
        p = Path(entry)
        if p.is_dir():
            files.extend(_folder_files(p, spec.split))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{entry}: no such file or folder")
    for f in files:
        io.check_kind(f)
    return files


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise DataError(f"{path}: cannot read ({e}); is this a `datasets` folder?") from None


def _folder_files(folder: Path, split: str) -> list[Path]:
    if (folder / "dataset_dict.json").is_file():
        return _folder_files(_dict_split(folder, split), split)
    state = folder / "state.json"
    if state.is_file():
        meta = _json_file(state)
        files = meta.get("_data_files") if isinstance(meta, dict) else None
        names = [d.get("filename") for d in files or [] if isinstance(d, dict)]
        if not files or not all(isinstance(n, str) and n for n in names):
            raise DataError(
                f"{state}: `_data_files` must list {{filename: ...}} entries; save the "
                "dataset again with `save_to_disk`"
            )
        out = [folder / str(n) for n in names]
        for f in out:
            if f.resolve().parent != folder.resolve() or not f.is_file():
                raise DataError(f"{state}: data file {f.name!r} is not in {folder}")
        return out
    files = sorted(f for f in folder.iterdir() if f.is_file() and io.kind(f) is not None)
    if not files:
        raise DataError(f"{folder}: folder holds no data files")
    return files


def _dict_split(folder: Path, split: str) -> Path:
    """The split folder of a ``DatasetDict`` that a recipe's ``split`` asks for. An eval
    split is ``eval``, ``validation``, ``valid`` or ``test``; a missing one is an error,
    never the train split quietly evaluated on."""
    meta = _json_file(folder / "dataset_dict.json")
    splits = meta.get("splits") if isinstance(meta, dict) else None
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise DataError(
            f"{folder / 'dataset_dict.json'}: `splits` must be a list of split names; save "
            "the dataset again with `save_to_disk`"
        )
    wanted = EVAL_SPLITS if split == "eval" else ("train",)
    name = next((s for s in wanted if s in splits), None)
    if name is None:
        fix = (
            "point `path` at one split folder, or drop this eval dataset and set data.eval_fraction"
            if split == "eval"
            else "point `path` at one split folder"
        )
        raise DataError(
            f"{folder}: DatasetDict has splits {splits}, none of them {' / '.join(wanted)} "
            f"(split: {split}); {fix}"
        )
    sub = folder / name
    if sub.resolve().parent != folder.resolve() or not sub.is_dir():
        raise DataError(f"{folder / 'dataset_dict.json'}: split {name!r} has no folder")
    return sub


def read_file(
    path: Path,
    format: str,
    *,
    columns: dict[str, str] | None = None,
    roles: dict[str, str] | None = None,
    system: str | None = None,
    strict: bool = False,
    limit: int | None = None,
    as_json: bool = False,
    keep_records: bool = False,
    sink: RowSink | None = None,
) -> FileRows:
    """Read and normalise one data file (up to ``limit`` rows).

    ``keep_records`` also keeps each kept row as it was in the file (``ladle dedup``
    writes those back) and every skipped row's bytes with its reason. ``sink`` takes
    each block's kept rows as JSON lines instead of ``rows``/``locations``.
    """
    if sink is not None and keep_records:
        raise ValueError("keep_records needs the rows in memory, not a sink")
    out = FileRows()
    # What each row is checked against: the same for every block of the file.
    rules: dict[str, Any] = {
        "columns": columns or None,
        "roles": roles or None,
        "system": system,
    }
    for block in io.blocks(path):
        if limit is not None and out.kept >= limit:
            break
        left = None if limit is None else limit - out.kept
        if sink is None:
            _take(out, block, format, rules, strict, left, as_json, keep_records)
            continue
        buf, ends, lines, counts, first = _core.normalize_rows_flat(
            block.data, format, **_block_args(block, left, strict), **rules
        )
        sink(block, buf, ends, lines)
        _count(out, block, len(lines), counts, first)
    return out


def _block_args(block: io.Block, left: int | None, strict: bool) -> dict[str, Any]:
    """The arguments both normalisers take for one block: where it comes from (so
    locations name the file and line) and how many rows may still be kept."""
    return {
        "limit": left,
        "source": block.source,
        "unit": block.unit,
        "offset": block.offset,
        "json_array": block.json_array,
        "strict": strict,
    }


def _count(
    out: FileRows,
    block: io.Block,
    kept: int,
    counts: dict[str, int],
    first: list[tuple[str, int, str, str]],
) -> None:
    """A block's kept and dropped rows into ``out``'s counts and first bad locations."""
    out.kept += kept
    out.rows_read += kept + sum(counts.values())
    for reason, n in counts.items():
        out.drops.add(reason, None, n)
    for reason, line, fld, msg in first:
        where = io.location(block.source, block.unit, line)
        locs = out.drops.first.setdefault(reason, [])
        if len(locs) < FIRST_BAD:
            locs.append(f"{where}: {fld + ': ' if fld else ''}{msg}")


def _take(
    out: FileRows,
    block: io.Block,
    format: str,
    rules: dict[str, Any],
    strict: bool,
    left: int | None,
    as_json: bool,
    keep_records: bool,
) -> None:
    got, lines, counts, first = _core.normalize_rows(
        block.data, format, as_json=as_json, **_block_args(block, left, strict), **rules
    )
    out.rows.extend(got)
    out.locations.extend(io.location(block.source, block.unit, n) for n in lines)
    _count(out, block, len(got), counts, first)
    if not keep_records:
        return
    kept = {n - block.offset - 1 for n in lines}
    out.records.extend(block.record(n - block.offset - 1) for n in lines)
    last = max(kept, default=-1) if left is not None and len(got) >= left else len(block) - 1
    for k in range(last + 1):
        if k in kept:
            continue
        raw = block.raw(k)
        if not raw.strip():
            continue  # blank lines are not rows
        # Ask the normaliser about this one row: its reason and message, for the rejects.
        _, _, _, why = _core.normalize_rows(
            raw, format, source=block.source, unit=block.unit, offset=k + block.offset, **rules
        )
        reason, _, fld, msg = why[0] if why else ("unknown", 0, "", "")
        out.rejected.append(
            Rejected(
                io.location(block.source, block.unit, block.offset + k + 1),
                reason,
                f"{fld + ': ' if fld else ''}{msg}",
                raw.decode("utf-8", "backslashreplace"),
            )
        )


def load_dataset(
    spec: DatasetSpec,
    index: int = 0,
    *,
    strict: bool = False,
    as_json: bool = False,
    sink: RowSink | None = None,
) -> LoadedDataset:
    """Read and normalise one recipe dataset (all its files, up to ``spec.limit`` rows).

    ``as_json`` keeps each row as compact JSON text instead of a dict: several times
    less memory on a large corpus, and the chat encoder parses JSON text anyway.
    ``sink`` takes the rows a block at a time instead (``read_file``): memory then
    holds one block, not the dataset.
    """
    files = resolve_files(spec)
    rows: list[Any] = []
    locations: list[str] = []
    drops = Drops()
    read = kept = 0
    for path in files:
        left = None if spec.limit is None else spec.limit - kept
        if left is not None and left <= 0:
            break
        got = read_file(
            path,
            spec.format,
            columns=spec.columns,
            roles=spec.roles,
            system=spec.system,
            strict=strict,
            limit=left,
            as_json=as_json,
            sink=sink,
        )
        rows.extend(got.rows)
        locations.extend(got.locations)
        read += got.rows_read
        kept += got.kept
        drops.merge(got.drops)
    return LoadedDataset(index, spec, files, rows, locations, read, drops, kept)


def load_all(
    datasets: list[DatasetSpec], *, strict: bool = False, as_json: bool = False
) -> list[LoadedDataset]:
    """Load every dataset of a recipe, in recipe order."""
    return [
        load_dataset(spec, i, strict=strict, as_json=as_json) for i, spec in enumerate(datasets)
    ]
