"""The CI gate: the recipe's conditions checked against each candidate vs each baseline.

A condition names one measure and any of its bounds; its message says each bound's value,
so a red CI line reads on its own ("json_valid: gain +0.02 < min_gain 0.05").

Every bound respects the measure's direction (``higher``/``lower`` is better):

- ``min_gain``: the improvement, candidate - baseline for higher-is-better measures and
  baseline - candidate for lower-is-better ones, must be at least this.
- ``max_regression``: the worsening (the negated improvement) may be at most this.
- ``max_ratio``: the "cost" ratio, candidate / baseline when lower is better and
  baseline / candidate when higher is better, may be at most this (below 1 = better).
- ``significant: true``: the 95% interval of the improvement must lie above 0 (above
  ``-max_regression`` for a non-inferiority condition, one with ``max_regression`` and no
  ``min_gain``). An interval wholly on the wrong side fails; one straddling the threshold
  cannot decide, and the verdict is **insufficient evidence** (its own exit code): more
  eval rows are needed, not a different model.

Neutral measures (``length``) have no better side: only ``min``, ``max``, ``max_ratio``
and a two-sided ``significant`` apply to them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ladle.errors import EvalError
from ladle.evaluate.result import UNPAIRED, Verdict
from ladle.evaluate.stats import Comparison
from ladle.recipe.schema import GateCondition


@dataclass(frozen=True)
class GateResult:
    candidate: str
    metric: str
    name: str
    """Short label of the condition, e.g. ``json_valid: min_gain 0.05, significant``."""
    verdict: Verdict
    message: str
    condition: dict[str, Any]
    baseline: str = "baseline"

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def describe(cond: GateCondition) -> str:
    parts = [
        f"{k} {getattr(cond, k):g}"
        for k in ("min", "max", "min_gain", "max_regression", "max_ratio")
        if getattr(cond, k) is not None
    ]
    if cond.significant:
        parts.append("significant")
    return f"{cond.metric}: {', '.join(parts)}"


def check_keys(conditions: Iterable[GateCondition], known: Mapping[str, str]) -> None:
    """Fail before any generation when a condition names a measure that will not exist,
    or asks a neutral or unpaired measure for something it cannot give."""
    conditions = list(conditions)
    bad = [c.metric for c in conditions if c.metric not in known]
    if bad:
        raise EvalError(
            f"gate names unknown measure(s) {', '.join(map(repr, bad))}; "
            f"known: {', '.join(sorted(known))}"
        )
    for c in conditions:
        if known[c.metric] == "none" and (c.min_gain is not None or c.max_regression is not None):
            raise EvalError(
                f"gate: {c.metric!r} has no better direction, so min_gain/max_regression "
                "mean nothing for it; use min, max or max_ratio"
            )
        if c.metric in UNPAIRED and c.significant:
            raise EvalError(
                f"gate: {c.metric!r} comes from a separate timing pass, not paired per-example "
                "values, so it has no significance test; drop `significant` (use max_ratio)"
            )


TOLERANCE = 1e-9
"""Bounds are compared with this slack, so 0.80 - 0.75 passes ``max_regression: 0.05``
despite binary floating point (0.05000000000000004)."""


def _le(a: float, b: float) -> bool:
    return a <= b + TOLERANCE * max(1.0, abs(b))


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def improvement(cmp: Comparison) -> tuple[float, float, float]:
    """(gain, low, high): candidate - baseline turned so that positive is better."""
    if cmp.better == "lower":
        return -cmp.diff, -cmp.high, -cmp.low
    return cmp.diff, cmp.low, cmp.high


def cost_ratio(cmp: Comparison) -> float:
    """candidate / baseline, inverted for higher-is-better measures (below 1: better)."""
    num, den = (
        (cmp.baseline, cmp.candidate) if cmp.better == "higher" else (cmp.candidate, cmp.baseline)
    )
    if den == 0:
        return 1.0 if num == 0 else math.inf
    return num / den


def _significance(cond: GateCondition, cmp: Comparison) -> tuple[Verdict, str]:
    if math.isnan(cmp.low) or math.isnan(cmp.high):
        return "insufficient evidence", "95% CI undefined (no comparable examples)"
    ci = f"95% CI [{cmp.low:+.4g}, {cmp.high:+.4g}]"
    if cmp.better == "none":
        if cmp.significant:
            return "pass", f"{ci} excludes 0"
        return "insufficient evidence", f"{ci} includes 0"
    _, lo, hi = improvement(cmp)
    non_inferiority = cond.max_regression is not None and cond.min_gain is None
    t = -cond.max_regression if non_inferiority and cond.max_regression is not None else 0.0
    what = "of the improvement"
    if (lo >= t - TOLERANCE) if non_inferiority else (lo > t):
        return "pass", f"{ci}: interval {what} [{lo:+.4g}, {hi:+.4g}] is above {t:+g}"
    if (hi < t) if non_inferiority else (hi <= t):
        return "fail", f"{ci}: interval {what} [{lo:+.4g}, {hi:+.4g}] is not above {t:+g}"
    return (
        "insufficient evidence",
        f"{ci}: interval {what} [{lo:+.4g}, {hi:+.4g}] straddles {t:+g} "
        "(more eval rows needed to decide)",
    )


def check_condition(
    cond: GateCondition, cmp: Comparison, candidate: str, baseline: str = "baseline"
) -> GateResult:
    failures: list[str] = []
    notes: list[str] = []

    def bound(ok: bool, what: str) -> None:
        (notes if ok else failures).append(what)

    c = cmp.candidate
    gain, _, _ = improvement(cmp)
    if math.isnan(c):
        failures.append("candidate value is undefined (NaN)")
    else:
        if cond.min is not None:
            ok = _le(cond.min, c)
            bound(ok, f"value {_fmt(c)} {'>=' if ok else '<'} min {cond.min:g}")
        if cond.max is not None:
            ok = _le(c, cond.max)
            bound(ok, f"value {_fmt(c)} {'<=' if ok else '>'} max {cond.max:g}")
        if cond.min_gain is not None:
            ok = _le(cond.min_gain, gain)
            bound(ok, f"gain {gain:+.4g} {'>=' if ok else '<'} min_gain {cond.min_gain:g}")
        if cond.max_regression is not None:
            ok = _le(-gain, cond.max_regression)
            bound(
                ok,
                f"regression {-gain:.4g} {'<=' if ok else '>'} max_regression "
                f"{cond.max_regression:g}",
            )
        if cond.max_ratio is not None:
            r = cost_ratio(cmp)
            which = "baseline/candidate" if cmp.better == "higher" else "candidate/baseline"
            ok = _le(r, cond.max_ratio)
            bound(ok, f"ratio {which} {_fmt(r)} {'<=' if ok else '>'} max_ratio {cond.max_ratio:g}")
    verdict: Verdict = "fail" if failures else "pass"
    undecided = ""
    if cond.significant:
        sig, text = _significance(cond, cmp)
        if sig == "fail":
            failures.append(text)
            verdict = "fail"
        elif sig == "insufficient evidence":
            undecided = text
            if verdict == "pass":
                verdict = sig
        else:
            notes.append(text)
    if verdict == "fail":
        message = "; ".join(failures)
    elif verdict == "insufficient evidence":
        message = "insufficient evidence: " + "; ".join([undecided, *notes])
    else:
        message = "; ".join(notes)
    return GateResult(
        candidate=candidate,
        metric=cond.metric,
        name=describe(cond),
        verdict=verdict,
        message=f"{cond.metric}: {message}",
        condition=cond.model_dump(exclude_none=True),
        baseline=baseline,
    )


def check_gate(
    conditions: Sequence[GateCondition],
    comparisons: dict[str, Comparison],
    candidate: str,
    baseline: str = "baseline",
) -> list[GateResult]:
    """Every condition for one candidate against one baseline."""
    check_keys(conditions, {k: c.better for k, c in comparisons.items()})
    return [check_condition(c, comparisons[c.metric], candidate, baseline) for c in conditions]
