"""The judge metric: parsing, order-swapped pairwise verdicts, and a position-biased
judge (a local server that always answers "A") whose flips become ties."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from _fake_openai import Script, serving
from ladle.evaluate.judge import pair_values, parse_choice, parse_score

ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Classify ticket {i}"},
            {"role": "assistant", "content": json.dumps({"label": "ab"[i % 2]})},
        ]
    }
    for i in range(4)
]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, Script]]:
    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    with serving() as served:
        yield served


def test_parse_score_and_choice():
    assert parse_score("4", 5) == 0.75
    assert parse_score("Score: 5/5", 5) == 1.0
    assert parse_score("I'd say 1.", 5) == 0.0
    assert math.isnan(parse_score("great answer", 5))
    assert math.isnan(parse_score("7", 5))  # outside the scale
    assert math.isnan(parse_score("4.5", 5))  # not an integer
    assert parse_choice("B") == "B" and parse_choice("Answer A is better") == "A"
    assert parse_choice("neither") is None


def test_pair_values_turn_order_flips_into_ties():
    # candidate is B in the first order and A in the swapped one
    first = ["B", "A", "A", "B", "?"]
    swapped = ["A", "B", "A", "B", "A"]
    values, agreement, unread = pair_values(first, swapped)
    # win both; lose both; flip (position bias); flip; unreadable
    assert values.tolist() == [1.0, 0.0, 0.5, 0.5, 0.5]
    assert agreement == pytest.approx(2 / 4) and unread == 1


@pytest.mark.parametrize(("answer", "mode"), [("A", "pairwise"), ("4", "score")])
def test_judge_through_an_endpoint(server, tiny_llama_dir: Path, tmp_path: Path, answer, mode):
    from ladle.evaluate import evaluate, write_reports
    from ladle.recipe import load_recipe

    url, script = server
    script.answer = answer
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[:4]) + "\n")
    recipe = {
        "name": "judged",
        "model": {"base": str(tiny_llama_dir)},
        "data": {"datasets": [{"path": "eval.jsonl", "split": "eval"}]},
        "evaluate": {
            "baseline": {"few_shot": 0, "system_prompt": "Be brief."},
            "candidate": {"model": str(tiny_llama_dir)},
            "generation": {"max_new_tokens": 3},
            "latency_sample": 0,
            "bootstrap": 200,
            "metrics": [
                {
                    "name": "judge",
                    "judge": {"endpoint": {"url": url, "model": "judge"}, "mode": mode},
                }
            ],
            "gate": [{"metric": "judge", "min": 0.0}],
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    # no cache: identical answers would make the swapped prompt a cache hit
    report = evaluate(load_recipe(tmp_path / "r.yaml"), ROWS[:4], [], use_cache=False)
    cmp = report.comparisons["candidate"]["baseline"]["judge"]
    (info,) = report.judges
    assert info["judge"] == f"judge @ {url}"
    if mode == "pairwise":
        # a judge that always says "A" flips with the order: every pair is a tie
        assert cmp.candidate == 0.5 and info["agreement_rate"] == 0.0
        assert len(script.requests) == 8  # 4 examples x 2 orders
        prompts = [r["messages"][1]["content"] for r in script.requests]
        assert all("Answer A:" in p and "Answer B:" in p for p in prompts)
    else:
        assert cmp.baseline == 0.75 and cmp.candidate == 0.75
        assert info["unreadable"] == {"baseline": 0, "candidate": 0}
    write_reports(report, tmp_path / "out")
    assert "Judge `judge`" in (tmp_path / "out" / "report.md").read_text()


def test_local_model_judge_counts_unreadable_replies(tiny_llama_dir: Path, tmp_path: Path):
    """A random tiny model as judge: its replies are mostly unreadable, and say so."""
    from ladle.evaluate import evaluate
    from ladle.recipe import load_recipe

    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[:3]) + "\n")
    recipe = {
        "name": "judged-local",
        "model": {"base": str(tiny_llama_dir)},
        "data": {"datasets": [{"path": "eval.jsonl", "split": "eval"}]},
        "evaluate": {
            "baseline": {"few_shot": 0},
            "candidate": {"model": str(tiny_llama_dir)},
            "generation": {"max_new_tokens": 3},
            "latency_sample": 0,
            "bootstrap": 200,
            "metrics": [{"name": "judge", "judge": {"max_new_tokens": 4}}],
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    report = evaluate(load_recipe(tmp_path / "r.yaml"), ROWS[:3], [])
    (info,) = report.judges
    assert info["judge"] == str(tiny_llama_dir) and info["mode"] == "score"
    values = report.baseline.scores["judge"].values
    assert int(np.isnan(values).sum()) == info["unreadable"]["baseline"]
