"""The on-disk layout of prepared data, written by ``prep`` and read by training/eval.

A prep folder holds:

- ``train-NNNNN.parquet``: SFT rows, each ``input_ids``, ``labels``, ``position_ids``
  and ``seq_lengths`` (list<int32>) plus ``num_tokens``; a packed row holds several
  documents, told apart by ``position_ids`` restarting at 0 (transformers' padding-free
  layout). DPO and ORPO data instead has ``prompt_input_ids``, ``chosen_input_ids`` and
  ``rejected_input_ids``, one preference pair per row, never packed together; KTO data
  has ``prompt_input_ids``, ``completion_input_ids`` and ``label``, one example per row.
- ``eval-00000.parquet``: eval rows kept as conversations for the evaluator:
  ``messages`` (JSON), ``prompt`` (JSON: the messages before the final assistant
  turn), ``reference`` (that turn's text), ``text`` (raw-text rows) and ``dataset``.
- ``manifest.json``: a :class:`PrepManifest` (counts, drops, tokens, packing
  efficiency), versioned: a folder written by another version is rebuilt, not misread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ladle.data.load import good_reply, is_preference_row
from ladle.errors import DataError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: per-stage seconds (`stages`)
PREF_ROWS_PER_SHARD = 65_536
# Token ids gain nothing from Parquet's dictionary pages (it doubles the write time);
# zstd level 1 still shrinks them by about half.
_PARQUET: dict[str, Any] = {"compression": "zstd", "compression_level": 1, "use_dictionary": False}


def _arrow(values: npt.NDArray[Any]) -> Any:
    """A numpy array as an Arrow array without copying (and without ``pa.array``'s
    pandas probe, which costs half a second of import on first use)."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    typ = {np.dtype(np.int32): pa.int32(), np.dtype(np.int64): pa.int64()}[values.dtype]
    return pa.Array.from_buffers(typ, len(values), [None, pa.py_buffer(values)])


