"""The read stage of the Ray data engine (``ladle.data.ray_engine``).

Ray tasks parse line-aligned byte ranges of JSONL files (other files, and datasets with a
``limit``, whole) with the same Rust row normaliser as ``ladle.data.load``, into Arrow
blocks held in the object store. The driver receives per-block counts, the first bad rows
and line numbers (8 bytes a row), and merges them in file order, so drop counts and
``file:line`` locations equal the local engine's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ladle import _core
from ladle.data.load import FIRST_BAD, Drops, load_dataset
from ladle.errors import LadleError
from ladle.recipe.schema import DatasetSpec, Recipe

BLOCK_BYTES = 16 << 20  # JSONL bytes per read task


@dataclass(frozen=True)
class Block:
    """A unit of reading: a byte range of a JSONL file, or a whole file / dataset."""

    ds: int
    path: str
    start: int = 0
    end: int = 0
    whole: bool = False  # load_dataset on this file (or the dataset when it has a limit)


def plan_blocks(specs: list[DatasetSpec], files: list[list[Path]]) -> list[Block]:
    """Cut each JSONL file after a newline near every ``BLOCK_BYTES``; a few small reads."""
    out: list[Block] = []
    for i, (spec, group) in enumerate(zip(specs, files, strict=True)):
        if spec.limit is not None:  # a limit is a prefix: read it in order, in one task
            out.append(Block(i, "", whole=True))
            continue
        for f in group:
            if not f.name.endswith((".jsonl", ".ndjson")):
                out.append(Block(i, str(f), whole=True))
                continue
            size = f.stat().st_size
            cuts = [0]
            with open(f, "rb") as fh:
                pos = BLOCK_BYTES
                while pos < size:
                    fh.seek(pos)
                    tail = fh.read(1 << 16)
                    while b"\n" not in tail and tail:
                        more = fh.read(1 << 16)
                        tail += more
                        if not more:
                            break
                    nl = tail.find(b"\n")
                    if nl < 0:
                        break
                    cut = pos + nl + 1
                    if cut >= size:
                        break
                    cuts.append(cut)
                    pos = cut + BLOCK_BYTES
            cuts.append(size)
            out.extend(Block(i, str(f), a, b) for a, b in itertools.pairwise(cuts))
    return out


def _count_lines(blk: Block) -> int:
    with open(blk.path, "rb") as fh:
        fh.seek(blk.start)
        return fh.read(blk.end - blk.start).count(b"\n")


def _read_block(
    spec: DatasetSpec, blk: Block, number: int, strict: bool, offset: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Rows of one block as an Arrow table (``row``: JSON text, ``blk``: ``number``) and
    what the driver needs (counts, bad rows, line numbers)."""
    import pyarrow as pa

    def table(rows: list[str]) -> Any:
        return pa.table(
            {
                "row": pa.array(rows, pa.large_string()),
                "blk": pa.array(np.full(len(rows), number, dtype=np.int32)),
                "k": pa.array(np.arange(len(rows), dtype=np.int64)),
            }
        )

    if blk.whole:
        one = spec if not blk.path else spec.model_copy(update={"path": blk.path})
        d = load_dataset(one, blk.ds, strict=strict, as_json=True)
        meta = {"locs": d.locations, "drops": d.drops, "read": d.rows_read, "newlines": 0}
        return table(d.rows), meta
    with open(blk.path, "rb") as fh:
        fh.seek(blk.start)
        data = fh.read(blk.end - blk.start)
    rows, lines, counts, first = _core.normalize_rows(
        data,
        spec.format,
        columns=spec.columns or None,
        roles=spec.roles or None,
        system=spec.system,
        strict=strict,
        source=blk.path,
        unit="line",
        offset=offset,
        as_json=True,
    )
    meta = {
        "lines": np.asarray(lines, dtype=np.int64),
        "counts": counts,
        "first": first,
        "read": len(rows) + sum(counts.values()),
        "newlines": data.count(b"\n"),
    }
    return table(rows), meta


