"""Sequence packing, the Python face of ``rust/src/pack.rs``.

``pack`` assigns documents to rows; ``assemble`` concatenates their tokens into the
padding-free layout transformers expects (``position_ids`` restarting at 0 for each
document, first label of each document ignored). See ../shared/docs/reference-formats.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from ladle import _core

# the flat arrays of a packed shard, as both assemble functions return them
_KEYS = ("input_ids", "labels", "position_ids", "row_offsets", "seq_lengths", "seq_offsets")


def pack(
    lengths: Sequence[int] | npt.NDArray[np.integer],
    max_length: int,
    strategy: Literal["bfd", "ffd"] = "bfd",
    seed: int = 0,
) -> list[list[int]]:
    """Pack documents of ``lengths`` tokens into rows of at most ``max_length`` tokens.

    ``bfd`` (best-fit decreasing) and ``ffd`` (first-fit decreasing) both run over the
    whole input in O(n log n), so no row is cut short at an arbitrary batch edge.
    Returns the document indices of each row; the row order is shuffled by ``seed``
    (the same input and seed always give the same rows). Every length must be in
    ``1..=max_length``: drop, truncate or split longer documents first.
    """
    if max_length < 1:
        raise ValueError("max_length must be positive")
    arr = np.ascontiguousarray(np.asarray(lengths, dtype=np.int64))
    if arr.ndim != 1:
        raise ValueError("lengths must be one-dimensional")
    return _core.pack(arr, int(max_length), strategy, int(seed) & (2**64 - 1))


def assemble(
    ids: npt.NDArray[np.int32],
    labels: npt.NDArray[np.int32],
    offsets: npt.NDArray[np.int64],
    bins: list[list[int]],
) -> dict[str, npt.NDArray[np.int32] | npt.NDArray[np.int64]]:
    """Concatenate documents (``ids[offsets[d]:offsets[d+1]]``) into the rows of ``bins``.

    Returns flat arrays: ``input_ids``, ``labels``, ``position_ids`` (split by
    ``row_offsets``) and ``seq_lengths`` (split by ``seq_offsets``).
    """
    out = _core.assemble_packed(
        np.ascontiguousarray(ids, dtype=np.int32),
        np.ascontiguousarray(labels, dtype=np.int32),
        np.ascontiguousarray(offsets, dtype=np.int64),
        bins,
    )
    return dict(zip(_KEYS, out, strict=True))


def assemble_files(
    ids_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    offsets: npt.NDArray[np.int64],
    bins: list[list[int]],
) -> dict[str, npt.NDArray[np.int32] | npt.NDArray[np.int64]]:
    """``assemble`` with the tokens in two files of native-endian int32 (as
    ``ndarray.tobytes`` writes them), read document by document, so that only the rows
    built are in memory, however large the files (``ladle prep``'s token spool)."""
    out = _core.assemble_packed_files(
        ids_path, labels_path, np.ascontiguousarray(offsets, dtype=np.int64), bins
    )
    return dict(zip(_KEYS, out, strict=True))
