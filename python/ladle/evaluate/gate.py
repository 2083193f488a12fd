"""The CI gate: the recipe's conditions checked against candidate vs baseline.

A condition names one measure and any of its bounds; it passes only when every bound it
sets holds, and its message says each bound's value, so a red CI line reads on its own
("json_valid: gain +0.02 < min_gain 0.05"). ``significant`` asks that the 95% interval of
candidate - baseline lie entirely on the good side of 0: above for quality metrics,
below for cost and latency (lower is better), either side for neutral ones (length).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ladle.errors import EvalError
from ladle.evaluate.stats import Comparison
from ladle.recipe.schema import GateCondition


@dataclass(frozen=True)
class GateResult:
    candidate: str
    metric: str
    name: str
    """Short label of the condition, e.g. ``json_valid: min_gain 0.05, significant``."""
    passed: bool
    message: str
    condition: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(cond: GateCondition) -> str:
    parts = [
        f"{k} {getattr(cond, k):g}"
        for k in ("min", "max", "min_gain", "max_regression", "max_ratio")
        if getattr(cond, k) is not None
    ]
    if cond.significant:
        parts.append("significant")
    return f"{cond.metric}: {', '.join(parts)}"


def check_keys(conditions: Iterable[GateCondition], known: Iterable[str]) -> None:
    """Fail before any generation when a condition names a measure that will not exist."""
    known = set(known)
    bad = [c.metric for c in conditions if c.metric not in known]
    if bad:
        raise EvalError(
            f"gate names unknown measure(s) {', '.join(map(repr, bad))}; "
            f"known: {', '.join(sorted(known))}"
        )


TOLERANCE = 1e-9
"""Bounds are compared with this slack, so 0.80 - 0.75 passes ``max_regression: 0.05``
despite binary floating point (0.05000000000000004)."""


def _le(a: float, b: float) -> bool:
    return a <= b + TOLERANCE * max(1.0, abs(b))


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def check_condition(cond: GateCondition, cmp: Comparison, candidate: str) -> GateResult:
    failures: list[str] = []
    notes: list[str] = []

    def bound(ok: bool, what: str) -> None:
        (notes if ok else failures).append(what)

    c, b, d = cmp.candidate, cmp.baseline, cmp.diff
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
            ok = _le(cond.min_gain, d)
            bound(ok, f"gain {d:+.4g} {'>=' if ok else '<'} min_gain {cond.min_gain:g}")
        if cond.max_regression is not None:
            ok = _le(b - c, cond.max_regression)
            bound(
                ok,
                f"regression {b - c:.4g} {'<=' if ok else '>'} max_regression "
                f"{cond.max_regression:g}",
            )
        if cond.max_ratio is not None:
            ok = _le(cmp.ratio, cond.max_ratio)
            bound(ok, f"ratio {_fmt(cmp.ratio)} {'<=' if ok else '>'} max_ratio {cond.max_ratio:g}")
    if cond.significant:
        if cmp.better == "lower":
            ok, side = cmp.high < 0, "below 0"
        elif cmp.better == "higher":
            ok, side = cmp.low > 0, "above 0"
        else:
            ok, side = cmp.significant, "away from 0"
        bound(ok, f"95% CI [{cmp.low:+.4g}, {cmp.high:+.4g}] {'is' if ok else 'is not'} {side}")
    passed = not failures
    message = "; ".join(failures if failures else notes)
    return GateResult(
        candidate=candidate,
        metric=cond.metric,
        name=describe(cond),
        passed=passed,
        message=f"{cond.metric}: {message}",
        condition=cond.model_dump(exclude_none=True),
    )


def check_gate(
    conditions: Sequence[GateCondition], comparisons: dict[str, Comparison], candidate: str
) -> list[GateResult]:
    """Every condition for one candidate."""
    check_keys(conditions, comparisons)
    return [check_condition(c, comparisons[c.metric], candidate) for c in conditions]
