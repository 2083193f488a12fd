"""The before/after evaluation: baseline and candidates on the same eval set.

Order of work, chosen so that mistakes fail in seconds rather than after generation:
split the rows, check the gate's measure names against the metrics (scored once on the
references themselves), draw the few-shot examples, and only then load models and
generate. One model is held in memory at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ladle.errors import EvalError
from ladle.evaluate.gate import GateResult, check_gate, check_keys
from ladle.evaluate.generate import (
    Generation,
    ModelSource,
    candidate_source,
    generate,
    load_model,
    prompt_renderer,
)
from ladle.evaluate.metrics import Scores, consistency, score_samples
from ladle.evaluate.prompts import Example, build_conversation, select_few_shot, split_row
from ladle.evaluate.stats import Comparison, bootstrap_indices, compare, value_interval
from ladle.recipe.schema import PromptSpec, Recipe

Progress = Callable[[str], None]


@dataclass
class Contestant:
    """One model with its prompt, and everything it produced."""

    name: str
    source: str
    prompt_spec: PromptSpec
    prompts: list[str]
    generation: Generation
    scores: dict[str, Scores]
    load_s: float = 0.0
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """95% bootstrap interval of each measure's own value (the chart's error bars)."""
    loaded_as: str = ""
    """How the weights were put together (QLoRA: 4-bit base + adapter, or merged)."""

    def values(self) -> dict[str, float]:
        return {k: s.value() for k, s in self.scores.items()}


@dataclass
class EvalReport:
    """Everything an evaluation found; ``gate_passed`` is what CI looks at."""

    recipe: str
    n_examples: int
    examples: list[Example]
    baseline: Contestant
    candidates: list[Contestant]
    comparisons: dict[str, dict[str, Comparison]]
    gate: list[GateResult]
    few_shot: list[Example]
    settings: dict[str, Any]
    decontamination: dict[str, Any] | None = None
    output_dir: Path | None = None
    files: list[str] = field(default_factory=list)

    @property
    def gate_passed(self) -> bool:
        """True when every condition holds for every candidate (no conditions: True)."""
        return all(g.passed for g in self.gate)

    @property
    def gate_failures(self) -> list[GateResult]:
        return [g for g in self.gate if not g.passed]


# ----------------------------------------------------------------------- measures


def _percentile(values: np.ndarray, q: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda idx: np.percentile(values[idx], q, axis=1)


def operational_scores(
    gen: Generation, price_prompt: float | None, price_completion: float | None
) -> dict[str, Scores]:
    """Cost and latency as measures, so they get intervals and gate conditions too."""
    pt, ct, lat = gen.prompt_tokens, gen.completion_tokens, gen.latency_s
    out = {
        "prompt_tokens": Scores("prompt_tokens", pt, better="lower"),
        "completion_tokens": Scores("completion_tokens", ct, better="lower"),
        "latency_p50": Scores("latency_p50", lat, better="lower", aggregate=_percentile(lat, 50)),
        "latency_p95": Scores("latency_p95", lat, better="lower", aggregate=_percentile(lat, 95)),
        "tokens_per_s": Scores(
            "tokens_per_s",
            np.divide(ct, lat, out=np.zeros_like(ct), where=lat > 0),
            aggregate=lambda idx: ct[idx].sum(axis=1) / np.maximum(lat[idx].sum(axis=1), 1e-12),
        ),
    }
    if price_prompt is not None or price_completion is not None:
        cost = pt / 1000 * (price_prompt or 0.0) + ct / 1000 * (price_completion or 0.0)
        out["cost"] = Scores("cost", cost, better="lower")
    if any(len(o) > 1 for o in gen.outputs):
        out["consistency"] = Scores("consistency", consistency(gen.outputs))
    return out


def measure_keys(recipe: Recipe, refs: Sequence[str]) -> list[str]:
    """Every measure an evaluation will report (metrics scored on the references)."""
    ev = recipe.evaluate
    keys = list(score_samples(ev.metrics, [[r] for r in refs], refs, allow_code=ev.allow_code))
    keys += ["prompt_tokens", "completion_tokens", "latency_p50", "latency_p95", "tokens_per_s"]
    if ev.price_per_1k_prompt is not None or ev.price_per_1k_completion is not None:
        keys.append("cost")
    if ev.generation.num_samples > 1:
        keys.append("consistency")
    return keys


# ----------------------------------------------------------------------- evaluate


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = p.resolve().name or "candidate"
        name, k = base, 2
        while name in names or name == "baseline":
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def run_contestant(
    name: str,
    source: ModelSource,
    spec: PromptSpec,
    shots: Sequence[Example],
    examples: Sequence[Example],
    recipe: Recipe,
    progress: Progress,
) -> Contestant:
    ev = recipe.evaluate
    from ladle.device import pick_device

    t0 = time.perf_counter()
    model, tok = load_model(
        source,
        dtype=recipe.model.dtype,
        device=pick_device().type,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    load_s = time.perf_counter() - t0
    render = prompt_renderer(source.tokenizer_dir, recipe.data.template)
    prompts = [render(build_conversation(e, spec, shots)) for e in examples]
    progress(
        f"{name}: generating {len(prompts)} answers ({source.adapter_dir or source.model_dir})"
    )
    gen = generate(
        model, tok, prompts, ev.generation, seed=recipe.seed, precision=ev.generation.precision
    )
    del model
    refs = [e.reference for e in examples]
    scores = score_samples(ev.metrics, gen.outputs, refs, allow_code=ev.allow_code)
    scores.update(operational_scores(gen, ev.price_per_1k_prompt, ev.price_per_1k_completion))
    progress(f"{name}: done in {gen.total_s:.1f}s ({gen.precision})")
    return Contestant(
        name,
        str(source.adapter_dir or source.model_dir),
        spec,
        prompts,
        gen,
        scores,
        load_s,
        loaded_as=source.describe(),
    )


def evaluate(
    recipe: Recipe,
    eval_rows: Sequence[dict[str, Any]],
    train_rows: Sequence[dict[str, Any]],
    candidates: Sequence[Path] | Path,
    output_dir: Path | None,
    *,
    decontamination: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate the prompted base model against each candidate and write the reports.

    ``decontamination`` is what the data engine says about train/eval overlap, e.g.
    ``{"decontaminated": True, "exact": 3, "near": 1}``; the report quotes it. With
    ``output_dir=None`` nothing is written (the caller gets the report object only).
    """
    from ladle.models import resolve_model

    say: Progress = progress or (lambda _msg: None)
    ev = recipe.evaluate
    cands = (
        [Path(candidates)] if isinstance(candidates, str | Path) else [Path(c) for c in candidates]
    )
    if not cands:
        raise EvalError("no candidate to evaluate: pass at least one run folder")
    rows = list(eval_rows)[: ev.limit] if ev.limit else list(eval_rows)
    if not rows:
        raise EvalError("the eval set is empty: add a dataset with `split: eval`")
    examples = [split_row(r, f"eval row {i + 1}") for i, r in enumerate(rows)]
    refs = [e.reference for e in examples]
    check_keys(ev.gate, measure_keys(recipe, refs))
    if output_dir is not None:
        from ladle.evaluate.report import check_output_dir

        check_output_dir(Path(output_dir))

    k = max(ev.baseline.few_shot, ev.candidate.few_shot)
    train = [split_row(r, f"train row {i + 1}") for i, r in enumerate(train_rows)] if k else []
    shots = select_few_shot(train, k, recipe.seed, examples)

    base_dir = resolve_model(recipe.model.base)
    sources = [  # all paths checked up front
        candidate_source(c, base_dir, recipe, ev.candidate.merge) for c in cands
    ]
    baseline = run_contestant(
        "baseline",
        ModelSource(base_dir),
        ev.baseline,
        shots[: ev.baseline.few_shot],
        examples,
        recipe,
        say,
    )
    contestants = [
        run_contestant(
            name, src, ev.candidate, shots[: ev.candidate.few_shot], examples, recipe, say
        )
        for name, src in zip(_unique_names(cands), sources, strict=True)
    ]

    idx = bootstrap_indices(len(examples), ev.bootstrap, recipe.seed)
    for c in [baseline, *contestants]:
        c.ci = {key: value_interval(s, idx) for key, s in c.scores.items()}
    comparisons: dict[str, dict[str, Comparison]] = {}
    gate: list[GateResult] = []
    for c in contestants:
        comparisons[c.name] = {
            key: compare(baseline.scores[key], s, idx) for key, s in c.scores.items()
        }
        gate += check_gate(ev.gate, comparisons[c.name], c.name)

    report = EvalReport(
        recipe=recipe.name,
        n_examples=len(examples),
        examples=examples,
        baseline=baseline,
        candidates=contestants,
        comparisons=comparisons,
        gate=gate,
        few_shot=shots[: ev.baseline.few_shot],
        settings={
            "seed": recipe.seed,
            "bootstrap": ev.bootstrap,
            "base_model": recipe.model.base,
            "generation": ev.generation.model_dump(),
            "price_per_1k_prompt": ev.price_per_1k_prompt,
            "price_per_1k_completion": ev.price_per_1k_completion,
        },
        decontamination=decontamination,
    )
    if output_dir is not None:
        from ladle.evaluate.report import write_reports

        write_reports(report, Path(output_dir))
    return report
