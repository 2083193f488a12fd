"""Reading and writing dataset records: one suffix table, one location format.

Everything that reads rows (``ladle prep``, ``ladle render``, ``ladle dedup``) goes
through :func:`blocks`, which turns any supported file into blocks of JSON for the Rust
normaliser (``rust/src/load.rs``): JSONL as it is, a JSON array whole, and columnar
files (Parquet, CSV/TSV, Arrow) as JSON lines written by polars, a record batch at a
time. So one piece of code decides what a valid row is, whatever the file type.

Locations name a row the same way everywhere (reports, drop lists, errors):
``file:N`` for line N of a JSONL file, ``file[item N]`` for item N of a JSON array and
``file[row N]`` for row N of a table (all 1-based).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ladle.errors import DataError
from ladle.paths import atomic_write_bytes

SUFFIXES: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".arrow": "arrow",
}
"""File suffix -> kind, for reading. Writing takes every kind but ``arrow``."""
WRITABLE = ("jsonl", "json", "parquet", "csv", "tsv")
BATCH_ROWS = 65_536  # table rows per record batch handed to Rust
BLOCK_BYTES = 64 << 20  # JSONL bytes per block handed to Rust
CSV_BLOCK_BYTES = 16 << 20  # CSV bytes per record batch
_BOM = b"\xef\xbb\xbf"


def kind(path: Path | str) -> str | None:
    """The kind of a data file from its suffix (case-insensitive), or None."""
    return SUFFIXES.get(Path(path).suffix.lower())


def check_kind(path: Path | str, *, write: bool = False) -> str:
    k = kind(path)
    if k is None or (write and k not in WRITABLE):
        names = [s for s, v in SUFFIXES.items() if not write or v in WRITABLE]
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(names)}")
    return k


def location(source: str, unit: str, n: int) -> str:
    """Where row ``n`` (1-based) of ``source`` is: ``f:N``, ``f[item N]`` or ``f[row N]``."""
    return f"{source}:{n}" if unit == "line" else f"{source}[{unit} {n}]"


@dataclass
class Block:
    """Rows for the Rust normaliser: JSON lines, or (``json_array``) one JSON array."""

    data: bytes
    source: str
    unit: str  # line | item | row
    offset: int  # rows before this block in its file
    json_array: bool = False
    _cache: list[Any] | None = field(default=None, repr=False)

    def raw(self, k: int) -> bytes:
        """Row ``offset + k + 1`` as JSON bytes (a line, a table row or an array item)."""
        if self.json_array:
            return json.dumps(self._items()[k], ensure_ascii=False).encode()
        return self._lines()[k]

    def record(self, k: int) -> Any:
        """Row ``offset + k + 1`` decoded. Call it only for rows the normaliser accepted:
        it bounds their nesting, so Python's parser cannot recurse too deep."""
        return self._items()[k] if self.json_array else json.loads(self._lines()[k])

    def __len__(self) -> int:
        return len(self._items()) if self.json_array else len(self._lines())

    def _lines(self) -> list[bytes]:
        if self._cache is None:
            data = self.data
            if self.offset == 0 and data.startswith(_BOM):
                data = data[len(_BOM) :]
            lines = data.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            self._cache = lines
        return self._cache

    def _items(self) -> list[Any]:
        if self._cache is None:
            self._cache = list(json.loads(self.data.decode("utf-8-sig")))
        return self._cache


def blocks(path: Path) -> Iterator[Block]:
    """The rows of one data file as :class:`Block`s, a bounded amount at a time."""
    k = check_kind(path)
    source = str(path)
    try:
        if k == "jsonl":
            for data, first in _line_blocks(path):
                yield Block(data, source, "line", first)
        elif k == "json":
            data = path.read_bytes()
            array = data.lstrip(_BOM).lstrip()[:1] == b"["
            yield Block(data, source, "item" if array else "line", 0, array)
        else:
            offset = 0
            for batch in _record_batches(path, k):
                yield Block(_ndjson(batch, path, offset), source, "row", offset)
                offset += batch.num_rows
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e


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


