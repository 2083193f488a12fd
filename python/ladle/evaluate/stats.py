"""Is the difference real? Paired bootstrap intervals and McNemar's test.

Both contestants answer the same prompts, so the comparison is paired: resampling
examples (not outputs) keeps each example's baseline and candidate scores together,
which removes the between-example variance that an unpaired test would count as noise.
The bootstrap draws one ``[B, n]`` index matrix per evaluation (seeded) and reuses it for
every metric, so all intervals in a report come from the same resamples.

McNemar's test looks only at the discordant pairs of a binary metric (baseline right and
candidate wrong, ``b``; the reverse, ``c``). Under "no difference" each discordant pair is
a fair coin, so the exact test is a two-sided binomial test on ``min(b, c)`` of ``b + c``;
for many discordant pairs the chi-square approximation with continuity correction is
used, as most textbooks and statsmodels (``exact=False``) report it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ladle.evaluate.metrics import Scores

EXACT_BELOW = 50
"""Discordant pairs below which McNemar uses the exact binomial test (always valid; the
chi-square approximation is poor for small counts)."""


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """A ``[resamples, n]`` matrix of example indices drawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n), dtype=np.int64 if n > 2**31 else np.int32)


@dataclass(frozen=True)
class Bootstrap:
    diff: float
    low: float
    high: float
    p_value: float


def paired_bootstrap(base: Scores, cand: Scores, idx: np.ndarray, level: float = 0.95) -> Bootstrap:
    """Percentile interval of ``candidate - baseline`` over the resamples in ``idx``.

    The p-value is the two-sided bootstrap p (twice the smaller tail mass at 0), reported
    for metrics where McNemar does not apply.
    """
    full = np.arange(len(base.values))[None, :]
    diff = float(cand.agg(full)[0] - base.agg(full)[0])
    d = cand.agg(idx) - base.agg(idx)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return Bootstrap(diff, math.nan, math.nan, math.nan)
    alpha = (1 - level) / 2
    low, high = np.percentile(d, [100 * alpha, 100 * (1 - alpha)])
    p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return Bootstrap(diff, float(low), float(high), p)


@dataclass(frozen=True)
class McNemar:
    b: int
    """Baseline right, candidate wrong."""
    c: int
    """Baseline wrong, candidate right."""
    statistic: float
    p_value: float
    method: str


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of ``k`` successes in ``n`` fair coin flips (symmetric case)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    # Integer arithmetic keeps the tail exact before the single division.
    return min(1.0, 2 * tail / 2**n)


def chi2_sf_1df(x: float) -> float:
    """Survival function of chi-square with one degree of freedom (no scipy needed)."""
    return math.erfc(math.sqrt(max(x, 0.0) / 2))


def mcnemar(base: np.ndarray, cand: np.ndarray, exact: bool | None = None) -> McNemar:
    """McNemar's test on paired binary outcomes (NaN pairs are left out).

    ``exact=None`` chooses the exact binomial test below :data:`EXACT_BELOW` discordant
    pairs and the continuity-corrected chi-square above.
    """
    keep = ~(np.isnan(base) | np.isnan(cand))
    bb, cc = base[keep] > 0.5, cand[keep] > 0.5
    b = int(np.sum(bb & ~cc))
    c = int(np.sum(~bb & cc))
    n = b + c
    if exact is None:
        exact = n < EXACT_BELOW
    if exact:
        return McNemar(b, c, float(min(b, c)), binom_two_sided(min(b, c), n), "exact binomial")
    stat = (abs(b - c) - 1) ** 2 / n if n else 0.0
    return McNemar(b, c, stat, chi2_sf_1df(stat), "chi-square (continuity-corrected)")


@dataclass(frozen=True)
class Comparison:
    """One measure, baseline against one candidate, with its interval and test."""

    key: str
    baseline: float
    candidate: float
    diff: float
    low: float
    high: float
    p_value: float
    test: str
    better: str
    mcnemar_b: int | None = None
    mcnemar_c: int | None = None

    @property
    def ratio(self) -> float:
        if self.baseline == 0:
            return 1.0 if self.candidate == 0 else math.inf
        return self.candidate / self.baseline

    @property
    def significant(self) -> bool:
        """The 95% interval excludes 0."""
        return bool(self.low > 0 or self.high < 0)


def compare(base: Scores, cand: Scores, idx: np.ndarray) -> Comparison:
    """Bootstrap interval for every measure; McNemar's p for binary ones, else the
    bootstrap p."""
    bs = paired_bootstrap(base, cand, idx)
    full = np.arange(len(base.values))[None, :]
    b_val, c_val = float(base.agg(full)[0]), float(cand.agg(full)[0])
    if base.binary and cand.binary:
        m = mcnemar(base.values, cand.values)
        return Comparison(
            base.key,
            b_val,
            c_val,
            bs.diff,
            bs.low,
            bs.high,
            m.p_value,
            f"McNemar {m.method}",
            base.better,
            m.b,
            m.c,
        )
    return Comparison(
        base.key, b_val, c_val, bs.diff, bs.low, bs.high, bs.p_value, "bootstrap", base.better
    )


def value_interval(scores: Scores, idx: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of one contestant's aggregate value over the resamples."""
    v = scores.agg(idx)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    lo, hi = np.percentile(v, [100 * alpha, 100 * (1 - alpha)])
    return (float(lo), float(hi))


# ----------------------------------------------------------------------- unpaired


def quantile_interval(
    sample: np.ndarray, q: float, resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """(quantile, low, high): the ``q``-th percentile of ``sample`` and its percentile
    bootstrap interval (resampling the sample itself)."""
    sample = sample[~np.isnan(sample)]
    if sample.size == 0:
        return (math.nan, math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, sample.size, size=(resamples, sample.size))
    boot = np.percentile(sample[idx], q, axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
    return (float(np.percentile(sample, q)), float(lo), float(hi))


def unpaired_quantile(
    key: str,
    base: np.ndarray,
    cand: np.ndarray,
    q: float,
    better: str,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> Comparison:
    """Difference of two independent samples' ``q``-th percentiles, with a bootstrap
    interval that resamples each sample on its own. Latency samples are timed one request
    at a time in separate passes, so nothing pairs them: no p-value is given."""
    b = base[~np.isnan(base)]
    c = cand[~np.isnan(cand)]
    if b.size == 0 or c.size == 0:
        return Comparison(
            key,
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            "unpaired bootstrap",
            better,
        )
    rng = np.random.default_rng(seed)
    bb = np.percentile(b[rng.integers(0, b.size, size=(resamples, b.size))], q, axis=1)
    cc = np.percentile(c[rng.integers(0, c.size, size=(resamples, c.size))], q, axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.percentile(cc - bb, [100 * alpha, 100 * (1 - alpha)])
    bv, cv = float(np.percentile(b, q)), float(np.percentile(c, q))
    return Comparison(
        key, bv, cv, cv - bv, float(lo), float(hi), math.nan, "unpaired bootstrap", better
    )


def point_comparison(key: str, base: float, cand: float, better: str) -> Comparison:
    """A measure with one value per contestant (throughput): no interval, no test."""
    return Comparison(key, base, cand, cand - base, math.nan, math.nan, math.nan, "none", better)
