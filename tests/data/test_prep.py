"""prep: packed rows are correct to the token, the cache is content-addressed and atomic.

``chat_tokenizer`` is the real Rust ChatTokenizer; tests/_chat_reference.py is a
transformers-based reference with the same signature, used to check that prep's
output equals the usual pipeline's ids and masks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ladle.data import IGNORE_INDEX, load_prepared, prep
from ladle.errors import DataError
from ladle.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# `ladle.data.prep` the attribute is the function; the module is in sys.modules.
prep_mod = importlib.import_module("ladle.data.prep")


def conv(i: int, turns: int = 1, long: int = 0) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": f"You are assistant number {i}."}]
    for t in range(turns):
        msgs.append({"role": "user", "content": f"Question {i}.{t}: what is {i} plus {t}?"})
        msgs.append({"role": "assistant", "content": f"It is {i + t}." + " very" * long})
    return {"messages": msgs}


def write_recipe(tmp: Path, smollm2_dir: Path, datasets: list[dict[str, Any]], **data: Any) -> Path:
    body = {
        "name": "t",
        "model": {"base": str(smollm2_dir)},
        "data": {"datasets": datasets, "max_length": 256, "dedup": {"enabled": False}, **data},
    }
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def jsonl(path: Path, rows: list[Any]) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def run_prep(recipe_path: Path, tok: Any, *overrides: str, force: bool = False) -> Any:
    return prep(load_recipe(recipe_path, list(overrides)), tokenizer=tok, force=force)


def rows_of(result: Any) -> list[dict[str, Any]]:
    train, _, _ = load_prepared(result)
    return train.to_pylist()


def test_packed_rows_match_encoded_examples(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    examples = [conv(i, turns=1 + i % 3, long=i % 7) for i in range(40)]
    src = jsonl(
        tmp_path / "d.jsonl",
        [*examples, "{broken", conv(99) | {"messages": [{"role": "user", "content": "no reply"}]}],
    )
    res = run_prep(write_recipe(tmp_path, smollm2_dir, [{"path": src}]), chat_tokenizer)
    m = res.manifest.model_dump()
    rows = rows_of(res)
    assert not res.cache_hit
    # Every document of every row, with its trained tokens, is exactly one example.
    expected = {}
    for ex in examples:
        e = chat_tokenizer.encode(ex["messages"])
        lab = list(e["labels"])
        lab[0] = IGNORE_INDEX
        expected[tuple(e["input_ids"])] = lab
    seen = []
    for r in rows:
        assert len(r["input_ids"]) == len(r["labels"]) == len(r["position_ids"]) == r["num_tokens"]
        assert r["num_tokens"] <= 256 and sum(r["seq_lengths"]) == r["num_tokens"]
        a = 0
        for n in r["seq_lengths"]:
            assert r["position_ids"][a : a + n] == list(range(n))
            assert r["labels"][a] == IGNORE_INDEX
            doc = tuple(r["input_ids"][a : a + n])
            assert r["labels"][a : a + n] == expected[doc]
            seen.append(doc)
            a += n
    assert sorted(seen) == sorted(expected)
    tokens = sum(r["num_tokens"] for r in rows)
    trained = sum(sum(1 for x in r["labels"] if x != IGNORE_INDEX) for r in rows)
    t = m["train"]
    assert (t["examples"], t["rows"], t["tokens"], t["trained_tokens"]) == (
        40,
        len(rows),
        tokens,
        trained,
    )
    assert t["efficiency"] == pytest.approx(tokens / (len(rows) * 256))
    assert t["lower_bound_rows"] == -(-tokens // 256)
    assert t["rows_over_lower_bound"] == len(rows) - t["lower_bound_rows"]
    assert sum(t["length_histogram"]["counts"]) == 40
    assert m["drops"]["malformed_json"]["count"] == 1
    assert m["drops"]["malformed_json"]["first"][0].startswith(f"{src}:41:")
    assert m["drops"]["no_trained_tokens"] == {"count": 1, "first": [f"{src}:42"]}
    (ds,) = m["datasets"]
    assert (ds["rows_in"], ds["rows_loaded"], ds["rows_out"], ds["tokens"]) == (42, 41, 40, tokens)


def test_prep_holds_a_chunk_and_a_shard_not_the_corpus(
    tmp_path: Path,
    home: Path,
    smollm2_dir: Path,
    chat_tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What prep holds at once is bounded by a chunk of rows and a shard of tokens, not by
    the corpus: rows are encoded ``CHUNK_ROWS`` at a time into token files, and each shard
    is gathered from those files on its own, without mapping them (a memory map of them
    put nearly all their pages in RSS: 5.1 GB at 1M rows). Small settings change how the
    work is cut, never a row."""
    src = jsonl(tmp_path / "d.jsonl", [conv(i, turns=1 + i % 3, long=i % 40) for i in range(1500)])
    recipe = write_recipe(tmp_path, smollm2_dir, [{"path": src}])
    default = run_prep(recipe, chat_tokenizer)
    encoded: list[int] = []
    gathered: list[int] = []
    mapped: list[str] = []
    encode, gather = prep_mod.encode_sft_flat, prep_mod.assemble_files

    def encode_chunk(enc: Any, rows: list[str], *rest: Any) -> Any:
        encoded.append(len(rows))
        return encode(enc, rows, *rest)

    def gather_shard(*args: Any) -> Any:
        packed = gather(*args)
        gathered.append(len(packed["input_ids"]))
        maps = Path("/proc/self/maps").read_text().splitlines()
        mapped.extend(m for m in maps if "/.work/" in m)
        return packed

    monkeypatch.setattr(prep_mod, "encode_sft_flat", encode_chunk)
    monkeypatch.setattr(prep_mod, "assemble_files", gather_shard)
    monkeypatch.setattr(prep_mod, "CHUNK_ROWS", 128)
    monkeypatch.setattr(prep_mod, "SHARD_TOKENS", 4 * 256)  # 4 rows of max_length 256
    small = run_prep(recipe, chat_tokenizer, force=True)
    assert rows_of(small) == rows_of(default)
    assert small.manifest.train == default.manifest.train.model_copy(
        update={"shards": small.manifest.train.shards}
    )
    assert max(encoded) == 128 and sum(encoded) == 1500
    assert len(gathered) == len(small.manifest.train.shards) > 10
    assert max(gathered) <= 4 * 256
    assert not mapped, mapped


