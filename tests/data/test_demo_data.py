"""The quickstart's data generator: deterministic, labelled from the text, varied."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ladle.demo import ensure_generated
from ladle.demo.tickets import (
    CATEGORIES,
    FIELDS,
    PRIORITIES,
    PRODUCTS,
    SENTIMENTS,
    generate,
    generate_preference,
)
from ladle.recipe import load_recipe


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a = list(generate(50, 1))
    assert a == list(generate(50, 1))
    assert a != list(generate(50, 2))


def test_answers_are_strict_json_with_closed_labels() -> None:
    allowed = {
        "category": CATEGORIES,
        "priority": PRIORITIES,
        "product": PRODUCTS,
        "sentiment": SENTIMENTS,
    }
    counts: Counter[str] = Counter()
    for row in generate(2000, 7):
        user, assistant = row["messages"]  # type: ignore[misc]
        assert user["role"] == "user" and user["content"].strip()
        record = json.loads(assistant["content"])
        assert tuple(record) == FIELDS
        for k, v in record.items():
            assert v in allowed[k]
        counts[record["category"]] += 1
    # Every label occurs and the balance is realistic (no class above 40%).
    assert set(counts) == set(CATEGORIES)
    assert max(counts.values()) < 0.4 * 2000


def test_texts_are_varied() -> None:
    texts = [r["messages"][0]["content"] for r in generate(2000, 7)]  # type: ignore[index]
    assert len(set(texts)) == len(texts)
    words = Counter(w for t in texts for w in t.lower().split())
    assert len(words) > 500


def test_preference_rows_differ_and_chosen_is_valid() -> None:
    for row in generate_preference(200, 3):
        assert row["chosen"] != row["rejected"]
        json.loads(str(row["chosen"]))


def test_recipe_generation_writes_once(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "name: g\ndata:\n  datasets:\n"
        "    - path: d/train.jsonl\n      generate: {name: tickets, rows: 30, seed: 1}\n"
    )
    recipe = load_recipe(tmp_path / "r.yaml")
    assert ensure_generated(recipe) == [tmp_path / "d" / "train.jsonl"]
    assert len((tmp_path / "d" / "train.jsonl").read_text().splitlines()) == 30
    assert ensure_generated(recipe) == []
