"""Loading datasets: find the files, read them, normalise every format to one form.

The per-row work (JSON parsing, format normalisation, bad-row classification) runs in
Rust (``ladle._core.normalize_rows``) on all cores; Python only finds files and, for
columnar inputs (Parquet, CSV, Arrow from ``datasets.save_to_disk``), streams record
batches through polars' JSON writer so the same Rust code handles every format. That
keeps one definition of "a valid row" instead of one per file type.

Internal forms (what :func:`load_dataset` returns in ``rows``):

- chat: ``{"messages": [{"role", "content", "train"?, ...}], "tools"?: [...]}``
- text: ``{"text": str}``
- preference: ``{"prompt": [msgs], "chosen": [msgs], "rejected": [msgs]}``
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ladle import _core
from ladle.errors import DataError
from ladle.recipe.schema import DatasetSpec

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".arrow")
FIRST_BAD = 5  # locations kept per drop reason (the Rust side keeps the same number)
BATCH_ROWS = 65_536  # table rows per record batch handed to Rust
BLOCK_BYTES = 64 << 20  # JSONL bytes per block handed to Rust


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
    rows: list[Any]  # dicts, or JSON text per row with ``as_json``
    locations: list[str]  # "file:line" per row, for drop reports downstream
    rows_read: int
    drops: Drops

    @property
    def name(self) -> str:
        p = self.spec.path
        return ", ".join(p) if isinstance(p, list) else p


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
        if not f.name.endswith(JSON_SUFFIXES + TABLE_SUFFIXES):
            raise DataError(
                f"{f}: unsupported file type (expected .jsonl, .json, .parquet, .csv or .arrow)"
            )
    return files


def _folder_files(folder: Path, split: str) -> list[Path]:
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        wanted = [s for s in ([split, "validation", "test"] if split == "eval" else [split])]
        name = next((s for s in wanted if s in splits), splits[0])
        return _folder_files(folder / name, split)
    state = folder / "state.json"
    if state.is_file():
        names = [d["filename"] for d in json.loads(state.read_text())["_data_files"]]
        return [folder / n for n in names]
    files = sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and f.name.endswith(JSON_SUFFIXES + TABLE_SUFFIXES)
    )
    if not files:
        raise DataError(f"{folder}: folder holds no data files")
    return files


def _record_batches(path: Path) -> Iterator[Any]:
    """Yield pyarrow RecordBatches of a columnar file, a bounded number of rows at a time."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    name = path.name
    try:
        if name.endswith((".parquet", ".pq")):
            yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        elif name.endswith((".csv", ".tsv")):
            delim = "\t" if name.endswith(".tsv") else ","
            # Every column as string: a CSV has no types, and "00123" must stay "00123".
            reader = pacsv.open_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={}, strings_can_be_null=False, auto_dict_encode=False
                ),
                read_options=pacsv.ReadOptions(block_size=1 << 24),
            )
            for batch in reader:
                yield batch.cast(pa.schema([(f.name, pa.string()) for f in batch.schema]))
        else:  # .arrow: datasets' save_to_disk writes the IPC stream format
            with pa.memory_map(str(path)) as source:
                try:
                    reader = pa.ipc.open_stream(source)
                except pa.ArrowInvalid:
                    file_reader = pa.ipc.open_file(source)
                    for i in range(file_reader.num_record_batches):
                        yield file_reader.get_batch(i)
                    return
                yield from reader
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read: {e}") from e


def load_dataset(
    spec: DatasetSpec, index: int = 0, *, strict: bool = False, as_json: bool = False
) -> LoadedDataset:
    """Read and normalise one recipe dataset (all its files, up to ``spec.limit`` rows).

    ``as_json`` keeps each row as compact JSON text instead of a dict: several times
    less memory on a large corpus, and the chat encoder parses JSON text anyway.
    """
    files = resolve_files(spec)
    rows: list[Any] = []
    locations: list[str] = []
    drops = Drops()
    read = 0
    kw: dict[str, Any] = {
        "columns": spec.columns or None,
        "roles": spec.roles or None,
        "system": spec.system,
        "strict": strict,
    }

    def take(data: bytes, source: str, unit: str, offset: int, json_array: bool) -> None:
        nonlocal read
        limit = None if spec.limit is None else spec.limit - len(rows)
        got, lines, counts, first = _core.normalize_rows(
            data,
            spec.format,
            limit=limit,
            source=source,
            unit=unit,
            offset=offset,
            json_array=json_array,
            as_json=as_json,
            **kw,
        )
        rows.extend(got)
        where = (
            (lambda n: f"{source}:{n}") if unit == "line" else (lambda n: f"{source} {unit} {n}")
        )
        locations.extend(where(n) for n in lines)
        read += len(got) + sum(counts.values())
        for reason, n in counts.items():
            drops.counts[reason] = drops.counts.get(reason, 0) + n
        for reason, line, fld, msg in first:
            locs = drops.first.setdefault(reason, [])
            if len(locs) < FIRST_BAD:
                locs.append(f"{where(line)}: {fld + ': ' if fld else ''}{msg}")

    for path in files:
        if spec.limit is not None and len(rows) >= spec.limit:
            break
        if path.name.endswith(".json"):
            take(path.read_bytes(), str(path), "line", 0, True)
            continue
        if path.name.endswith(JSON_SUFFIXES):
            for block, first_line in _line_blocks(path):
                if spec.limit is not None and len(rows) >= spec.limit:
                    break
                take(block, str(path), "line", first_line, False)
            continue
        offset = 0
        for batch in _record_batches(path):
            if spec.limit is not None and len(rows) >= spec.limit:
                break
            take(_ndjson(batch), str(path), "row", offset, False)
            offset += batch.num_rows
    return LoadedDataset(index, spec, files, rows, locations, read, drops)


def _line_blocks(path: Path) -> Iterator[tuple[bytes, int]]:
    """JSONL in blocks of whole lines (``BLOCK_BYTES`` each), with the number of lines
    before each block: parsing a block at a time keeps the parsed JSON of a huge file
    from ever being in memory at once."""
    line = 0
    carry = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(BLOCK_BYTES)
            data = carry + chunk
            if not chunk:
                if data:
                    yield data, line
                return
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield data[:cut], line
                line += data.count(b"\n", 0, cut)


def _ndjson(batch: Any) -> bytes:
    """A record batch as JSON lines (polars writes nested lists/structs as JSON)."""
    import polars as pl

    df = pl.from_arrow(batch)
    assert isinstance(df, pl.DataFrame)
    buf = df.write_ndjson()
    return buf.encode("utf-8") if isinstance(buf, str) else bytes(buf)


def load_all(
    datasets: list[DatasetSpec], *, strict: bool = False, as_json: bool = False
) -> list[LoadedDataset]:
    """Load every dataset of a recipe, in recipe order."""
    return [
        load_dataset(spec, i, strict=strict, as_json=as_json) for i, spec in enumerate(datasets)
    ]
