"""Paired bootstrap, McNemar's test (against hand-computed values) and the gate logic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ladle.errors import EvalError
from ladle.evaluate.gate import check_condition, check_gate
from ladle.evaluate.metrics import Scores
from ladle.evaluate.stats import (
    Comparison,
    binom_two_sided,
    bootstrap_indices,
    compare,
    mcnemar,
    paired_bootstrap,
    value_interval,
)
from ladle.recipe.schema import GateCondition

# ----------------------------------------------------------------------- McNemar


def pairs(b: int, c: int, both: int = 5, neither: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Baseline/candidate outcomes with b baseline-only and c candidate-only successes."""
    base = [1] * b + [0] * c + [1] * both + [0] * neither
    cand = [0] * b + [1] * c + [1] * both + [0] * neither
    return np.array(base, float), np.array(cand, float)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (2, 8, 2 * (1 + 10 + 45) / 1024),  # 0.109375, as statsmodels mcnemar(exact=True)
        (0, 5, 2 / 32),  # 0.0625
        (1, 6, 2 * (1 + 7) / 128),  # 0.125
        (3, 3, 1.0),
        (0, 0, 1.0),
    ],
)
def test_mcnemar_exact_known_values(b, c, p):
    m = mcnemar(*pairs(b, c))
    assert (m.b, m.c) == (b, c)
    assert m.method == "exact binomial"
    assert m.p_value == pytest.approx(p, rel=1e-12)


def test_mcnemar_chi_square_known_values():
    # b=10, c=30: (|10-30| - 1)^2 / 40 = 9.025; chi2(1) survival 0.0026631 (tables: 9.0 -> 0.0027)
    m = mcnemar(*pairs(10, 30), exact=False)
    assert m.statistic == pytest.approx(9.025)
    assert m.p_value == pytest.approx(0.002663119, rel=1e-6)
    # Wikipedia's example (b=121, c=59): corrected statistic 61^2/180 = 20.672
    m = mcnemar(*pairs(121, 59))
    assert m.method.startswith("chi-square")
    assert m.statistic == pytest.approx(20.6722, rel=1e-4)
    assert m.p_value == pytest.approx(5.45e-6, rel=1e-3)


def test_mcnemar_ignores_unscorable_pairs():
    base, cand = pairs(0, 5)
    base = np.append(base, np.nan)
    cand = np.append(cand, 1.0)
    assert mcnemar(base, cand).c == 5


def test_binomial_is_symmetric_and_capped():
    assert binom_two_sided(2, 10) == binom_two_sided(8, 10)
    assert binom_two_sided(5, 10) == 1.0


# ----------------------------------------------------------------------- bootstrap


def test_bootstrap_indices_are_seeded():
    a, b = bootstrap_indices(50, 200, 7), bootstrap_indices(50, 200, 7)
    assert a.shape == (200, 50) and np.array_equal(a, b)
    assert not np.array_equal(a, bootstrap_indices(50, 200, 8))


def test_constant_difference_has_a_zero_width_interval():
    base = Scores("m", np.linspace(0, 1, 40))
    cand = Scores("m", base.values + 0.25)
    bs = paired_bootstrap(base, cand, bootstrap_indices(40, 500, 0))
    assert bs.diff == pytest.approx(0.25)
    assert bs.low == pytest.approx(0.25) and bs.high == pytest.approx(0.25)
    assert bs.p_value == 0.0


def test_bootstrap_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    base = Scores("m", rng.random(30))
    cand = Scores("m", rng.random(30))
    idx = bootstrap_indices(30, 300, 3)
    diffs = [cand.values[row].mean() - base.values[row].mean() for row in idx]
    bs = paired_bootstrap(base, cand, idx)
    assert bs.low == pytest.approx(np.percentile(diffs, 2.5))
    assert bs.high == pytest.approx(np.percentile(diffs, 97.5))


