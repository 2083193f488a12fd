"""What an evaluation found, as plain values: contestants, comparisons, gate verdict.

``evaluate()`` returns an :class:`EvalReport`; writing it (``report.write_reports``) and
drawing it (``chart``) are the caller's business, so those modules import this one and
nothing imports them back.

Every measure declares which direction is better (:data:`OPERATIONAL` here for the
operational ones, ``Scores.better`` for quality metrics); the gate reads it, so
``min_gain`` on latency rewards getting faster, never slower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ladle.evaluate.metrics import Better

if TYPE_CHECKING:
    from ladle.evaluate.gate import GateResult
    from ladle.evaluate.generate import Generation
    from ladle.evaluate.metrics import Scores
    from ladle.evaluate.prompts import Example
    from ladle.evaluate.stats import Comparison
    from ladle.recipe.schema import ContestantSpec

OPERATIONAL: dict[str, Better] = {
    "prompt_tokens": "lower",
    "completion_tokens": "lower",
    "cost": "lower",
    "latency_p50": "lower",
    "latency_p95": "lower",
    "tokens_per_s": "higher",
    "consistency": "higher",
}
"""Cost, speed and stability measures (shown below the quality metrics), with the
direction that is better for each. The one list of them."""

UNPAIRED = ("latency_p50", "latency_p95", "tokens_per_s")
"""Measures taken from a separate timing pass (not one value per eval example), so they
get an interval of their own value but no paired test and no ``significant`` condition."""

Verdict = Literal["pass", "fail", "insufficient evidence"]

EXIT_CODES: dict[str, int] = {"pass": 0, "fail": 1, "insufficient evidence": 3}
"""Process exit code per verdict; 2 stays the code of usage and input errors."""


@dataclass
class Contestant:
    """One model or endpoint with its prompt, and everything it produced."""

    name: str
    source: str
    prompt_spec: ContestantSpec
    prompts: list[str]
    generation: Generation
    scores: dict[str, Scores]
    load_s: float = 0.0
    kind: str = "model"
    """``model`` (run locally) or ``endpoint`` (an OpenAI-compatible server)."""
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """95% bootstrap interval of each measure's own value (the chart's error bars)."""
    operations: dict[str, Any] = field(default_factory=dict)
    """Latency pass, throughput, cost per 1,000 requests, failures, cache hits."""
    latency: np.ndarray = field(default_factory=lambda: np.array([]))
    """Per-request latencies in seconds (batch size 1 locally; fresh requests of an
    endpoint): the sample behind latency_p50/p95."""
    unpaired: dict[str, float] = field(default_factory=dict)
    """Values of the :data:`UNPAIRED` measures (latency quantiles, throughput)."""
    loaded_as: str = ""
    """How the weights were put together (QLoRA: 4-bit base + adapter, or merged)."""

    def values(self) -> dict[str, float]:
        return {**{k: s.value() for k, s in self.scores.items()}, **self.unpaired}


@dataclass
class EvalReport:
    """Everything an evaluation found; ``verdict`` (and its exit code) is what CI reads."""

    recipe: str
    n_examples: int
    examples: list[Example]
    baselines: list[Contestant]
    candidates: list[Contestant]
    comparisons: dict[str, dict[str, dict[str, Comparison]]]
    """comparisons[candidate][baseline][measure]: every candidate against each baseline."""
    gate: list[GateResult]
    few_shot: list[Example]
    settings: dict[str, Any]
    decontamination: dict[str, Any] | None = None
    power: list[dict[str, Any]] = field(default_factory=list)
    break_even: list[dict[str, Any]] = field(default_factory=list)
    """Per candidate and baseline: cost per 1,000 requests of each, training cost, and the
    request volume after which the candidate has paid back its training."""
    judges: list[dict[str, Any]] = field(default_factory=list)
    """Per judge metric: the judge model, its mode, agreement rate and unreadable replies."""
    suites: list[EvalReport] = field(default_factory=list)
    """Regression suites: each one a report of its own, whose gate counts in the verdict."""
    output_dir: Path | None = None
    files: list[str] = field(default_factory=list)

    @property
    def all_gate(self) -> list[GateResult]:
        """The gate's results, then every suite's (suite gate lines name the suite)."""
        return [*self.gate, *(g for s in self.suites for g in s.all_gate)]

    @property
    def baseline(self) -> Contestant:
        """The first baseline (the only one in a single-baseline recipe)."""
        return self.baselines[0]

    @property
    def verdict(self) -> Verdict:
        """``fail`` if any condition failed, else ``insufficient evidence`` if any could
        not be decided, else ``pass`` (no conditions: pass)."""
        verdicts = {g.verdict for g in self.all_gate}
        if "fail" in verdicts:
            return "fail"
        if "insufficient evidence" in verdicts:
            return "insufficient evidence"
        return "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def gate_passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def gate_failures(self) -> list[GateResult]:
        return [g for g in self.all_gate if g.verdict != "pass"]
