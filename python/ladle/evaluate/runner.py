"""The before/after evaluation: baseline and candidates on the same eval set.

Order of work, chosen so that mistakes fail in seconds rather than after generation:
split the rows, check the gate's measure names against the metrics (scored once on the
references themselves), draw the few-shot examples, and only then load models and
generate. One model is held in memory at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
from ladle.evaluate.metrics import Better, Scores, consistency, score_samples
from ladle.evaluate.prompts import Example, build_prompt, select_few_shot, split_row
from ladle.evaluate.result import OPERATIONAL, Contestant, EvalReport
from ladle.evaluate.stats import Comparison, bootstrap_indices, compare, value_interval
from ladle.recipe.schema import PromptSpec, Recipe

Progress = Callable[[str], None]


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


def measure_keys(recipe: Recipe, refs: Sequence[str]) -> dict[str, Better]:
    """Every measure an evaluation will report, with its better direction (metrics are
    scored on the references themselves to learn their keys)."""
    ev = recipe.evaluate
    scored = score_samples(ev.metrics, [[r] for r in refs], refs, allow_code=ev.allow_code)
    keys: dict[str, Better] = {k: s.better for k, s in scored.items()}
    optional = {
        "cost": ev.price_per_1k_prompt is not None or ev.price_per_1k_completion is not None,
        "consistency": ev.generation.num_samples > 1,
    }
    keys.update({k: b for k, b in OPERATIONAL.items() if optional.get(k, True)})
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
    from ladle.evaluate.generate import pick_device

    t0 = time.perf_counter()
    model, tok = load_model(source, dtype=recipe.model.dtype, device=pick_device())
    load_s = time.perf_counter() - t0
    render = prompt_renderer(source.tokenizer_dir, recipe.data.template)
    prompts = [render(build_prompt(e, spec, shots)) for e in examples]
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
        name, str(source.adapter_dir or source.model_dir), spec, prompts, gen, scores, load_s
    )


def evaluate(
    recipe: Recipe,
    eval_rows: Sequence[dict[str, Any]],
    train_rows: Sequence[dict[str, Any]],
    candidates: Sequence[Path] | Path,
    *,
    decontamination: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate every candidate against each baseline and return the report (a value:
    ``report.write_reports`` writes it).

    ``decontamination`` is what the data engine says about train/eval overlap, e.g.
    ``{"decontaminated": True, "exact": 3, "near": 1}``; the report quotes it.
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

    base_specs = [("baseline", ev.baseline)]
    k = max([ev.candidate.few_shot, *(s.few_shot for _, s in base_specs)])
    train = [split_row(r, f"train row {i + 1}") for i, r in enumerate(train_rows)] if k else []
    shots = select_few_shot(train, k, recipe.seed, examples)

    base_dir = resolve_model(recipe.model.base)
    sources = [candidate_source(c, base_dir) for c in cands]  # all paths checked up front
    baselines = [
        run_contestant(
            name, ModelSource(base_dir), spec, shots[: spec.few_shot], examples, recipe, say
        )
        for name, spec in base_specs
    ]
    contestants = [
        run_contestant(
            name, src, ev.candidate, shots[: ev.candidate.few_shot], examples, recipe, say
        )
        for name, src in zip(_unique_names(cands), sources, strict=True)
    ]

    idx = bootstrap_indices(len(examples), ev.bootstrap, recipe.seed)
    for c in [*baselines, *contestants]:
        c.ci = {key: value_interval(s, idx) for key, s in c.scores.items()}
    comparisons: dict[str, dict[str, dict[str, Comparison]]] = {}
    gate: list[GateResult] = []
    for c in contestants:
        comparisons[c.name] = {}
        for b in baselines:
            cmp = {key: compare(b.scores[key], s, idx) for key, s in c.scores.items()}
            comparisons[c.name][b.name] = cmp
            gate += check_gate(ev.gate, cmp, c.name, b.name)

    return EvalReport(
        recipe=recipe.name,
        n_examples=len(examples),
        examples=examples,
        baselines=baselines,
        candidates=contestants,
        comparisons=comparisons,
        gate=gate,
        few_shot=shots[: max(s.few_shot for _, s in base_specs)],
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