def test_bootstrap_interval_matches_the_normal_approximation():
    # Paired differences d_i in {-1, 0, 1, 2} equally often: mean 0.5, sd sqrt(1.25).
    n = 2000
    d = np.tile([-1.0, 0.0, 1.0, 2.0], n // 4)
    base = Scores("m", np.zeros(n))
    cand = Scores("m", d)
    bs = paired_bootstrap(base, cand, bootstrap_indices(n, 2000, 0))
    half = 1.96 * math.sqrt(1.25 / n)  # 0.049
    assert bs.low == pytest.approx(0.5 - half, abs=0.01)
    assert bs.high == pytest.approx(0.5 + half, abs=0.01)
    assert bs.p_value < 0.001


def test_identical_contestants_are_not_significant():
    v = np.array([1, 0, 1, 1, 0, 1, 0, 0] * 5, float)
    cmp = compare(
        Scores("em", v, True), Scores("em", v.copy(), True), bootstrap_indices(40, 300, 0)
    )
    assert (cmp.diff, cmp.low, cmp.high, cmp.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not cmp.significant and cmp.test.startswith("McNemar")


def test_value_interval_brackets_the_value():
    s = Scores("m", np.random.default_rng(0).random(100))
    lo, hi = value_interval(s, bootstrap_indices(100, 400, 0))
    assert lo < s.value() < hi


# ----------------------------------------------------------------------- gate


def cmp(base: float, cand: float, low: float, high: float, better: str = "higher") -> Comparison:
    return Comparison("m", base, cand, cand - base, low, high, 0.5, "bootstrap", better)


def cond(**kw) -> GateCondition:
    return GateCondition(metric="m", **kw)


def test_gate_bounds_pass_and_fail_with_messages():
    c = cmp(0.50, 0.62, 0.03, 0.20)
    assert check_condition(cond(min=0.6), c, "run").passed
    r = check_condition(cond(min=0.7), c, "run")
    assert not r.passed and "value 0.62 < min 0.7" in r.message
    assert check_condition(cond(min_gain=0.1), c, "run").passed
    r = check_condition(cond(min_gain=0.2), c, "run")
    assert not r.passed and "min_gain 0.2" in r.message
    assert check_condition(cond(max=0.7), c, "run").passed
    assert not check_condition(cond(max=0.6), c, "run").passed
    assert check_condition(cond(significant=True), c, "run").passed
    # a combined condition fails if any bound fails, and names it
    r = check_condition(cond(min=0.6, min_gain=0.5, significant=True), c, "run")
    assert not r.passed and "min_gain" in r.message and "min 0.6" not in r.message


def test_gate_regression_and_ratio():
    worse = cmp(0.80, 0.75, -0.1, 0.01)
    assert check_condition(cond(max_regression=0.05), worse, "r").passed
    assert not check_condition(cond(max_regression=0.01), worse, "r").passed
    tokens = cmp(400.0, 60.0, -345, -335, better="lower")
    assert check_condition(cond(max_ratio=0.5), tokens, "r").passed
    assert not check_condition(cond(max_ratio=0.1), tokens, "r").passed
    # lower is better: significant means the interval lies below 0
    assert check_condition(cond(significant=True), tokens, "r").passed
    assert not check_condition(cond(significant=True), cmp(1, 2, 0.5, 1.5, "lower"), "r").passed


def test_gate_significance_is_directional_for_quality():
    assert not check_condition(cond(significant=True), cmp(0.8, 0.6, -0.3, -0.1), "r").passed
    assert not check_condition(cond(significant=True), cmp(0.5, 0.55, -0.02, 0.12), "r").passed


def test_gate_unknown_metric_is_an_error():
    with pytest.raises(EvalError, match="unknown measure"):
        check_gate([GateCondition(metric="nope", min=1)], {"m": cmp(0, 1, 0, 1)}, "r")


def test_gate_condition_needs_a_bound():
    with pytest.raises(ValueError, match="needs one of"):
        GateCondition(metric="m")
