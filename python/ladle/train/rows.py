"""Prepared rows as flat token arrays, and the deterministic plan of optimizer steps.

Rows arrive as a pyarrow Table (or anything that converts to one). Each token column is
kept as one flat numpy array plus offsets, so a micro-batch is a few ``np.concatenate``
calls instead of millions of Python lists.

The plan of the whole run (which rows form which micro-batch, on which rank, at which
step) is a pure function of the row lengths, the recipe and the seed. That is what makes
resume exact (the data position is just a step number), keeps DDP ranks disjoint without
a sampler, and lets the loss be normalised by the step's global token count without a
collective: every rank computes the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ladle._core import IGNORE_INDEX
from ladle.errors import TrainError

SFT_COLUMNS = ("input_ids", "labels")
DPO_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")  # and ORPO
KTO_COLUMNS = ("prompt_input_ids", "completion_input_ids")  # plus a boolean `label`


def to_table(rows: Any) -> pa.Table:
    """Accept a pyarrow Table, a list of dicts, a polars frame, a `datasets.Dataset`, a
    ``ladle prep`` result or folder, or a Parquet file / folder of Parquet files."""
    if isinstance(rows, pa.Table):
        return rows
    if hasattr(rows, "manifest") and hasattr(rows, "path"):  # ladle.data.PrepResult
        from ladle.data import load_prepared

        return load_prepared(rows)[0]
    if isinstance(rows, (str, Path)):
        return _load_path(Path(rows))
    if isinstance(rows, list):
        return pa.Table.from_pylist(rows)
    if hasattr(rows, "to_arrow"):  # polars
        return rows.to_arrow()
    data = getattr(rows, "data", None)  # datasets.Dataset -> its arrow table
    if data is not None and hasattr(data, "table"):
        return data.table
    raise TrainError(f"cannot read training rows from {type(rows).__name__}")


def _load_path(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    if (path / "manifest.json").is_file():  # a `ladle prep` folder: its train split
        from ladle.data import load_prepared

        return load_prepared(path)[0]
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise TrainError(f"{path} is neither a `ladle prep` folder nor holds .parquet files")
        return pa.concat_tables([pq.read_table(f) for f in files])
    if not path.is_file():
        raise TrainError(f"prepared data {path} not found")
    return pq.read_table(path)


class TokenTable:
    """Token-list columns as flat int64 arrays with offsets; row ``i`` is a slice view."""

    def __init__(self, table: pa.Table, columns: Sequence[str]) -> None:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise TrainError(f"training rows lack column(s) {missing}; found {table.column_names}")
        self.n = table.num_rows
        self._flat: dict[str, np.ndarray] = {}
        self._off: dict[str, np.ndarray] = {}
        for c in columns:
            arr = table.column(c).combine_chunks()
            if arr.null_count:
                raise TrainError(f"column {c!r} has {arr.null_count} null rows")
            self._off[c] = np.asarray(arr.offsets, dtype=np.int64)
            self._flat[c] = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.int64)

    def get(self, col: str, i: int) -> np.ndarray:
        off = self._off[col]
        return self._flat[col][off[i] : off[i + 1]]

    def lengths(self, col: str) -> np.ndarray:
        return np.diff(self._off[col])

    def segment(self, col: str) -> tuple[np.ndarray, np.ndarray]:
        """All rows of ``col`` as one contiguous array, and offsets relative to it."""
        off = self._off[col]
        return self._flat[col][off[0] : off[-1]], off - off[0]

    def fingerprint(self) -> str:
        """xxh3-128 of the token columns' values and row boundaries: the same rows give the
        same fingerprint whether they came from Parquet, a list of dicts or a frame."""
        from ladle._core import fingerprint_bytes

        parts = []
        for col in sorted(self._flat):
            values, rel = self.segment(col)
            parts += [col.encode(), rel.astype("<i8").tobytes(), values.astype("<i8").tobytes()]
        return fingerprint_bytes(b"\0".join(parts))

    def has(self, col: str) -> bool:
        return col in self._flat

    def add(self, col: str, flat: np.ndarray, offsets: np.ndarray) -> None:
        self._flat[col] = flat
        self._off[col] = offsets


def sft_table(table: pa.Table) -> TokenTable:
    """Validate SFT rows and fill in ``position_ids`` when only ``seq_lengths`` (or nothing:
    one document per row) is given."""
    cols = [*SFT_COLUMNS] + [c for c in ("position_ids",) if c in table.column_names]
    tt = TokenTable(table, cols)
    n_ids = tt.lengths("input_ids")
    if not np.array_equal(n_ids, tt.lengths("labels")):
        bad = int(np.nonzero(n_ids != tt.lengths("labels"))[0][0])
        raise TrainError(f"row {bad}: labels and input_ids differ in length")
    if not tt.has("position_ids"):
        seq = (
            table.column("seq_lengths").to_pylist() if "seq_lengths" in table.column_names else None
        )
        pos: list[np.ndarray] = []
        for i, n in enumerate(n_ids.tolist()):
            docs = seq[i] if seq is not None else [n]
            if sum(docs) != n:
                raise TrainError(f"row {i}: seq_lengths sum to {sum(docs)}, row has {n} tokens")
            pos.extend(np.arange(d) for d in docs)
        flat = np.concatenate(pos).astype(np.int64) if pos else np.zeros(0, dtype=np.int64)
        _, rel = tt.segment("input_ids")
        tt.add("position_ids", flat, rel)
    elif not np.array_equal(n_ids, tt.lengths("position_ids")):
        raise TrainError("position_ids and input_ids differ in length")
    if (n_ids == 0).any():
        raise TrainError(f"row {int(np.nonzero(n_ids == 0)[0][0])} is empty")
    return tt


def sft_loss_tokens(tt: TokenTable) -> np.ndarray:
    """Tokens per row that carry loss: labelled, and not a document start (a document's
    first token would be predicted from the previous document, so it never trains)."""
    labels, rel = tt.segment("labels")
    pos, _ = tt.segment("position_ids")
    trained = ((labels != IGNORE_INDEX) & (pos != 0)).astype(np.int64)
    csum = np.concatenate([[0], np.cumsum(trained)])
    return csum[rel[1:]] - csum[rel[:-1]]


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class MicroBatch:
    rows: tuple[int, ...]
    tokens: int  # real (unpadded) input tokens
    units: int  # what the loss is averaged over: trained tokens (SFT) or pairs (DPO)


@dataclass(frozen=True)
class Step:
    epoch: int
    shards: tuple[tuple[MicroBatch, ...], ...]  # one tuple of micro-batches per rank

    @property
    def units(self) -> int:
        return sum(mb.units for shard in self.shards for mb in shard)

    @property
    def tokens(self) -> int:
        return sum(mb.tokens for shard in self.shards for mb in shard)


def group_packed(
    order: np.ndarray, lengths: np.ndarray, budget: int, stack: bool = False
) -> list[list[int]]:
    """Consecutive rows grouped while the micro-batch stays within ``budget`` tokens:
    their sum when concatenated, rows x the longest when stacked (padding is computed)."""
    groups: list[list[int]] = []
    cur: list[int] = []
    used = longest = 0
    for i in order.tolist():
        n = int(lengths[i])
        if n > budget:
            raise TrainError(
                f"row {i} has {n} tokens, more than train.micro_batch_tokens={budget}; "
                "raise it or re-run `ladle prep` with a smaller data.max_length"
            )
        size = (len(cur) + 1) * max(longest, n) if stack else used + n
        if cur and size > budget:
            groups.append(cur)
            cur, used, longest = [], 0, 0
        cur.append(i)
        used += n
        longest = max(longest, n)
    if cur:
        groups.append(cur)
    return groups


def group_fixed(order: np.ndarray, size: int) -> list[list[int]]:
    rows = order.tolist()
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def plan_steps(
    *,
    lengths: np.ndarray,
    units: np.ndarray,
    packed: bool,
    micro_batch_tokens: int,
    micro_batch_size: int,
    grad_accum: int,
    world_size: int,
    epochs: float,
    max_steps: int | None,
    seed: int,
    shuffle: bool,
    drop_tail: bool = True,
    stack_rows: bool = False,
) -> list[Step]:
    """Every optimizer step of the run, for every rank.

    Rows are shuffled per epoch with a generator seeded by ``(seed, epoch)``; micro-batches
    are dealt round-robin to ranks, ``grad_accum`` per rank per step. An epoch's tail that
    cannot give every rank a micro-batch is dropped (DDP ranks must run the same number of
    backward passes or they deadlock); at one process nothing is dropped. Evaluation
    (``drop_tail=False``) keeps every row: ranks may then hold unequal shares.
    ``stack_rows``: packed rows are stacked ``[B, L]`` (see ``PackedSFT``), so the budget
    counts the padding too.
    """
    n = len(lengths)
    if n == 0:
        return []
    per_step = grad_accum * world_size
    steps: list[Step] = []
    limit = max_steps if max_steps is not None else None
    n_epochs = math.ceil(epochs) if limit is None else 1 << 30
    for epoch in range(n_epochs):
        if limit is not None and len(steps) >= limit:
            break
        order = np.arange(n)
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(n)
        groups = (
            group_packed(order, lengths, micro_batch_tokens, stack_rows)
            if packed
            else group_fixed(order, micro_batch_size)
        )
        if drop_tail:
            groups = groups[: len(groups) // world_size * world_size]
        if not groups:
            raise TrainError(f"{n} rows make fewer micro-batches than the {world_size} processes")
        mbs = [MicroBatch(tuple(g), int(lengths[g].sum()), int(units[g].sum())) for g in groups]
        epoch_steps = [
            Step(epoch, tuple(tuple(chunk[r::world_size]) for r in range(world_size)))
            for chunk in (mbs[i : i + per_step] for i in range(0, len(mbs), per_step))
        ]
        if limit is None and epoch == n_epochs - 1 and epochs != n_epochs:
            frac = epochs - math.floor(epochs)
            epoch_steps = epoch_steps[: max(1, round(frac * len(epoch_steps)))]
        steps.extend(epoch_steps)
    return steps[:limit] if limit is not None else steps
