"""How small a difference can this eval set detect? Printed before anything is trained.

For each gated quality measure, the minimum detectable difference (MDE) at the planned
power (80%) and the report's confidence level (95%, two-sided):

- binary metrics use the paired design (both contestants answer the same rows; McNemar):
  Connor's (1987) sample size ``n = (z_a sqrt(p_d) + z_b sqrt(p_d - d^2))^2 / d^2``, where
  ``p_d`` is the share of discordant pairs. It is unknown before training, so the plan
  assumes ``evaluate.power.discordance`` (default 0.5: outcomes as independent as two
  coin flips, the most variable case short of systematic disagreement);
- other measures bounded in [0, 1] (a mean of field accuracies, ROUGE) use the normal
  approximation with the standard deviation of the per-row difference assumed at
  ``evaluate.power.sd`` (default 0.5).

Unbounded measures (tokens, cost, latency) are not planned: their scale is not known
before a run. When a condition's ``min_gain`` lies below the MDE, the gate would mostly
say "insufficient evidence" or pass on noise, so Ladle warns with the rows needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from ladle.recipe.schema import GateCondition, PowerSpec

LEVEL = 0.95


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def n_paired_binary(delta: float, discordance: float, power: float, level: float = LEVEL) -> int:
    """Rows needed to detect a paired difference ``delta`` (> 0) in a binary metric."""
    pd = max(discordance, delta)  # a difference of d needs at least d discordant rows
    za, zb = _z(1 - (1 - level) / 2), _z(power)
    return math.ceil((za * math.sqrt(pd) + zb * math.sqrt(pd - delta**2)) ** 2 / delta**2)


def mde_paired_binary(n: int, discordance: float, power: float, level: float = LEVEL) -> float:
    """Smallest paired difference detectable with ``n`` rows (bisection on the formula)."""
    lo, hi = 1e-6, 1.0
    if n_paired_binary(hi, discordance, power, level) > n:
        return math.inf
    for _ in range(60):
        mid = (lo + hi) / 2
        if n_paired_binary(mid, discordance, power, level) <= n:
            hi = mid
        else:
            lo = mid
    return hi


def n_continuous(delta: float, sd: float, power: float, level: float = LEVEL) -> int:
    """Rows needed to detect a paired mean difference ``delta`` (> 0)."""
    za, zb = _z(1 - (1 - level) / 2), _z(power)
    return math.ceil(((za + zb) * sd / delta) ** 2)


def mde_continuous(n: int, sd: float, power: float, level: float = LEVEL) -> float:
    za, zb = _z(1 - (1 - level) / 2), _z(power)
    return (za + zb) * sd / math.sqrt(max(n, 1))


@dataclass(frozen=True)
class PowerLine:
    metric: str
    design: str
    n: int
    mde: float
    min_gain: float | None
    rows_needed: int | None
    """Rows needed for ``min_gain`` when it is below the MDE (else None)."""

    @property
    def warning(self) -> bool:
        return self.rows_needed is not None

    def text(self) -> str:
        head = (
            f"{self.metric}: with {self.n} eval rows the smallest difference detectable at "
            f"80% power (95% two-sided, {self.design}) is {self.mde:.3g}"
        )
        if self.min_gain is None:
            return head
        if self.warning:
            return (
                f"WARNING {head}; min_gain {self.min_gain:g} is below it: about "
                f"{self.rows_needed:,} eval rows are needed to detect {self.min_gain:g}"
            )
        return f"{head}; min_gain {self.min_gain:g} is above it"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text()}


def plan(
    conditions: list[GateCondition], binary: dict[str, bool], n: int, spec: PowerSpec
) -> list[PowerLine]:
    """One line per gated quality measure that asks for a gain, significance or
    non-inferiority (``binary`` maps the plannable measures to whether they are 0/1)."""
    out: list[PowerLine] = []
    seen: set[str] = set()
    for c in conditions:
        wants = c.min_gain is not None or c.significant or c.max_regression is not None
        if not wants or c.metric not in binary or c.metric in seen:
            continue
        seen.add(c.metric)
        gain = c.min_gain
        if binary[c.metric]:
            design = f"paired binary, discordance {spec.discordance:g} assumed"
            mde = mde_paired_binary(n, spec.discordance, spec.power)
            need = (
                n_paired_binary(gain, spec.discordance, spec.power)
                if gain is not None and 0 < gain < mde
                else None
            )
        else:
            design = f"paired mean, sd {spec.sd:g} assumed"
            mde = mde_continuous(n, spec.sd, spec.power)
            need = (
                n_continuous(gain, spec.sd, spec.power)
                if gain is not None and 0 < gain < mde
                else None
            )
        out.append(PowerLine(c.metric, design, n, mde, gain, need))
    return out