@dataclass
class ReadSplit:
    """What the driver knows of the read blocks of one split."""

    refs: list[Any] = field(default_factory=list)  # Arrow tables in the object store
    starts: list[int] = field(default_factory=lambda: [0])  # first g of each block
    ds: list[int] = field(default_factory=list)  # dataset of each block
    locs: list[Any] = field(default_factory=list)  # (path, first line, lines) or list[str]

    @property
    def n(self) -> int:
        return self.starts[-1]

    def block_of(self, gs: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.searchsorted(np.asarray(self.starts), gs, side="right") - 1

    def locate(self, gs: npt.NDArray[np.int64]) -> list[str]:
        out = []
        for g, b in zip(gs, self.block_of(gs), strict=True):
            loc, k = self.locs[b], int(g) - self.starts[b]
            out.append(loc[k] if isinstance(loc, list) else f"{loc[0]}:{loc[1] + int(loc[2][k])}")
        return out

    def ds_of(self, gs: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.asarray(self.ds, dtype=np.int64)[self.block_of(gs)]

    def dataset(self) -> Any:
        """Columns ``g`` (local-engine row index), ``ds`` and ``row``."""

        fn: Any = number_rows
        return self.blocks().map_batches(fn, fn_args=self.numbering(), batch_format="pyarrow")

    def blocks(self) -> Any:
        """The read blocks as they are (``row``, ``blk``, ``k``)."""
        import ray.data

        return ray.data.from_arrow_refs(self.refs) if self.refs else ray.data.from_items([])

    def numbering(self) -> tuple[Any, Any]:
        return np.asarray(self.starts[:-1], dtype=np.int64), np.asarray(self.ds, dtype=np.int64)


def number_rows(batch: Any, starts: Any, ds_arr: Any, want: Any = None) -> Any:
    """Block rows -> ``g``, ``ds``, ``row``; only the rows set in ``want`` when given."""
    import pyarrow as pa

    blk = batch.column("blk").to_numpy()
    g = starts[blk] + batch.column("k").to_numpy()
    table = pa.table({"g": pa.array(g), "ds": pa.array(ds_arr[blk]), "row": batch.column("row")})
    return table if want is None else table.filter(pa.array(want[g]))


def read_all(
    recipe: Recipe, files: list[list[Path]], report: Any
) -> tuple[ReadSplit, ReadSplit, dict[int, dict[str, Any]]]:
    """Read every dataset on the cluster; per-dataset stats as ``load_dataset`` gives them."""
    import ray

    specs = recipe.data.datasets
    blocks = plan_blocks(specs, files)
    task: Any = ray.remote(num_returns=2)(_read_block)
    is_eval = [specs[b.ds].split == "eval" for b in blocks]
    numbers = [sum(1 for e in is_eval[:i] if e == is_eval[i]) for i in range(len(blocks))]
    # Line numbers are counted per block and shifted on the driver, except in strict
    # mode: the first bad row's error is raised by a worker and must name its true line,
    # so the lines before each block are counted first (one more pass over the bytes).
    offsets = [0] * len(blocks)
    if recipe.data.strict:
        count: Any = ray.remote(_count_lines)
        ranged = [i for i, b in enumerate(blocks) if not b.whole]
        counts = gather([count.remote(blocks[i]) for i in ranged], "read", report)
        seen: dict[str, int] = {}
        for i, c in zip(ranged, counts, strict=True):
            offsets[i] = seen.get(blocks[i].path, 0)
            seen[blocks[i].path] = offsets[i] + c
    pending = [
        task.remote(specs[b.ds], b, k, recipe.data.strict, off)
        for b, k, off in zip(blocks, numbers, offsets, strict=True)
    ]
    metas = gather([m for _, m in pending], "read", report)
    stats: dict[int, dict[str, Any]] = {
        i: {"read": 0, "rows": 0, "drops": Drops()} for i in range(len(specs))
    }
    splits = {"train": ReadSplit(), "eval": ReadSplit()}
    lines_before: dict[str, int] = {}
    for blk, (table_ref, _), meta in zip(blocks, pending, metas, strict=True):
        st = stats[blk.ds]
        part = splits["eval" if specs[blk.ds].split == "eval" else "train"]
        st["read"] += meta["read"]
        if "locs" in meta:
            st["drops"].merge(meta["drops"])
            n, loc = len(meta["locs"]), meta["locs"]
        else:
            base = 0 if recipe.data.strict else lines_before.get(blk.path, 0)
            lines_before[blk.path] = base + meta["newlines"]
            drops: Drops = st["drops"]
            for reason, c in meta["counts"].items():
                drops.counts[reason] = drops.counts.get(reason, 0) + c
            for reason, line, fld, msg in meta["first"]:
                locs = drops.first.setdefault(reason, [])
                if len(locs) < FIRST_BAD:
                    locs.append(f"{blk.path}:{base + line}: {fld + ': ' if fld else ''}{msg}")
            n, loc = len(meta["lines"]), (blk.path, base, meta["lines"])
        st["rows"] += n
        # every block keeps its place (an empty one has the next block's start, and
        # ``block_of`` picks the last block starting at a row)
        part.refs.append(table_ref)
        part.ds.append(blk.ds)
        part.locs.append(loc)
        part.starts.append(part.starts[-1] + n)
    return splits["train"], splits["eval"], stats


def gather(refs: list[Any], stage: str, report: Any) -> list[Any]:
    """``ray.get`` with progress, and Ladle's own errors (bad rows in strict mode, a bad
    template) re-raised as themselves rather than wrapped in a Ray error."""
    import ray

    left, total = list(refs), len(refs)
    report(stage, 0, total)
    try:
        while left:
            _, left = ray.wait(left, num_returns=len(left), timeout=0.5)
            report(stage, total - len(left), total)
        return ray.get(refs)
    except Exception as e:
        raise ladle_cause(e) from e


def ladle_cause(e: BaseException) -> BaseException:
    from ray.exceptions import RayError

    seen: BaseException | None = e
    while seen is not None:
        # Ray's RayTaskError(DataError) is also a DataError, but its text is a traceback
        if isinstance(seen, LadleError) and not isinstance(seen, RayError):
            return seen
        # The Rust core's classes live in module "_core"; a worker that cannot import
        # that name pickles the class by value, so the copy is matched by name.
        core_cls = getattr(_core, type(seen).__name__, None)
        if (
            type(seen).__module__ == "_core"
            and isinstance(core_cls, type)
            and issubclass(core_cls, LadleError)
        ):
            return core_cls(*seen.args)
        cause = getattr(seen, "cause", None)
        seen = cause if isinstance(cause, BaseException) else seen.__cause__
    return e


__all__ = [
    "BLOCK_BYTES",
    "Block",
    "ReadSplit",
    "gather",
    "ladle_cause",
    "number_rows",
    "plan_blocks",
    "read_all",
]
