"""Operational measures (latency quantiles, cost per 1k requests, break-even) and the
power plan, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ladle.evaluate.power import (
    mde_continuous,
    mde_paired_binary,
    n_continuous,
    n_paired_binary,
    plan,
)
from ladle.evaluate.stats import quantile_interval, unpaired_quantile
from ladle.recipe.schema import GateCondition, PowerSpec


def test_quantile_interval_brackets_the_quantile_and_narrows_with_more_requests():
    rng = np.random.default_rng(0)
    small = rng.lognormal(-1.5, 0.4, 32)
    big = rng.lognormal(-1.5, 0.4, 2000)
    v, lo, hi = quantile_interval(small, 50, 1000, 0)
    assert v == pytest.approx(float(np.median(small))) and lo <= v <= hi
    _, blo, bhi = quantile_interval(big, 50, 1000, 0)
    assert bhi - blo < (hi - lo) / 3
    p95, lo95, hi95 = quantile_interval(small, 95, 1000, 0)
    assert p95 > v and lo95 <= p95 <= hi95


def test_unpaired_latency_difference_has_no_p_value():
    rng = np.random.default_rng(1)
    slow, fast = rng.normal(0.5, 0.05, 40), rng.normal(0.2, 0.02, 40)
    c = unpaired_quantile("latency_p50", slow, fast, 50, "lower", 500, 0)
    assert c.diff == pytest.approx(float(np.median(fast) - np.median(slow)))
    assert c.high < 0 and math.isnan(c.p_value) and c.test == "unpaired bootstrap"


def test_break_even_volume():
    from ladle.evaluate.result import Contestant
    from ladle.evaluate.runner import break_even
    from ladle.recipe.schema import ContestantSpec

    def contestant(name: str, cost_per_1k: float | None) -> Contestant:
        c = Contestant(name, "x", ContestantSpec(), [], None, {})  # type: ignore[arg-type]
        c.operations["cost_per_1k_requests"] = cost_per_1k
        return c

    api, tuned = contestant("api", 2.0), contestant("tuned", 0.5)
    # one hour of training at $1.50 is paid back by $1.50 saved per 1,000 requests
    be = break_even(api, tuned, 3600.0, 1.5)
    assert be["training_cost"] == pytest.approx(1.5) and be["requests"] == 1000
    assert break_even(tuned, api, 3600.0, 1.5)["requests"] is None  # never pays back
    assert "never" in break_even(tuned, api, 3600.0, 1.5)["note"]
    assert "training_price_per_hour" in break_even(api, tuned, 3600.0, None)["note"]
    assert "manifest" in break_even(api, tuned, None, 1.5)["note"]


def test_cost_per_request_from_prices():
    from ladle.evaluate.contestants import paired_operational
    from ladle.evaluate.generate import Generation
    from ladle.recipe import Recipe
    from ladle.recipe.schema import ContestantSpec

    recipe = Recipe.model_validate({"name": "r", "data": {"datasets": [{"path": "x"}]}})
    gen = Generation(
        [["a"], ["b"]], np.array([1000.0, 3000.0]), np.array([10.0, 30.0]), np.ones(2), 2.0, "x"
    )
    by_tokens = ContestantSpec(price_per_1m_input=2.0, price_per_1m_output=10.0)
    scores, basis = paired_operational(gen, by_tokens, recipe, 1.0)
    # mean: 2000 input tokens * $2/1M + 20 output tokens * $10/1M = $0.0042 per request
    assert scores["cost"].value() == pytest.approx(0.0042) and "1M" in str(basis)
    by_hour = ContestantSpec(price_per_hour=3.6)
    scores, basis = paired_operational(gen, by_hour, recipe, 2.0)  # 2 requests/s
    assert scores["cost"].value() == pytest.approx(3.6 / 3600 / 2.0)
    assert "throughput" in str(basis)


# ----------------------------------------------------------------------- power


def test_power_formulas_round_trip_and_match_known_values():
    # normal approximation: (1.96 + 0.8416)^2 * 0.5^2 / 0.1^2 = 196.2 -> 197 rows
    assert n_continuous(0.1, 0.5, 0.8) == 197
    assert mde_continuous(197, 0.5, 0.8) <= 0.1 < mde_continuous(196, 0.5, 0.8) * 1.01
    # Connor (1987), p_d = 0.5, d = 0.1: (1.96*sqrt(.5) + 0.8416*sqrt(.49))^2 / .01 = 390.1
    assert n_paired_binary(0.1, 0.5, 0.8) == 391
    mde = mde_paired_binary(391, 0.5, 0.8)
    assert mde <= 0.1 and n_paired_binary(mde, 0.5, 0.8) <= 391
    assert mde_paired_binary(100, 0.5, 0.8) > mde  # fewer rows, larger MDE
    assert mde_paired_binary(100, 0.2, 0.8) < mde_paired_binary(100, 0.5, 0.8)


def test_plan_warns_when_min_gain_is_below_the_detectable_difference():
    gate = [
        GateCondition(metric="acc", min_gain=0.05, significant=True),
        GateCondition(metric="f1", min_gain=0.5),
        GateCondition(metric="valid", min=0.9),  # no gain asked: nothing to plan
        GateCondition(metric="prompt_tokens", max_ratio=0.5),  # unbounded: not planned
    ]
    lines = plan(gate, {"acc": True, "f1": False, "valid": True}, 100, PowerSpec())
    assert [line.metric for line in lines] == ["acc", "f1"]
    acc, f1 = lines
    assert acc.warning and acc.rows_needed == n_paired_binary(0.05, 0.5, 0.8)
    assert "WARNING" in acc.text() and "eval rows are needed" in acc.text()
    assert not f1.warning and "above it" in f1.text()
    assert "paired binary" in acc.text() and "paired mean" in f1.text()