def _strings(values: list[str | None]) -> Any:
    """A string column built from its buffers, like ``_arrow`` (``pa.array`` would import
    pandas for its probe: half a second of every cold prep with an eval split)."""
    import pyarrow as pa

    data = [v.encode("utf-8") if v is not None else b"" for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in data], out=offsets[1:])
    valid = np.array([v is not None for v in values], dtype=bool)
    nulls = int(len(values) - valid.sum())
    mask = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    small = offsets[-1] < 2**31
    typ = pa.string() if small else pa.large_string()
    offs = pa.py_buffer(offsets.astype(np.int32) if small else offsets)
    buffers = [mask, offs, pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(typ, len(values), buffers, null_count=nulls)


def _lists(offsets: npt.NDArray[np.int64], values: npt.NDArray[Any]) -> Any:
    import pyarrow as pa

    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(_arrow(offsets.astype(np.int32)), _arrow(values))
    return pa.LargeListArray.from_arrays(_arrow(offsets.astype(np.int64)), _arrow(values))


def _ragged(arrays: list[npt.NDArray[np.int32]]) -> Any:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
    return _lists(offsets, values.astype(np.int32, copy=False))


def write_packed(path: Path, packed: dict[str, Any]) -> None:
    """One Parquet shard of packed SFT rows from ``packing.assemble``'s flat arrays."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ro, so = packed["row_offsets"], packed["seq_offsets"]
    table = pa.table(
        {
            "input_ids": _lists(ro, packed["input_ids"]),
            "labels": _lists(ro, packed["labels"]),
            "position_ids": _lists(ro, packed["position_ids"]),
            "seq_lengths": _lists(so, packed["seq_lengths"]),
            "num_tokens": _arrow(np.diff(ro).astype(np.int32)),
        }
    )
    pq.write_table(table, path, **_PARQUET)


def write_preference(folder: Path, triples: list[tuple[Any, Any, Any]]) -> list[str]:
    """DPO pairs as shards of ``prompt/chosen/rejected_input_ids``."""
    return _write_row_shards(
        folder,
        triples,
        lambda part: {
            "prompt_input_ids": _ragged([t[0] for t in part]),
            "chosen_input_ids": _ragged([t[1] for t in part]),
            "rejected_input_ids": _ragged([t[2] for t in part]),
        },
    )


def write_labelled(folder: Path, examples: list[tuple[Any, Any, bool]]) -> list[str]:
    """KTO examples as shards of ``prompt_input_ids``, ``completion_input_ids`` and
    ``label`` (true: desirable)."""
    import pyarrow as pa

    return _write_row_shards(
        folder,
        examples,
        lambda part: {
            "prompt_input_ids": _ragged([t[0] for t in part]),
            "completion_input_ids": _ragged([t[1] for t in part]),
            "label": pa.array([t[2] for t in part], type=pa.bool_()),
        },
    )


def _write_row_shards(
    folder: Path, items: list[Any], columns: Callable[[list[Any]], dict[str, Any]]
) -> list[str]:
    """``items`` in shards of ``PREF_ROWS_PER_SHARD``, each a table of ``columns(part)``
    (at least one shard, so an empty split still has a file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = []
    for s, a in enumerate(range(0, max(1, len(items)), PREF_ROWS_PER_SHARD)):
        name = f"train-{s:05d}.parquet"
        table = pa.table(columns(items[a : a + PREF_ROWS_PER_SHARD]))
        pq.write_table(table, folder / name, **_PARQUET)
        names.append(name)
    return names


def eval_record(row: dict[str, Any]) -> dict[str, Any]:
    """A normalised row as the evaluator needs it: prompt messages and reference answer."""
    if "text" in row:
        return {"messages": None, "prompt": None, "reference": None, "text": row["text"]}
    if is_preference_row(row):
        good = good_reply(row) or []  # an undesirable completion is no reference
        msgs = row["prompt"] + good
        prompt, ref_msgs = row["prompt"], good
    else:
        msgs = row["messages"]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=len(msgs))
        prompt, ref_msgs = msgs[:last], msgs[last:]
    ref = next((m["content"] for m in ref_msgs if m["role"] == "assistant"), None)
    rec: dict[str, Any] = {
        "messages": json.dumps(msgs, ensure_ascii=False),
        "prompt": json.dumps(prompt, ensure_ascii=False),
        "reference": ref,
        "text": None,
    }
    if row.get("tools"):
        rec["tools"] = json.dumps(row["tools"], ensure_ascii=False)
    return rec


def write_eval(folder: Path, rows: list[dict[str, Any]], datasets: list[int]) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [eval_record(r) for r in rows]
    cols = {
        k: _strings([r.get(k) for r in recs])
        for k in ("messages", "prompt", "reference", "text", "tools")
    }
    cols["dataset"] = _arrow(np.asarray(datasets, dtype=np.int32))
    pq.write_table(pa.table(cols), folder / "eval-00000.parquet", **_PARQUET)
    return ["eval-00000.parquet"]


class _Plain(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DropInfo(_Plain):
    count: int
    first: list[str] = Field(default_factory=list, description="first locations, with reason")


class DatasetStats(_Plain):
    path: str
    format: str
    split: str
    files: list[str]
    rows_in: int = Field(description="rows read, good and bad")
    rows_loaded: int = Field(description="rows that passed the loader")
    bad: dict[str, DropInfo]
    rows_out: int = 0
    tokens: int = 0
    mask_method: str | None = Field(
        None,
        description="how the loss mask found the replies of this chat dataset: generation "
        "markers, the prefix rule, the turn fallback (`+` joins several)",
    )


class TrainStats(_Plain):
    examples: int
    rows: int
    tokens: int
    trained_tokens: int
    efficiency: float | None = None
    lower_bound_rows: int | None = None
    rows_over_lower_bound: int | None = None
    length_histogram: dict[str, list[int]] | None = None
    shards: list[str]
    overlong: dict[str, int] = Field(default_factory=dict)


class EvalStats(_Plain):
    rows: int
    shards: list[str]


class PrepManifest(_Plain):
    """``manifest.json`` of a prep folder: what was prepared, from what, and what was
    dropped on the way. Written last, so its presence means the folder is complete."""

    version: int = MANIFEST_VERSION
    ladle_version: str
    created: str
    fingerprint: str = ""
    model: str
    method: str  # sft | dpo
    max_length: int
    packing: str
    train_on: str
    seed: int
    datasets: list[DatasetStats]
    drops: dict[str, DropInfo]
    dedup: dict[str, Any] | None = Field(description="ladle.dedup's report, or None")
    train: TrainStats
    eval: EvalStats
    warnings: list[str] = Field(default_factory=list)
    stages: dict[str, float] = Field(
        default_factory=dict,
        description="wall-clock seconds per stage of the build that wrote the folder "
        "(load, dedup, tokenizer = waiting for the tokenizer, which loads while the data is "
        "read, encode = render + tokenize + mask + spill, pack, write = assemble + Parquet, "
        "eval, total); the Ray engine records tokenizer and total",
    )

    @classmethod
    def read(cls, folder: Path) -> PrepManifest:
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read ({e}); run `ladle prep --force`") from None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise DataError(
                f"{path}: written by another Ladle version (manifest version "
                f"{data.get('version') if isinstance(data, dict) else None}, this one reads "
                f"{MANIFEST_VERSION}); run `ladle prep --force`"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise DataError(f"{path}: not a prep manifest ({e.errors()[0]['msg']})") from None

    def write(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(self.model_dump_json(indent=2))


def _folder(path: Any) -> Path:
    folder = Path(getattr(path, "path", path))
    if not (folder / MANIFEST).is_file():
        raise DataError(
            f"{folder}: not a prepared data folder (no manifest.json); run `ladle prep`"
        )
    return folder


def load_prepared(path: Any) -> tuple[Any, list[dict[str, Any]], PrepManifest]:
    """Open a prep folder (or a ``PrepResult``): ``(train Table, eval rows, manifest)``.

    The train split is a ``pyarrow.Table`` over the shards (memory-mapped); eval rows are
    dicts with ``messages``/``prompt`` decoded from JSON plus ``reference``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = _folder(path)
    manifest = PrepManifest.read(folder)
    shards = [folder / s for s in manifest.train.shards]
    tables = [pq.read_table(s, memory_map=True) for s in shards]
    train = pa.concat_tables(tables) if tables else pa.table({})
    evals: list[dict[str, Any]] = []
    for s in manifest.eval.shards:
        for rec in pq.read_table(folder / s).to_pylist():
            for k in ("messages", "prompt", "tools"):
                if rec.get(k) is not None:
                    rec[k] = json.loads(rec[k])
            evals.append(rec)
    return train, evals, manifest


def iter_train_rows(path: Any, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Stream train rows as dicts of lists, one shard batch at a time (bounded memory)."""
    import pyarrow.parquet as pq

    folder = _folder(path)
    for s in PrepManifest.read(folder).train.shards:
        for batch in pq.ParquetFile(folder / s).iter_batches(batch_size=batch_size):
            yield from batch.to_pylist()
