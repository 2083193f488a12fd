"""Prep's rows on disk: the normalised rows of a recipe spooled to one file and read
back a chunk at a time, so ``ladle prep``'s memory is bounded by a chunk, not the corpus.

Held as Python strings (plus a ``file:line`` string each), the rows of a 1M-row chat
corpus (1.2 GB of JSONL) took most of a 6.1 GB peak RSS. Here each row is one line of a
file in prep's work folder (JSON lines, as the Rust normaliser serialised them: compact
JSON escapes every newline), and what stays in memory per row is four numbers: where its
line ends, its dataset, its file and its line number (32 bytes). A location string is
built only for a row that is reported (a drop, an error).

Rows are read with ``os.pread``, not through a memory map: the file's pages then stay in
the page cache instead of this process's RSS.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, overload

import numpy as np
import numpy.typing as npt

from ladle.data import io
from ladle.data.load import RowSink

Index = npt.NDArray[np.int64]
PARSE_ROWS = 8192  # rows decoded at a time when a caller iterates parsed rows


class RowSpool:
    """An append-only file of normalised rows (JSON lines) with each row's dataset and
    origin. Fill it through :meth:`sink`, then :meth:`seal` it and read rows by index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: BinaryIO | None = open(path, "wb")  # noqa: SIM115 (closed by seal or close)
        self._fd = -1
        self._size = 0
        self._parts: list[tuple[Index, Index, Index, Index]] = []  # per block, until sealed
        self._origins: dict[tuple[str, str], int] = {}
        self.origins: list[tuple[str, str]] = []  # (file, unit) of each file index
        self.ends: Index = np.zeros(1, np.int64)  # row r is bytes ends[r]:ends[r + 1]
        self.ds: Index = np.zeros(0, np.int64)  # recipe dataset of each row
        self.file: Index = np.zeros(0, np.int64)  # index into origins
        self.line: Index = np.zeros(0, np.int64)  # 1-based line / item / row in its file

    def sink(self, ds: int) -> RowSink:
        """What ``load_dataset`` hands each block's rows to, for recipe dataset ``ds``."""

        def add(block: io.Block, buf: Any, ends: Any, lines: Any) -> None:
            if self._out is None:
                raise ValueError("the spool is sealed")
            origin = (block.source, block.unit)
            f = self._origins.setdefault(origin, len(self.origins))
            if f == len(self.origins):
                self.origins.append(origin)
            self._out.write(buf)
            n = len(lines)
            self._parts.append(
                (
                    np.asarray(ends, np.int64) + self._size,
                    np.full(n, ds, np.int64),
                    np.full(n, f, np.int64),
                    np.asarray(lines, np.int64),
                )
            )
            self._size += len(buf)

        return add

    def seal(self) -> None:
        """Done writing: the per-row arrays in one piece, the file open for reading."""
        if self._out is None:
            return
        self._out.close()
        self._out = None
        if self._parts:
            ends, ds, file, line = (np.concatenate(p) for p in zip(*self._parts, strict=True))
            self.ends = np.concatenate([[0], ends]).astype(np.int64)
            self.ds, self.file, self.line = ds, file, line
        self._parts = []
        self._fd = os.open(self.path, os.O_RDONLY)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RowSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.ends) - 1

    def location(self, row: int) -> str:
        """``file:N``, ``file[item N]`` or ``file[row N]`` of a row (``io.location``)."""
        source, unit = self.origins[int(self.file[row])]
        return io.location(source, unit, int(self.line[row]))

    def texts(self, rows: Index) -> list[str]:
        """The JSON text of ``rows`` (any order, repeats allowed), one read per run of
        consecutive rows. Each row is decoded on its own: most rows are ASCII, which
        decodes fastest, while one string of a whole run with a single CJK or Cyrillic
        character in it would be built wide and then split (4x slower, measured)."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return []
        cut = np.flatnonzero(np.diff(rows) != 1) + 1
        firsts = rows[np.concatenate([[0], cut])].tolist()
        lasts = rows[np.concatenate([cut - 1, [len(rows) - 1]])].tolist()
        out: list[str] = []
        for first, last in zip(firsts, lasts, strict=True):
            lo = int(self.ends[first])
            bounds = (self.ends[first : last + 2] - lo).tolist()
            data = self._read(lo, lo + bounds[-1])
            # each line without its newline
            out += [data[a : b - 1].decode() for a, b in itertools.pairwise(bounds)]
        return out

    def _read(self, lo: int, hi: int) -> bytes:
        parts = []
        while lo < hi:  # pread returns at most ~2 GiB at once
            got = os.pread(self._fd, hi - lo, lo)
            if not got:
                raise OSError(f"{self.path}: ends at byte {lo} of {hi}")
            parts.append(got)
            lo += len(got)
        return parts[0] if len(parts) == 1 else b"".join(parts)


@dataclass
class Rows:
    """One split's rows, in split order: rows ``idx`` of a sealed :class:`RowSpool`
    (a weight above 1 repeats an index). Subsets are index arithmetic."""

    spool: RowSpool
    idx: Index

    def __len__(self) -> int:
        return len(self.idx)

    @property
    def ds(self) -> Index:
        """The recipe dataset of each row."""
        return self.spool.ds[self.idx]

    def texts(self, a: int = 0, b: int | None = None) -> list[str]:
        """Rows ``a:b`` as JSON text."""
        return self.spool.texts(self.idx[a:b])

    def locations(self, a: int = 0, b: int | None = None) -> Locations:
        """Rows ``a:b``'s locations, each built when it is read."""
        return Locations(self.spool, self.idx[a:b])

    def parsed(self) -> Parsed:
        """Every row as the loader's dict, parsed a chunk at a time as it is iterated."""
        return Parsed(self)

    def subset(self, pos: Sequence[int] | Index) -> Rows:
        """The rows at positions ``pos`` of this split, in that order."""
        return Rows(self.spool, self.idx[np.asarray(pos, np.int64)])


class Locations(Sequence[str]):
    """``file:line`` of some spooled rows, built on access (most are never read)."""

    def __init__(self, spool: RowSpool, idx: Index) -> None:
        self._spool, self._idx = spool, idx

    def __len__(self) -> int:
        return len(self._idx)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Locations: ...
    def __getitem__(self, i: int | slice) -> str | Locations:
        if isinstance(i, slice):
            return Locations(self._spool, self._idx[i])
        return self._spool.location(int(self._idx[i]))


class Parsed(Sequence[Any]):
    """A split's rows as dicts for a whole-split pass (dedup): iterating parses
    ``PARSE_ROWS`` rows at a time, so only the caller's own results pile up."""

    def __init__(self, rows: Rows) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Any]:
        for a in range(0, len(self._rows), PARSE_ROWS):
            yield from (json.loads(t) for t in self._rows.texts(a, a + PARSE_ROWS))

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [json.loads(t) for t in self._rows.spool.texts(self._rows.idx[i])]
        j = i + len(self) if i < 0 else i
        if not 0 <= j < len(self):
            raise IndexError(i)
        return json.loads(self._rows.texts(j, j + 1)[0])


__all__ = ["Locations", "Parsed", "RowSpool", "Rows"]
