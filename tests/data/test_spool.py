"""The row spool: prep reads its rows back from disk a chunk at a time, so its memory is
bounded by a chunk, not the corpus, and rows, locations and drops stay what they were."""

from __future__ import annotations

import importlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ladle.data import io
from ladle.data.load import load_dataset
from ladle.data.spool import Rows, RowSpool
from ladle.recipe import load_recipe
from ladle.recipe.schema import DatasetSpec

prep_mod = importlib.import_module("ladle.data.prep")


def _conv(i: int, words: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"Question {i}: say it."},
            {"role": "assistant", "content": f"Answer {i}:" + " very" * words},
        ]
    }


def test_spool_reads_rows_in_any_order_with_their_locations(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    odd = {"messages": [{"role": "user", "content": "two\nlines\u2028and\x00 é"}]}
    # a row whose text holds newlines, a line separator and a NUL is still one line
    rows_a = [json.dumps(_conv(i, i % 3)) for i in range(5)] + ["{broken", json.dumps(odd)]
    a.write_text("\n".join(rows_a) + "\n")
    b = tmp_path / "b.json"
    b.write_text(json.dumps([{"text": "item one"}, {"text": ""}, {"text": "item three"}]))
    spec_a = DatasetSpec(path=str(a), format="messages")
    spec_b = DatasetSpec(path=str(b), format="text")
    with RowSpool(tmp_path / "rows.jsonl") as spool:
        da = load_dataset(spec_a, 0, sink=spool.sink(0))
        db = load_dataset(spec_b, 1, sink=spool.sink(1))
        spool.seal()
        ref_a = load_dataset(spec_a, 0, as_json=True)
        ref_b = load_dataset(spec_b, 1, as_json=True)
        rows, locs = ref_a.rows + ref_b.rows, ref_a.locations + ref_b.locations
        assert (da.kept, db.kept) == (6, 2) and len(spool) == 8
        assert (da.rows, da.locations) == ([], [])  # a sink takes the rows instead
        assert (da.rows_read, da.drops.to_json()) == (ref_a.rows_read, ref_a.drops.to_json())
        assert spool.ds.tolist() == [0] * 6 + [1] * 2
        every = Rows(spool, np.arange(8, dtype=np.int64))
        assert every.texts() == rows
        assert list(every.locations()) == locs
        assert locs[-2:] == [f"{b}[item 1]", f"{b}[item 3]"] and locs[5] == f"{a}:7"
        order = [7, 0, 1, 2, 2, 6, 3, 5]  # runs, repeats and jumps back
        assert every.subset(order).texts() == [rows[i] for i in order]
        picked = every.subset(order).locations(2, 5)
        assert list(picked) == [locs[1], locs[2], locs[2]]
        assert picked[-1] == locs[2] and list(picked[1:]) == [locs[2], locs[2]]
        parsed = every.subset([6, 5]).parsed()
        assert list(parsed) == [json.loads(rows[6]), json.loads(rows[5])]
        assert parsed[-1] == parsed[1] == odd
        with pytest.raises(IndexError):
            parsed[2]


def test_spool_keeps_line_numbers_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file read in many small blocks numbers its rows as one read would."""
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(_conv(i, 2)) if i % 7 else "{bad" for i in range(1, 60)]
    path.write_text("\n".join(lines) + "\n")
    spec = DatasetSpec(path=str(path), format="messages")
    ref = load_dataset(spec, as_json=True)
    monkeypatch.setattr(io, "BLOCK_BYTES", 256)
    with RowSpool(tmp_path / "rows.jsonl") as spool:
        got = load_dataset(spec, sink=spool.sink(0))
        spool.seal()
        every = Rows(spool, np.arange(len(spool), dtype=np.int64))
        assert every.texts() == ref.rows
        assert list(every.locations()) == ref.locations
    assert got.drops.to_json() == ref.drops.to_json()
    assert got.drops.first["malformed_json"][0].startswith(f"{path}:7: ")


def test_prep_holds_a_chunk_of_rows_not_the_corpus(
    tmp_path: Path,
    home: Path,
    smollm2_dir: Path,
    chat_tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python's peak allocations while prep loads and tokenizes a corpus hardly grow
    with the corpus when a chunk is small: its rows are never all held at once. (Held as
    JSON text plus a location string each, they would cost more than their bytes on
    disk.) The drops still name their rows' lines."""

    def recipe(name: str, rows: list[str]) -> tuple[Path, Path]:
        src = tmp_path / f"{name}.jsonl"
        src.write_text("\n".join(rows) + "\n")
        path = tmp_path / f"{name}.json"
        data = {"datasets": [{"path": str(src)}], "max_length": 512, "dedup": {"enabled": False}}
        path.write_text(
            json.dumps({"name": name, "model": {"base": str(smollm2_dir)}, "data": data})
        )
        return path, src

    def traced(path: Path) -> tuple[int, Any]:
        """Peak Python allocations up to packing (load and encode are done by then)."""
        peaks: list[int] = []

        def measured(*args: Any) -> Any:
            peaks.append(tracemalloc.get_traced_memory()[1])
            return plan_bins(*args)

        with monkeypatch.context() as m:
            m.setattr(prep_mod, "plan_bins", measured)
            tracemalloc.start()
            try:
                res = prep_mod.prep(load_recipe(path), tokenizer=chat_tokenizer, force=True)
            finally:
                tracemalloc.stop()
        (peak,) = peaks
        return peak, res

    plan_bins = prep_mod.plan_bins
    rows = [json.dumps(_conv(i, 300)) for i in range(4000)]
    rows[1234] = "{broken"
    small, small_src = recipe("small", rows[:1000])
    big, big_src = recipe("big", rows)
    prep_mod.prep(load_recipe(small), tokenizer=chat_tokenizer)  # imports and caches
    monkeypatch.setattr(prep_mod, "CHUNK_ROWS", 64)
    monkeypatch.setattr(io, "BLOCK_BYTES", 64 << 10)
    peak_small, _ = traced(small)
    peak_big, res = traced(big)
    more = big_src.stat().st_size - small_src.stat().st_size
    assert peak_big - peak_small < more / 8, (peak_small, peak_big, more)
    m = res.manifest.model_dump()
    assert m["train"]["examples"] == 3999
    assert m["drops"]["malformed_json"]["first"][0].startswith(f"{big_src}:1235: ")
    assert not (res.path / ".work").exists()
