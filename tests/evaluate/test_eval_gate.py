"""The gate respects each measure's direction, and says "insufficient evidence" when a
`significant` condition's interval cannot decide."""

from __future__ import annotations

import pytest

from ladle.errors import EvalError
from ladle.evaluate.gate import check_condition, check_keys
from ladle.evaluate.result import EXIT_CODES, EvalReport
from ladle.evaluate.stats import Comparison
from ladle.recipe.schema import GateCondition


def cmp(base: float, cand: float, low: float, high: float, better: str) -> Comparison:
    return Comparison("m", base, cand, cand - base, low, high, 0.5, "bootstrap", better)


def verdict(cmp_: Comparison, **bounds: object) -> str:
    return check_condition(GateCondition(metric="m", **bounds), cmp_, "run").verdict


# Accuracy went up by 0.1; latency (lower is better) went down by 100 ms: both improved.
ACC_UP = cmp(0.5, 0.6, 0.05, 0.15, "higher")
ACC_DOWN = cmp(0.6, 0.5, -0.15, -0.05, "higher")
LAT_DOWN = cmp(0.3, 0.2, -0.15, -0.05, "lower")
LAT_UP = cmp(0.2, 0.3, 0.05, 0.15, "lower")


@pytest.mark.parametrize(
    ("comparison", "expected"),
    [(ACC_UP, "pass"), (ACC_DOWN, "fail"), (LAT_DOWN, "pass"), (LAT_UP, "fail")],
)
def test_min_gain_rewards_the_better_direction(comparison: Comparison, expected: str):
    assert verdict(comparison, min_gain=0.05) == expected


@pytest.mark.parametrize(
    ("comparison", "limit", "expected"),
    [
        (ACC_DOWN, 0.05, "fail"),  # lost 0.1 accuracy
        (ACC_DOWN, 0.1, "pass"),
        (ACC_UP, 0.0, "pass"),
        (LAT_UP, 0.05, "fail"),  # 100 ms slower: a regression for latency
        (LAT_UP, 0.1, "pass"),
        (LAT_DOWN, 0.0, "pass"),  # faster is never a regression
    ],
)
def test_max_regression_counts_only_the_worse_direction(
    comparison: Comparison, limit: float, expected: str
):
    assert verdict(comparison, max_regression=limit) == expected


def test_max_ratio_is_candidate_over_baseline_when_lower_is_better():
    tokens = cmp(400.0, 100.0, -310, -290, "lower")
    assert verdict(tokens, max_ratio=0.3) == "pass"  # 0.25
    assert verdict(tokens, max_ratio=0.2) == "fail"


def test_max_ratio_is_baseline_over_candidate_when_higher_is_better():
    speed = cmp(10.0, 8.0, -3, -1, "higher")  # throughput fell to 8 from 10: ratio 1.25
    assert verdict(speed, max_ratio=1.3) == "pass"
    r = check_condition(GateCondition(metric="m", max_ratio=1.2), speed, "run")
    assert r.verdict == "fail" and "baseline/candidate 1.25 > max_ratio 1.2" in r.message
    assert verdict(cmp(10.0, 20.0, 8, 12, "higher"), max_ratio=0.6) == "pass"  # doubled


@pytest.mark.parametrize(
    ("comparison", "expected"),
    [
        (ACC_UP, "pass"),
        (ACC_DOWN, "fail"),
        (LAT_DOWN, "pass"),
        (LAT_UP, "fail"),
        (cmp(0.5, 0.52, -0.03, 0.07, "higher"), "insufficient evidence"),
        (cmp(0.3, 0.28, -0.07, 0.03, "lower"), "insufficient evidence"),
        (cmp(0.5, 0.5, 0.0, 0.0, "higher"), "fail"),  # identical: no gain, and certain of it
        (cmp(5, 9, 2, 6, "none"), "pass"),
        (cmp(5, 6, -1, 3, "none"), "insufficient evidence"),
    ],
)
def test_significant_is_directional_with_an_undecided_outcome(
    comparison: Comparison, expected: str
):
    assert verdict(comparison, significant=True) == expected


def test_a_failed_bound_beats_an_undecided_interval():
    wide = cmp(0.5, 0.52, -0.03, 0.07, "higher")
    assert verdict(wide, min_gain=0.1, significant=True) == "fail"
    r = check_condition(GateCondition(metric="m", min_gain=0.01, significant=True), wide, "run")
    assert r.verdict == "insufficient evidence"
    assert "straddles +0" in r.message and "gain +0.02 >= min_gain 0.01" in r.message


@pytest.mark.parametrize(
    ("comparison", "expected"),
    [
        (cmp(0.80, 0.79, -0.03, 0.01, "higher"), "pass"),  # within 0.05 with confidence
        (cmp(0.80, 0.70, -0.14, -0.06, "higher"), "fail"),
        (cmp(0.80, 0.78, -0.09, 0.05, "higher"), "insufficient evidence"),
        (cmp(0.20, 0.21, -0.01, 0.03, "lower"), "pass"),  # latency: at most 0.05 s slower
        (cmp(0.20, 0.30, 0.06, 0.14, "lower"), "fail"),
    ],
)
def test_significant_non_inferiority(comparison: Comparison, expected: str):
    assert verdict(comparison, max_regression=0.05, significant=True) == expected


def test_neutral_and_unpaired_measures_refuse_meaningless_conditions():
    with pytest.raises(EvalError, match="no better direction"):
        check_keys([GateCondition(metric="length", min_gain=1)], {"length": "none"})
    with pytest.raises(EvalError, match="no significance test"):
        check_keys(
            [GateCondition(metric="latency_p50", significant=True)], {"latency_p50": "lower"}
        )
    check_keys([GateCondition(metric="latency_p50", max_ratio=0.5)], {"latency_p50": "lower"})


def test_report_verdict_and_exit_codes():
    def report(*verdicts: str) -> EvalReport:
        results = [
            check_condition(GateCondition(metric="m", min=v), ACC_UP, "run")
            for v in [{"pass": 0.0, "fail": 1.0}[x] for x in verdicts if x != "undecided"]
        ]
        if "undecided" in verdicts:
            results.append(
                check_condition(
                    GateCondition(metric="m", significant=True),
                    cmp(0.5, 0.52, -0.03, 0.07, "higher"),
                    "run",
                )
            )
        return EvalReport("r", 1, [], [], [], {}, results, [], {})

    assert report().verdict == "pass" and report().exit_code == 0
    assert report("pass", "pass").exit_code == 0
    assert report("pass", "undecided").verdict == "insufficient evidence"
    assert report("pass", "undecided").exit_code == 3
    assert report("fail", "undecided").exit_code == 1
    assert sorted(EXIT_CODES.values()) == [0, 1, 3]  # 2 stays usage/input errors
