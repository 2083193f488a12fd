"""prep under bad input: every problem is a counted drop or one DataError before training,
never a silent loss, a wrong split or a stale cache."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ladle.data import load_prepared, prep
from ladle.data.prepared import MANIFEST_VERSION, PrepManifest
from ladle.errors import DataError
from ladle.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_prep import conv, jsonl, run_prep, write_recipe

prep_mod = importlib.import_module("ladle.data.prep")


def test_chat_row_mentioning_text_is_dropped_not_split(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    """`overlong: auto` drops over-long chat rows; a row whose JSON merely contains the
    letters "text" (here: "context") is still a chat row."""
    long = {
        "messages": [
            {"role": "user", "content": "context " * 400},
            {"role": "assistant", "content": "ok"},
        ]
    }
    train = jsonl(tmp_path / "d.jsonl", [conv(1), long])
    res = run_prep(write_recipe(tmp_path, smollm2_dir, [{"path": train}]), chat_tokenizer)
    over = res.manifest.train.overlong
    assert over["dropped"] == 1 and over["split"] == 0
    assert res.manifest.drops["overlong"].count == 1 and res.manifest.train.examples == 1


def test_split_pieces_without_trained_tokens_are_counted(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    long = {
        "messages": [
            {"role": "user", "content": "word " * 600},
            {"role": "assistant", "content": "short reply"},
        ]
    }
    train = jsonl(tmp_path / "d.jsonl", [long])
    recipe = write_recipe(tmp_path, smollm2_dir, [{"path": train}], overlong="split")
    res = run_prep(recipe, chat_tokenizer)
    assert res.manifest.train.overlong["split"] == 1
    pieces = res.manifest.train.overlong["pieces"]
    dropped = res.manifest.drops["split_piece_no_trained_tokens"]
    assert dropped.count == pieces - res.manifest.train.examples >= 2
    assert dropped.first[0].startswith(f"{train}:1: ")


REFUSING = (
    "{% for m in messages %}{% if 'BOOM' in m['content'] %}{{ raise_exception('no BOOM') }}"
    "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_template_refusing_one_preference_pair_is_a_counted_drop(
    tmp_path: Path, home: Path, smollm2_dir: Path
) -> None:
    rows = [
        {"prompt": f"question {i}?", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(3)
    ]
    rows[1]["rejected"] = "BOOM"
    train = jsonl(tmp_path / "p.jsonl", rows)
    path = write_recipe(
        tmp_path, smollm2_dir, [{"path": train, "format": "preference"}], template=REFUSING
    )
    recipe = load_recipe(path, ["train.method=dpo", "evaluate.enabled=false"])
    res = prep(recipe)
    assert res.manifest.train.examples == 2
    drop = res.manifest.drops["template_error"]
    assert drop.count == 1 and drop.first[0].startswith(f"{train}:2: ")


def test_eval_rows_without_a_reply_are_checked_in_prep(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    train = jsonl(tmp_path / "d.jsonl", [conv(i) for i in range(4)])
    no_reply = {"messages": [{"role": "user", "content": "hello?"}]}
    evals = jsonl(tmp_path / "e.jsonl", [conv(9), no_reply])
    ds = [{"path": train}, {"path": evals, "split": "eval"}]
    res = run_prep(write_recipe(tmp_path, smollm2_dir, ds), chat_tokenizer)
    assert res.manifest.eval.rows == 1
    assert res.manifest.drops["eval_no_reference"].first[0].startswith(f"{evals}:2: ")
    # Every eval row unusable: an error now, not after an hour of training.
    jsonl(tmp_path / "e.jsonl", [no_reply])
    with pytest.raises(DataError, match="eval split is empty"):
        run_prep(write_recipe(tmp_path, smollm2_dir, ds), chat_tokenizer)


def test_empty_dataset_and_missing_columns_are_errors(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    recipe = write_recipe(tmp_path, smollm2_dir, [{"path": str(tmp_path / "empty.jsonl")}])
    with pytest.raises(DataError, match=r"empty\.jsonl: no usable rows \(0 read"):
        run_prep(recipe, chat_tokenizer)
    (tmp_path / "d.csv").write_text("question,answer\nq1,a1\nq2,a2\n")
    recipe = write_recipe(
        tmp_path, smollm2_dir, [{"path": str(tmp_path / "d.csv"), "format": "alpaca"}]
    )
    with pytest.raises(DataError, match=r"missing_field: 2 .*check its `format` \(alpaca\)"):
        run_prep(recipe, chat_tokenizer)


def test_a_change_in_ladles_code_invalidates_the_cache(
    tmp_path: Path,
    home: Path,
    smollm2_dir: Path,
    chat_tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = tmp_path / "kernel.so"
    code.write_bytes(b"version one")
    real = prep_mod.code_files
    monkeypatch.setattr(prep_mod, "code_files", lambda: [*real(), code])
    recipe = write_recipe(tmp_path, smollm2_dir, [{"path": jsonl(tmp_path / "d.jsonl", [conv(1)])}])
    first = run_prep(recipe, chat_tokenizer)
    assert run_prep(recipe, chat_tokenizer).cache_hit
    code.write_bytes(b"version two, same version string")
    second = run_prep(recipe, chat_tokenizer)
    assert not second.cache_hit and second.fingerprint != first.fingerprint


def test_killed_preps_leave_nothing_behind(home: Path) -> None:
    root = home / "prep"
    dead, live, old = root / ".tmp-a-1", root / ".tmp-b-2", root / ".old-c-3"
    for d in (dead, live, old):
        d.mkdir(parents=True)
    (dead / prep_mod.LOCK).touch()  # its prep was SIGKILLed: nobody holds the lock
    fd = prep_mod._lock(live / prep_mod.LOCK)  # a prep running right now
    try:
        assert prep_mod.clear_stale_temp() == 2
        assert not dead.exists() and not old.exists() and live.exists()
    finally:
        assert fd is not None
        os.close(fd)


def test_manifest_is_typed_and_versioned(
    tmp_path: Path, home: Path, smollm2_dir: Path, chat_tokenizer: Any
) -> None:
    recipe = write_recipe(tmp_path, smollm2_dir, [{"path": jsonl(tmp_path / "d.jsonl", [conv(1)])}])
    res = run_prep(recipe, chat_tokenizer)
    _, _, manifest = load_prepared(res)
    assert isinstance(manifest, PrepManifest) and manifest.version == MANIFEST_VERSION
    path = res.path / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "version": MANIFEST_VERSION + 1}))
    with pytest.raises(DataError, match="another Ladle version"):
        load_prepared(res)
    again = run_prep(recipe, chat_tokenizer)  # not misread: rebuilt
    assert not again.cache_hit and again.manifest.version == MANIFEST_VERSION
