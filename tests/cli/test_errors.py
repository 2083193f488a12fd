"""The error boundary: every error that crosses from Rust is a member of Ladle's one
exception family, bad option strings are one kind of error, and no input reaches a
Rust panic (a ``PanicException``, which is not even an ``Exception``)."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ladle import _core, errors
from ladle.errors import ArgumentError, FileError, LadleError

# ----------------------------------------------------------------------------- family


def test_one_family_exported_by_ladle_errors() -> None:
    assert errors.LadleError is _core.LadleError
    assert not hasattr(_core, "LadleCoreError") and not hasattr(errors, "LadleCoreError")
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, LadleError), name
    assert issubclass(ArgumentError, ValueError) and issubclass(FileError, OSError)
    assert ArgumentError.__module__ == FileError.__module__ == "ladle._core"


def test_io_error_is_a_file_error() -> None:
    with pytest.raises(FileError, match="/no/such/file") as e:
        _core.fingerprint_files(["/no/such/file"])
    assert isinstance(e.value, OSError) and isinstance(e.value, LadleError)


# (call, the name the message must carry) for every string option the core parses.
BAD_OPTIONS = [
    (lambda: _core.pack(np.array([1], np.int64), 4, "best"), "packing strategy"),
    (lambda: _core.normalize_rows(b"{}", "chatml"), "data format"),
    (lambda: _core.dedup_permutations(8, 1, "minhash"), "MinHash scheme"),
    (lambda: _core.dedup_minhash(["a"], scheme="x"), "MinHash scheme"),
    (lambda: _core.dedup_run(["a"], {"keep": "last"}), "keep policy"),
    (lambda: _core.dedup_run(["a"], {"scheme": "x"}), "MinHash scheme"),
    (lambda: _core.nf4_quantize(np.zeros(256, np.uint8), "int8"), "dtype"),
    (lambda: _core.nf4_quantize(np.zeros(256, np.uint8), "float32", 64, "nf8"), "quant_type"),
    (lambda: _core.nf4_quant_state_json("nf4", 64, "f64", [64]), "dtype"),
    (lambda: _core.nf4_convert_checkpoint([], [], dtype="half"), "dtype"),
]


@pytest.mark.parametrize("call,what", BAD_OPTIONS)
def test_bad_option_strings_are_argument_errors(call, what: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ArgumentError, match=rf"unknown {what} .*; expected one of "):
        call()


def test_option_of_the_wrong_type_is_an_argument_error() -> None:
    with pytest.raises(ArgumentError, match="must be a string"):
        _core.pack(np.array([1], np.int64), 4, 3)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- dedup_run


def test_dedup_run_options_default_and_refuse_unknown_keys() -> None:
    texts = ["one two three four five six", "one two three four five six", "other words"]
    out = _core.dedup_run(texts, {})
    assert out.keep.tolist() == [True, False, True]
    stats = out.stats
    assert (stats.rows_in, stats.rows_out, stats.exact_removed) == (3, 2, 1)
    # 128 permutations at threshold 0.8, verified: the default band layout.
    assert (stats.bands, stats.rows_per_band) == (14, 9)
    assert stats.to_dict()["rows_out"] == 2 and len(stats.to_dict()) == 11
    assert out.pairs.removed.tolist() == [1] and out.pairs.kept.tolist() == [0]
    assert out.contaminated.removed.tolist() == []
    with pytest.raises(ArgumentError, match="unknown field `thresold`"):
        _core.dedup_run(texts, {"thresold": 0.5})
    with pytest.raises(ArgumentError, match="dedup options"):
        _core.dedup_run(texts, {"num_perm": -1})


@pytest.mark.parametrize(
    "options,match",
    [
        ({"ngram": 0}, "ngram"),
        ({"num_perm": 0}, "num_perm"),
        ({"num_perm": 1 << 40}, "num_perm"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"bands": (1 << 40, 1 << 40)}, "bands x rows"),
        ({"lsh_weights": (float("nan"), 0.5)}, "weights"),
        ({"lsh_weights": (0.0, 0.0)}, "weights"),
    ],
)
def test_dedup_run_bad_numbers_are_argument_errors(options: dict, match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        _core.dedup_run(["a b c", "a b c d"], options)


@pytest.mark.parametrize(
    "flag,value,message",
    [
        # The CLI takes its bounds from DedupSpec (the recipe's rules), so a bad value is
        # refused there, naming the option, before it reaches the core.
        ("--ngram", "0", "dedup option ngram: Input should be greater than or equal to 1"),
        ("--num-perm", "0", "dedup option num_perm: Input should be greater than or equal to 16"),
        ("--num-perm", "100000000", "dedup option num_perm: Input should be less than or equal"),
    ],
)
def test_cli_dedup_bad_option_is_one_line_exit_2(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "hello there"}\n{"text": "hello there"}\n')
    out = tmp_path / "o.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "ladle.cli", "dedup", str(src), "--out", str(out), flag, value],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


# ----------------------------------------------------------------------------- packing


def _packed_inputs(lengths: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.arange(int(offsets[-1]), dtype=np.int32)
    return ids, ids.copy(), offsets


@pytest.mark.parametrize(
    "offsets,match",
    [
        ([0, 4, 2, 6], "must not decrease"),
        ([-3, 2, 6], "non-negative"),
        ([0, 3, 60], "only 6 ids"),
        ([0, 3, -1], "must not decrease"),
    ],
)
def test_assemble_packed_refuses_bad_offsets(offsets: list[int], match: str) -> None:
    ids = np.arange(6, dtype=np.int32)
    with pytest.raises(ArgumentError, match=match):
        _core.assemble_packed(ids, ids.copy(), np.array(offsets, np.int64), [[0, 1]])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_ids=st.integers(0, 40),
    offsets=st.lists(st.integers(-50, 60), max_size=8),
    bins=st.lists(st.lists(st.integers(0, 10), max_size=4), max_size=4),
    n_labels=st.integers(0, 40),
)
def test_assemble_packed_never_panics(
    n_ids: int, offsets: list[int], bins: list[list[int]], n_labels: int
) -> None:
    ids = np.arange(n_ids, dtype=np.int32)
    labels = np.arange(n_labels, dtype=np.int32)
    off = np.array(offsets, np.int64)
    valid = (
        n_ids == n_labels
        and (len(offsets) == 0 or offsets[0] >= 0)
        and all(a <= b for a, b in itertools.pairwise(offsets))
        and (len(offsets) == 0 or offsets[-1] <= n_ids)
        and all(d < len(offsets) - 1 for b in bins for d in b)
    )
    try:
        out = _core.assemble_packed(ids, labels, off, bins)
    except ArgumentError:
        assert not valid
        return
    assert valid
    input_ids, _, positions, row_offsets, seq_lengths, _ = out
    want = sum(offsets[d + 1] - offsets[d] for b in bins for d in b)
    assert len(input_ids) == len(positions) == want == row_offsets[-1]
    assert int(seq_lengths.sum()) == want


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=30), seed=st.integers(0, 2**64 - 1)
)
def test_pack_then_assemble_keeps_every_token(lengths: list[int], seed: int) -> None:
    bins = _core.pack(np.array(lengths, np.int64), 32, "ffd", seed)
    ids, labels, offsets = _packed_inputs(lengths)
    input_ids, _, _, row_offsets, _, _ = _core.assemble_packed(ids, labels, offsets, bins)
    assert sorted(input_ids.tolist()) == ids.tolist()
    assert np.all(np.diff(row_offsets) <= 32)


# ----------------------------------------------------------------------------- no panics

# Values chosen to hit the places a Rust function can panic: zero, huge, negative where
# the type allows it, and sizes that overflow when multiplied.
SIZES = st.sampled_from([0, 1, 3, 64, 255, 1 << 20, (1 << 63) - 1, (1 << 64) - 1])
FLOATS = st.sampled_from([0.0, 1e-300, 0.5, 1.0, 2.0, -1.0, float("nan"), float("inf")])


def _no_panic(call) -> None:  # type: ignore[no-untyped-def]
    """The call returns, or raises a Ladle error or a conversion error from PyO3 (an
    argument Python cannot even represent in the Rust type); never a panic."""
    with contextlib.suppress(LadleError, OverflowError, TypeError):
        call()


@settings(max_examples=150, deadline=None)
@given(a=SIZES, b=SIZES, f=FLOATS, g=FLOATS)
def test_pyfunctions_do_not_panic_on_extreme_numbers(a: int, b: int, f: float, g: float) -> None:
    data = np.zeros(min(a, 4096), np.uint8)
    _no_panic(lambda: _core.pack(np.array([min(a, 1 << 62)], np.int64), b))
    _no_panic(lambda: _core.dedup_permutations(min(a, 1 << 17), b & 0xFFFFFFFF))
    _no_panic(lambda: _core.dedup_minhash(["a b c"], num_perm=min(a, 1 << 17), ngram=b))
    _no_panic(lambda: _core.dedup_optimal_params(f, min(a, 1 << 17), g, f))
    _no_panic(lambda: _core.dedup_run(["x y", "x y z"], {"ngram": a, "bands": (a, b)}))
    _no_panic(lambda: _core.dedup_run(["x y"], {"threshold": f, "lsh_weights": (f, g)}))
    _no_panic(lambda: _core.nf4_quantize(data, "float32", a, "nf4", True, b, a))
    _no_panic(lambda: _core.nf4_torch_sum(np.ones(8, np.float32), a, b))
    _no_panic(lambda: _core.nf4_quant_state_json("fp4", a, "bfloat16", [a, b], g))


def test_thread_count_is_bounded_before_allocating() -> None:
    # One float per emulated thread: an absurd count must not reach the allocator.
    with pytest.raises(ArgumentError, match="threads"):
        _core.nf4_torch_sum(np.ones(1 << 16, np.float32), 16, 1 << 40)


def test_non_contiguous_array_is_an_argument_error() -> None:
    ids = np.arange(12, dtype=np.int32)[::2]
    with pytest.raises(ArgumentError, match="contiguous"):
        _core.assemble_packed(ids, ids.copy(), np.array([0, 6], np.int64), [[0]])


def test_ignore_index_is_torch_default() -> None:
    torch = pytest.importorskip("torch")
    assert _core.IGNORE_INDEX == torch.nn.CrossEntropyLoss().ignore_index == -100
