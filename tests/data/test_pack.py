"""Packing: invariants as property tests, and efficiency against TRL-style batching."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ladle.data import IGNORE_INDEX, assemble, pack
from ladle.data.packing import assemble_files
from ladle.errors import LadleError

lengths_st = st.lists(st.integers(min_value=1, max_value=128), max_size=400)


def _check_bins(lengths: list[int], bins: list[list[int]], cap: int) -> None:
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(len(lengths))), "every index exactly once"
    assert all(b for b in bins), "no empty bin"
    assert all(sum(lengths[i] for i in b) <= cap for b in bins), "no bin over capacity"


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, seed=st.integers(0, 2**32), strategy=st.sampled_from(["bfd", "ffd"]))
def test_pack_invariants(lengths: list[int], seed: int, strategy: str) -> None:
    bins = pack(lengths, 128, strategy, seed)  # type: ignore[arg-type]
    _check_bins(lengths, bins, 128)
    assert bins == pack(lengths, 128, strategy, seed)  # type: ignore[arg-type]
    # At most one bin is half empty or worse in any any-fit packing.
    lower = -(-sum(lengths) // 128)
    assert lower <= len(bins) <= 2 * lower + 1


@settings(max_examples=20, deadline=None)
@given(lengths=lengths_st.filter(lambda x: len(x) > 5), seed=st.integers(0, 1000))
def test_seed_shuffles_rows_not_contents(lengths: list[int], seed: int) -> None:
    a = pack(lengths, 128, "bfd", seed)
    b = pack(lengths, 128, "bfd", seed + 1)
    assert sorted(map(tuple, a)) == sorted(map(tuple, b))


def _bfd_per_batch(lengths: list[int], cap: int, batch: int = 1000) -> int:
    """TRL's pack_dataset packs inside datasets.map batches: bins never span batches."""
    return sum(len(pack(lengths[a : a + batch], cap)) for a in range(0, len(lengths), batch))


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=512), min_size=1001, max_size=3000),
    seed=st.integers(0, 100),
)
def test_whole_dataset_bfd_beats_per_1000_batches(lengths: list[int], seed: int) -> None:
    assert len(pack(lengths, 512, "bfd", seed)) <= _bfd_per_batch(lengths, 512)


def test_bfd_vs_trl_pack_dataset() -> None:
    """Same long-tailed lengths through TRL's own pack_dataset: we need no more rows."""
    datasets = pytest.importorskip("datasets")
    trl_utils = pytest.importorskip("trl.data_utils")
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5.5, 0.9, 5000).astype(int), 1, 2048)
    ds = datasets.Dataset.from_dict({"input_ids": [[1] * int(n) for n in lengths]})
    trl_rows = len(trl_utils.pack_dataset(ds, 2048, strategy="bfd"))
    ours = pack(lengths, 2048, "bfd", 0)
    _check_bins(lengths.tolist(), ours, 2048)
    assert len(ours) <= trl_rows
    assert len(ours) >= -(-int(lengths.sum()) // 2048)


def test_pack_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError, match="lengths must be in"):
        pack([3, 0], 8)
    with pytest.raises(ValueError, match="lengths must be in"):
        pack([9], 8)
    with pytest.raises(ValueError, match="unknown packing strategy"):
        pack([1], 8, "nope")  # type: ignore[arg-type]
    assert pack([], 8) == []


@st.composite
def documents(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    cap = draw(st.integers(8, 64))
    n = draw(st.integers(0, 40))
    ids, labels = [], []
    for d in range(n):
        length = draw(st.integers(1, cap))
        mask = draw(st.lists(st.booleans(), min_size=length, max_size=length))
        # Token value encodes (document, position), so every token is traceable.
        tok = np.array([d * 1000 + p for p in range(length)], np.int32)
        ids.append(tok)
        labels.append(np.where(mask, tok, IGNORE_INDEX).astype(np.int32))
    return ids, labels, cap


@settings(max_examples=60, deadline=None)
@given(docs=documents(), strategy=st.sampled_from(["bfd", "ffd"]), seed=st.integers(0, 99))
def test_packed_rows_layout(
    docs: tuple[list[np.ndarray], list[np.ndarray], int], strategy: str, seed: int
) -> None:
    ids, labels, cap = docs
    lengths = [len(x) for x in ids]
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat_ids = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    flat_lab = np.concatenate(labels) if labels else np.zeros(0, np.int32)
    bins = pack(lengths, cap, strategy, seed)  # type: ignore[arg-type]
    p = assemble(flat_ids, flat_lab, offsets, bins)
    ro, so = p["row_offsets"], p["seq_offsets"]
    trained_seen: list[int] = []
    for r in range(len(bins)):
        row_ids = p["input_ids"][ro[r] : ro[r + 1]]
        row_lab = p["labels"][ro[r] : ro[r + 1]]
        pos = p["position_ids"][ro[r] : ro[r + 1]]
        seqs = p["seq_lengths"][so[r] : so[r + 1]]
        assert len(row_ids) <= cap
        assert int(seqs.sum()) == len(row_ids)
        starts = np.flatnonzero(pos == 0)
        assert list(np.diff(np.append(starts, len(pos)))) == list(seqs)  # restart per doc
        assert np.all(row_lab[starts] == IGNORE_INDEX)  # no loss across documents
        for a, n in zip(starts, seqs, strict=True):
            assert list(pos[a : a + n]) == list(range(n))
        trained_seen.extend(int(x) for x in row_lab[row_lab != IGNORE_INDEX])
    # Every trained token (except each document's first) appears exactly once.
    expected = [int(t) for lab in labels for t in lab[1:] if t != IGNORE_INDEX]
    assert sorted(trained_seen) == sorted(expected)


@settings(max_examples=30, deadline=None)
@given(docs=documents(), seed=st.integers(0, 99))
def test_assemble_files_equals_assemble(
    docs: tuple[list[np.ndarray], list[np.ndarray], int], seed: int
) -> None:
    """prep gathers each shard from its token files (pread), not from arrays in memory:
    the same rows, to the byte."""
    ids, labels, cap = docs
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    flat_ids = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    flat_lab = np.concatenate(labels) if labels else np.zeros(0, np.int32)
    bins = pack([len(x) for x in ids], cap, "bfd", seed)
    want = assemble(flat_ids, flat_lab, offsets, bins)
    with tempfile.TemporaryDirectory() as d:
        ids_path, lab_path = Path(d) / "ids.bin", Path(d) / "labels.bin"
        ids_path.write_bytes(flat_ids.tobytes())
        lab_path.write_bytes(flat_lab.tobytes())
        got = assemble_files(ids_path, lab_path, offsets, bins)
    assert want.keys() == got.keys()
    for k in want:
        assert want[k].dtype == got[k].dtype and np.array_equal(want[k], got[k]), k


def test_assemble_files_refuses_offsets_past_the_files(tmp_path: Path) -> None:
    ids = np.arange(10, dtype=np.int32)
    (tmp_path / "ids.bin").write_bytes(ids.tobytes())
    (tmp_path / "labels.bin").write_bytes(ids.tobytes())
    with pytest.raises(LadleError, match="only 10 ids"):
        assemble_files(tmp_path / "ids.bin", tmp_path / "labels.bin", np.array([0, 11]), [[0]])
    with pytest.raises(LadleError, match=r"missing\.bin: "):
        assemble_files(tmp_path / "missing.bin", tmp_path / "labels.bin", np.array([0, 1]), [[0]])