def test_cache_hit_byte_change_and_force(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    src = tmp_path / "d.jsonl"
    jsonl(src, [conv(i) for i in range(5)])
    recipe = write_recipe(tmp_path, smollm2_dir, [{"path": str(src)}])
    first = run_prep(recipe, chat_tokenizer)
    second = run_prep(recipe, None)  # a hit never needs the tokenizer
    assert second.cache_hit and second.path == first.path
    assert second.manifest == first.manifest
    assert run_prep(recipe, chat_tokenizer, "data.max_length=128").path != first.path
    text = src.read_text()
    src.write_text(text.replace("plus", "plvs", 1))  # one byte
    third = run_prep(recipe, chat_tokenizer)
    assert not third.cache_hit and third.path != first.path
    forced = run_prep(recipe, chat_tokenizer, force=True)
    assert not forced.cache_hit and forced.path == third.path


def test_interrupted_prep_leaves_no_cache_entry(
    tmp_path: Path,
    home: Path,
    smollm2_dir: Path,
    chat_tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recipe = write_recipe(tmp_path, smollm2_dir, [{"path": jsonl(tmp_path / "d.jsonl", [conv(1)])}])

    def boom(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prep_mod, "write_packed", boom)
    with pytest.raises(KeyboardInterrupt):
        run_prep(recipe, chat_tokenizer)
    entries = [p.name for p in (home / "prep").iterdir() if p.is_dir()]
    assert entries == []  # neither a half entry nor a .tmp folder
    monkeypatch.undo()
    monkeypatch.setenv("LADLE_HOME", str(home))
    assert not run_prep(recipe, chat_tokenizer).cache_hit


def test_overlong_policies_and_text_split(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    rows = [conv(1), conv(2, long=200)]  # the second is far over 128 tokens
    text = {"text": "word " * 400}
    recipe = write_recipe(
        tmp_path,
        smollm2_dir,
        [
            {"path": jsonl(tmp_path / "c.jsonl", rows)},
            {"path": jsonl(tmp_path / "t.jsonl", [text]), "format": "text"},
        ],
        max_length=128,
    )
    auto = run_prep(recipe, chat_tokenizer)
    over = auto.manifest.model_dump()["train"]["overlong"]
    assert over["dropped"] == 1 and over["split"] == 1 and over["pieces"] >= 3
    assert auto.manifest.model_dump()["drops"]["overlong"]["count"] == 1
    for r in rows_of(auto):
        assert r["num_tokens"] <= 128
    trunc = run_prep(recipe, chat_tokenizer, "data.overlong=truncate")
    assert trunc.manifest.model_dump()["train"]["overlong"]["truncated"] == 2
    assert trunc.manifest.model_dump()["train"]["examples"] == 3


def test_packing_none_one_example_per_row_and_ffd(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    recipe = write_recipe(
        tmp_path, smollm2_dir, [{"path": jsonl(tmp_path / "d.jsonl", [conv(i) for i in range(9)])}]
    )
    none = run_prep(recipe, chat_tokenizer, "data.packing=none")
    assert [len(r["seq_lengths"]) for r in rows_of(none)] == [1] * 9
    ffd = run_prep(recipe, chat_tokenizer, "data.packing=ffd")
    assert (
        ffd.manifest.model_dump()["train"]["rows"]
        == ffd.manifest.model_dump()["train"]["lower_bound_rows"]
    )


def test_eval_split_weights_and_eval_fraction(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    recipe = write_recipe(
        tmp_path,
        smollm2_dir,
        [
            {"path": jsonl(tmp_path / "a.jsonl", [conv(i) for i in range(4)]), "weight": 2.0},
            {"path": jsonl(tmp_path / "b.jsonl", [conv(i) for i in range(10, 14)]), "weight": 0.5},
            {"path": jsonl(tmp_path / "e.jsonl", [conv(7, turns=2)]), "split": "eval"},
        ],
    )
    res = run_prep(recipe, chat_tokenizer)
    assert res.manifest.model_dump()["train"]["examples"] == 8 + 2
    # rows_out counts examples as trained on, after weighting (2x and 0.5x).
    assert [d["rows_out"] for d in res.manifest.model_dump()["datasets"]] == [8, 2, 1]
    _, evals, _ = load_prepared(res.path)
    (e,) = evals
    assert e["reference"] == "It is 8."
    assert e["prompt"][-1] == {"role": "user", "content": "Question 7.1: what is 7 plus 1?"}
    assert len(e["messages"]) == 5
    frac = write_recipe(
        tmp_path,
        smollm2_dir,
        [{"path": jsonl(tmp_path / "f.jsonl", [conv(i) for i in range(20)])}],
        eval_fraction=0.25,
    )
    res = run_prep(frac, chat_tokenizer)
    assert (
        res.manifest.model_dump()["eval"]["rows"] == 5
        and res.manifest.model_dump()["train"]["examples"] == 15
    )


def test_dpo_triples(tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any) -> None:
    rows = [
        {"prompt": f"Capital of country {i}?", "chosen": f"City {i}.", "rejected": "No idea."}
        for i in range(3)
    ]
    path = tmp_path / "recipe.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "dpo",
                "model": {"base": str(smollm2_dir)},
                "train": {"method": "dpo"},
                "data": {
                    "datasets": [
                        {"path": jsonl(tmp_path / "p.jsonl", rows), "format": "preference"}
                    ],
                    "dedup": {"enabled": False},
                },
            }
        )
    )
    res = run_prep(path, chat_tokenizer)
    assert (
        res.manifest.model_dump()["method"] == "dpo"
        and res.manifest.model_dump()["train"]["examples"] == 3
    )
    out = rows_of(res)
    for i, r in enumerate(out):  # preference rows keep their order
        prompt = [{"role": "user", "content": f"Capital of country {i}?"}]
        full = chat_tokenizer.encode([*prompt, {"role": "assistant", "content": f"City {i}."}])
        ids = r["prompt_input_ids"] + r["chosen_input_ids"]
        assert ids == full["input_ids"][: len(ids)]
        # <|im_end|> (id 2) is part of the continuation (plus the template's "\n" after
        # it, if the chat tokenizer trains that too).
        assert 2 in r["chosen_input_ids"][-2:] and 2 in r["rejected_input_ids"][-2:]
        assert r["chosen_input_ids"] != r["rejected_input_ids"]


def test_kto_examples_from_labelled_rows_and_split_pairs(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    """KTO reads the same preference files: a labelled completion is one example, a pair
    two (chosen desirable, rejected undesirable). DPO counts a labelled row as a skip."""
    rows = [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."},
        {"prompt": "Capital of Spain?", "completion": "Madrid.", "label": True},
        {"prompt": "Capital of Italy?", "completion": "Oslo.", "label": False},
    ]
    data = jsonl(tmp_path / "p.jsonl", rows)
    out = {}
    for method in ("kto", "dpo"):
        path = tmp_path / f"{method}.yaml"
        recipe = {
            "name": method,
            "model": {"base": str(smollm2_dir)},
            "train": {"method": method},
            "data": {
                "datasets": [{"path": data, "format": "preference"}],
                "dedup": {"enabled": False},
            },
        }
        path.write_text(json.dumps(recipe))
        out[method] = run_prep(path, chat_tokenizer)
    kto = out["kto"].manifest.model_dump()
    assert kto["method"] == "kto" and kto["train"]["examples"] == 4
    got = rows_of(out["kto"])
    assert [r["label"] for r in got] == [True, False, True, False]

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(smollm2_dir)

    def text(ids: list[int]) -> str:
        return str(hf.decode(ids))

    assert [text(r["completion_input_ids"]).split("<")[0] for r in got] == [
        "Paris.",
        "Rome.",
        "Madrid.",
        "Oslo.",
    ]
    assert got[0]["prompt_input_ids"] == got[1]["prompt_input_ids"]
    assert "Capital of Italy?" in text(got[3]["prompt_input_ids"])
    dpo = out["dpo"].manifest.model_dump()
    assert dpo["train"]["examples"] == 1
    assert dpo["drops"]["unpaired"]["count"] == 2
    assert "train.method: kto" in dpo["drops"]["unpaired"]["first"][0]


def test_labelled_eval_rows_reference_only_desirable_completions() -> None:
    """An eval row labelled desirable is a prompt with its reference; an undesirable
    completion is no reference to score against."""
    from ladle.data.prepared import eval_record

    prompt = [{"role": "user", "content": "q"}]
    good = eval_record(
        {"prompt": prompt, "completion": [{"role": "assistant", "content": "a"}], "label": True}
    )
    assert good["reference"] == "a" and json.loads(good["prompt"]) == prompt
    bad = eval_record(
        {"prompt": prompt, "completion": [{"role": "assistant", "content": "x"}], "label": False}
    )
    assert bad["reference"] is None and json.loads(bad["messages"]) == prompt


def test_strict_prep_fails_on_bad_row(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    recipe = write_recipe(
        tmp_path,
        smollm2_dir,
        [{"path": jsonl(tmp_path / "d.jsonl", [conv(1), "{oops"])}],
        strict=True,
    )
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        run_prep(recipe, chat_tokenizer)


def test_dedup_integration(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    """prep keeps the rows of dedup's keep mask and counts each removed row under its
    reason, by index (not by matching objects or location strings)."""
    train = jsonl(tmp_path / "d.jsonl", [conv(1), conv(2), conv(1), conv(3)])
    evals = jsonl(tmp_path / "e.jsonl", [conv(3)])
    recipe = write_recipe(
        tmp_path, smollm2_dir, [{"path": train}, {"path": evals, "split": "eval"}]
    )
    res = run_prep(recipe, chat_tokenizer, "data.dedup.enabled=true")
    m = res.manifest
    assert m.drops["duplicate"].model_dump() == {"count": 1, "first": [f"{train}:3"]}
    assert m.drops["contaminated"].model_dump() == {"count": 1, "first": [f"{train}:4"]}
    assert m.train.examples == 2 and m.dedup is not None and m.dedup["rows_out"] == 2
    off = run_prep(recipe, chat_tokenizer)  # dedup.enabled: false in the recipe
    assert off.manifest.train.examples == 4 and off.manifest.dedup is None


def test_cli_prep_and_render(
    tmp_path: Path,
    home: Path,
    smollm2_dir: Path,
    chat_tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ladle.commands import prep as prep_cmd
    from ladle.commands import render as render_cmd

    monkeypatch.setattr(prep_mod, "load_chat_tokenizer", lambda *a: chat_tokenizer)
    recipe = write_recipe(
        tmp_path, smollm2_dir, [{"path": jsonl(tmp_path / "d.jsonl", [conv(i) for i in range(4)])}]
    )
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    prep_cmd.register(sub)
    render_cmd.register(sub)
    args = parser.parse_args(["prep", str(recipe), "--quiet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "built" in out and "packing bfd" in out
    assert args.func(args) == 0
    assert "cache hit" in capsys.readouterr().out
    # --verbose: the seconds of each stage, as the manifest records them
    args = parser.parse_args(["prep", str(recipe), "--quiet", "--force", "--verbose"])
    assert args.func(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("stages"))
    manifest = json.loads(next(home.glob("prep/*/manifest.json")).read_text())
    stages = manifest["stages"]
    assert list(stages) == ["load", "tokenizer", "encode", "pack", "write", "eval", "total"]
    assert all(v >= 0 for v in stages.values())
    assert stages["total"] >= stages["encode"] + stages["write"]
    assert all(f"{k} {v:.2f}s" in line for k, v in stages.items())
    args = parser.parse_args(["render", str(recipe), "--limit", "2", "--json"])
    assert args.func(args) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    assert lines[0]["text"].startswith("<|im_start|>system\nYou are assistant number 0.")
    trained = [
        i
        for i, lab in zip(lines[0]["input_ids"], lines[0]["labels"], strict=True)
        if lab != IGNORE_INDEX
    ]
    assert 2 in trained[-2:] and len(trained) < len(lines[0]["input_ids"])
    args = parser.parse_args(["render", str(recipe), "--limit", "1"])
    assert args.func(args) == 0
    assert "trained" in capsys.readouterr().out


def test_shards_are_arrow_lists_of_int32(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    import pyarrow as pa

    recipe = write_recipe(tmp_path, smollm2_dir, [{"path": jsonl(tmp_path / "d.jsonl", [conv(1)])}])
    train, _, _ = load_prepared(run_prep(recipe, chat_tokenizer))
    for col in ("input_ids", "labels", "position_ids", "seq_lengths"):
        assert train.schema.field(col).type == pa.list_(pa.int32())
    assert np.asarray(train["num_tokens"]).dtype == np.int32


def test_prep_equals_transformers_reference(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    """Same corpus through the Rust tokenizer and through apply_chat_template + prefix
    masks (prep's generic path): identical packed rows, ids and masks."""
    from _chat_reference import ReferenceChatTokenizer

    ref = ReferenceChatTokenizer.from_pretrained(smollm2_dir)
    rows = [conv(i, turns=1 + i % 3, long=i % 5) for i in range(25)]
    rows.append(
        {
            "messages": [
                {"role": "user", "content": "Ünïcödé ✓ 日本語?"},
                {"role": "assistant", "content": "  indented reply"},
            ]
        }
    )
    recipe = write_recipe(tmp_path, smollm2_dir, [{"path": jsonl(tmp_path / "d.jsonl", rows)}])
    ours = rows_of(run_prep(recipe, chat_tokenizer, force=True))
    theirs = rows_of(run_prep(recipe, ref, force=True))
    assert [r["input_ids"] for r in ours] == [r["input_ids"] for r in theirs]
    assert [r["position_ids"] for r in ours] == [r["position_ids"] for r in theirs]
    n_diff = sum(a["labels"] != b["labels"] for a, b in zip(ours, theirs, strict=True))
    # The one reply that starts with spaces may differ on the straddling token (see
    # reference-formats.md); everything else must agree exactly.
    assert n_diff <= 1


def test_cache_hit_hashes_nothing_and_reports_progress(
    tmp_path: Path,
    home: Path,
    smollm2_dir: Path,
    chat_tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ladle.data import iter_train_rows

    recipe = write_recipe(
        tmp_path, smollm2_dir, [{"path": jsonl(tmp_path / "d.jsonl", [conv(i) for i in range(3)])}]
    )
    stages: list[str] = []
    first = prep(
        load_recipe(recipe), tokenizer=chat_tokenizer, progress=lambda s, d, t: stages.append(s)
    )
    assert {"load", "tokenize", "pack", "write"} <= set(stages)
    assert (
        sum(1 for _ in iter_train_rows(first.path)) == first.manifest.model_dump()["train"]["rows"]
    )

    def no_hashing(paths: list[str]) -> str:
        raise AssertionError(f"a cache hit must not hash {paths}")

    monkeypatch.setattr(prep_mod._core, "fingerprint_files", no_hashing)
    assert prep(load_recipe(recipe)).cache_hit


def test_stale_temp_folders_of_killed_runs_are_cleared(home: Path) -> None:
    import os

    old = home / "prep" / ".tmp-abc-123"
    fresh = home / "prep" / ".tmp-def-456"
    old.mkdir(parents=True)
    fresh.mkdir()
    os.utime(old, (0, 0))
    assert prep_mod.clear_stale_temp() == 1
    assert not old.exists() and fresh.exists()  # a young one may be a running prep


def test_real_dedup_removes_duplicates_and_eval_copies(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    pytest.importorskip("ladle.dedup")
    import random

    rng = random.Random(0)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "sigma",
        "omega",
    ]

    def row() -> dict[str, Any]:
        q = " ".join(rng.choice(words) for _ in range(30))
        a = " ".join(rng.choice(words) for _ in range(30))
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}

    rows = [row() for _ in range(6)]
    train = jsonl(tmp_path / "d.jsonl", [*rows, rows[0]])  # line 7 repeats line 1
    evals = jsonl(tmp_path / "e.jsonl", [rows[2]])  # train line 3 is an eval row
    recipe = write_recipe(
        tmp_path,
        smollm2_dir,
        [{"path": train}, {"path": evals, "split": "eval"}],
        dedup={"enabled": True},
    )
    res = run_prep(recipe, chat_tokenizer)
    drops = res.manifest.model_dump()["drops"]
    assert drops["duplicate"] == {"count": 1, "first": [f"{train}:7"]}
    assert drops["contaminated"] == {"count": 1, "first": [f"{train}:3"]}
    assert res.manifest.model_dump()["train"]["examples"] == 5
    assert res.manifest.model_dump()["dedup"]["enabled"] is True


def test_eval_string_columns_equal_pyarrows() -> None:
    # write_eval builds its string columns from buffers (pa.array would import pandas):
    # the same values, nulls and type as pa.array gives.
    import pyarrow as pa

    from ladle.data.prepared import _strings

    for values in (["a", None, "", "ünï 中文 😀", None], [None, None], [], ["x" * 1000]):
        ours = _strings(values)
        ours.validate(full=True)
        assert ours.equals(pa.array(values, type=pa.string())), values