def _record_batches(path: Path, k: str) -> Iterator[Any]:
    """pyarrow RecordBatches of a columnar file, a bounded number of rows at a time."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if k == "parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        elif k in ("csv", "tsv"):
            parse = pacsv.ParseOptions(
                delimiter="\t" if k == "tsv" else ",", newlines_in_values=True
            )
            read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
            # A CSV has no types: every column is text, verbatim ("00123" stays "00123",
            # "1.10" stays "1.10"), so the column names come first, then the typed read.
            names = pacsv.open_csv(path, parse_options=parse, read_options=read).schema.names
            convert = pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                auto_dict_encode=False,
            )
            yield from pacsv.open_csv(
                path, parse_options=parse, read_options=read, convert_options=convert
            )
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
    except pa.ArrowException as e:
        raise DataError(f"{path}: cannot read {k}: {e}") from e
    except UnicodeDecodeError as e:
        # pyarrow decodes CSV column names (and some messages) itself, outside its errors.
        raise DataError(
            f"{path}: cannot read {k}: not UTF-8 text ({e.reason} at byte {e.start}); "
            "re-encode the file as UTF-8"
        ) from None


def _text_columns(batch: Any) -> Any:
    """Binary columns as text where they are UTF-8, else null: JSON has no bytes, and
    polars panics on them. A field the recipe needs then reads as missing, by name."""
    import pyarrow as pa

    cols, fields = [], []
    for f, col in zip(batch.schema, batch.columns, strict=True):
        if (
            pa.types.is_binary(f.type)
            or pa.types.is_large_binary(f.type)
            or pa.types.is_fixed_size_binary(f.type)
        ):
            try:
                col = col.cast(pa.binary()).cast(pa.string())
            except pa.ArrowException:
                col = pa.nulls(len(col), pa.string())
            f = pa.field(f.name, pa.string())
        cols.append(col)
        fields.append(f)
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))


def _ndjson(batch: Any, path: Path, offset: int) -> bytes:
    """A record batch as JSON lines (polars writes nested lists/structs as JSON)."""
    import polars as pl

    try:
        df = pl.from_arrow(_text_columns(batch))
        assert isinstance(df, pl.DataFrame)
        buf = df.write_ndjson()
    except Exception as e:  # polars raises its own errors and, on odd types, panics
        raise DataError(
            f"{path}: rows {offset + 1}-{offset + batch.num_rows} cannot be read as JSON "
            f"({type(e).__name__}: {str(e)[:200]}); convert the file to JSONL"
        ) from None
    except BaseException as e:  # pyo3's PanicException derives from BaseException
        if type(e).__name__ != "PanicException":
            raise
        raise DataError(
            f"{path}: rows {offset + 1}-{offset + batch.num_rows} cannot be read as JSON "
            f"(polars: {str(e)[:200]}); convert the file to JSONL"
        ) from None
    return buf.encode("utf-8") if isinstance(buf, str) else bytes(buf)


# --------------------------------------------------------------------------- writing


def _cell(v: Any) -> str:
    """A CSV cell: text as is, nested values as JSON (the loader reads them back)."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


def encode_records(path: Path, records: Sequence[Any]) -> bytes:
    """Records (JSON objects) in the format of ``path``'s suffix."""
    k = check_kind(path, write=True)
    if k == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if k == "json":
        return json.dumps(list(records), ensure_ascii=False, indent=1).encode()
    if k in ("csv", "tsv"):
        names: dict[str, None] = {}
        for r in records:
            names.update(dict.fromkeys(r))
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t" if k == "tsv" else ",", lineterminator="\n")
        w.writerow(names)
        for r in records:
            w.writerow([_cell(r.get(n)) for n in names])
        return buf.getvalue().encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(list(records))
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise DataError(
            f"{path}: these rows have no common column types for Parquet ({e}); write .jsonl"
        ) from None
    out = pa.BufferOutputStream()
    pq.write_table(table, out)
    return bytes(out.getvalue().to_pybytes())


def write_records(path: Path, records: Sequence[Any]) -> None:
    """Write records atomically (temporary file + rename) in ``path``'s format."""
    atomic_write_bytes(path, encode_records(path, records))


__all__ = [
    "SUFFIXES",
    "Block",
    "blocks",
    "check_kind",
    "encode_records",
    "kind",
    "location",
    "write_records",
]
