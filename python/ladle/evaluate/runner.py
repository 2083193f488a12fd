"""The before/after evaluation: baselines and candidates on the same eval set.

Order of work, chosen so that mistakes fail in seconds rather than after generation:
split the rows, check the gate's measure names against the metrics (scored once on the
references themselves), resolve every contestant's model or endpoint, draw the few-shot
examples, and only then load models and generate. One model is held in memory at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ladle.errors import EvalError
from ladle.evaluate import contestants as cs
from ladle.evaluate.gate import GateResult, check_gate, check_keys
from ladle.evaluate.generate import ModelSource, candidate_source
from ladle.evaluate.metrics import Better, score_samples
from ladle.evaluate.power import PowerLine, plan
from ladle.evaluate.prompts import select_few_shot, split_row
from ladle.evaluate.result import OPERATIONAL, Contestant, EvalReport
from ladle.evaluate.stats import (
    Comparison,
    bootstrap_indices,
    compare,
    point_comparison,
    quantile_interval,
    unpaired_quantile,
    value_interval,
)
from ladle.recipe.schema import Recipe

Progress = Callable[[str], None]

QUANTILES = {"latency_p50": 50.0, "latency_p95": 95.0}


def measure_keys(recipe: Recipe, refs: Sequence[str]) -> dict[str, Better]:
    """Every measure an evaluation will report, with its better direction (metrics are
    scored on the references themselves to learn their keys)."""
    ev = recipe.evaluate
    scored = score_samples(ev.metrics, [[r] for r in refs], refs, allow_code=ev.allow_code)
    keys: dict[str, Better] = {k: s.better for k, s in scored.items()}
    optional = {
        "cost": cs.any_price(recipe),
        "consistency": ev.generation.num_samples > 1,
        "latency_p50": ev.latency_sample > 0 or _has_endpoint(recipe),
        "latency_p95": ev.latency_sample > 0 or _has_endpoint(recipe),
    }
    keys.update({k: b for k, b in OPERATIONAL.items() if optional.get(k, True)})
    return keys


def power_plan(recipe: Recipe, eval_rows: Sequence[dict[str, Any]]) -> list[PowerLine]:
    """The power lines for a recipe and its eval rows (after ``evaluate.limit``): gated
    quality measures bounded in [0, 1] (as scored on the references themselves)."""
    ev = recipe.evaluate
    rows = list(eval_rows)[: ev.limit] if ev.limit else list(eval_rows)
    refs = [split_row(r, f"eval row {i + 1}").reference for i, r in enumerate(rows)]
    scored = score_samples(ev.metrics, [[r] for r in refs], refs, allow_code=ev.allow_code)
    bounded = {
        k: s.binary
        for k, s in scored.items()
        if s.better == "higher"
        and bool(
            np.all((s.values[~np.isnan(s.values)] >= 0) & (s.values[~np.isnan(s.values)] <= 1))
        )
    }
    return plan(list(ev.gate), bounded, len(rows), ev.power)


def _has_endpoint(recipe: Recipe) -> bool:
    ev = recipe.evaluate
    return any(s.endpoint is not None for _, s in [*ev.named_baselines(), ("c", ev.candidate)])


def _unique_names(paths: Sequence[Path], taken: Sequence[str]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = p.resolve().name or "candidate"
        name, k = base, 2
        while name in names or name in taken:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _timing(c: Contestant, resamples: int, seed: int) -> None:
    """Latency quantiles (with intervals of the quantiles) and throughput as values."""
    for key, q in QUANTILES.items():
        if c.latency.size:
            v, lo, hi = quantile_interval(c.latency, q, resamples, seed)
            c.unpaired[key], c.ci[key] = v, (lo, hi)
    c.operations["latency_s"] = {
        key: {"value": c.unpaired.get(key), "ci95": list(c.ci.get(key, (None, None)))}
        for key in QUANTILES
    } | {"n": int(c.latency.size)}
    c.unpaired["tokens_per_s"] = c.operations["throughput"]["tokens_per_s"]
    cost = c.scores.get("cost")
    per_request = cost.value() if cost is not None else math.nan
    c.operations["cost_per_1k_requests"] = None if math.isnan(per_request) else 1000 * per_request


def _unpaired(b: Contestant, c: Contestant, resamples: int, seed: int) -> dict[str, Comparison]:
    out: dict[str, Comparison] = {}
    if b.latency.size and c.latency.size:
        for key, q in QUANTILES.items():
            out[key] = unpaired_quantile(
                key, b.latency, c.latency, q, OPERATIONAL[key], resamples, seed
            )
    out["tokens_per_s"] = point_comparison(
        "tokens_per_s", b.unpaired["tokens_per_s"], c.unpaired["tokens_per_s"], "higher"
    )
    return out


def break_even(
    b: Contestant, c: Contestant, train_s: float | None, price_per_hour: float | None
) -> dict[str, Any]:
    """When does the candidate's cheaper serving pay back its training compute?"""
    cb, cc = b.operations.get("cost_per_1k_requests"), c.operations.get("cost_per_1k_requests")
    out: dict[str, Any] = {
        "candidate": c.name,
        "baseline": b.name,
        "baseline_cost_per_1k": cb,
        "candidate_cost_per_1k": cc,
        "train_s": train_s,
        "training_price_per_hour": price_per_hour,
    }
    if train_s is None or price_per_hour is None:
        out["training_cost"] = None
        out["requests"] = None
        out["note"] = (
            "training time unknown (no run manifest)"
            if train_s is None
            else "set evaluate.training_price_per_hour (or the candidate's price_per_hour)"
        )
        return out
    training_cost = train_s / 3600 * price_per_hour
    out["training_cost"] = training_cost
    if cb is None or cc is None:
        out["requests"], out["note"] = None, "a contestant has no price"
    elif cc >= cb:
        out["requests"], out["note"] = (
            None,
            "never: the candidate costs as much or more per request",
        )
    else:
        out["requests"] = math.ceil(training_cost / ((cb - cc) / 1000))
    return out


def evaluate(
    recipe: Recipe,
    eval_rows: Sequence[dict[str, Any]],
    train_rows: Sequence[dict[str, Any]],
    candidates: Sequence[Path] | Path = (),
    *,
    decontamination: dict[str, Any] | None = None,
    progress: Progress | None = None,
    use_cache: bool | None = None,
) -> EvalReport:
    """Evaluate every candidate against each baseline and return the report (a value:
    ``report.write_reports`` writes it).

    ``candidates`` are run / adapter / model folders, each asked with
    ``evaluate.candidate``'s prompt; a ``model`` or ``endpoint`` in that section is one
    more candidate. ``decontamination`` is what the data engine says about train/eval
    overlap, e.g. ``{"decontaminated": True, "exact": 3, "near": 1}``; the report quotes
    it. ``use_cache`` overrides ``evaluate.cache`` (``--no-cache``).
    """
    from ladle.models import resolve_model

    say: Progress = progress or (lambda _msg: None)
    ev = recipe.evaluate
    cache = ev.cache if use_cache is None else use_cache
    cands = (
        [Path(candidates)] if isinstance(candidates, str | Path) else list(map(Path, candidates))
    )
    if not cands and ev.candidate.model is None and ev.candidate.endpoint is None:
        raise EvalError(
            "no candidate to evaluate: pass a run folder, or give evaluate.candidate a "
            "`model` or `endpoint`"
        )
    rows = list(eval_rows)[: ev.limit] if ev.limit else list(eval_rows)
    if not rows:
        raise EvalError("the eval set is empty: add a dataset with `split: eval`")
    examples = [split_row(r, f"eval row {i + 1}") for i, r in enumerate(rows)]
    refs = [e.reference for e in examples]
    check_keys(ev.gate, measure_keys(recipe, refs))

    base_dir = resolve_model(recipe.model.base)
    base = ModelSource(base_dir)
    base_specs = ev.named_baselines()
    base_srcs = [cs.resolve_source(s, base, base_dir) for _, s in base_specs]
    cand_srcs: list[tuple[str, cs.Source, Path | None]] = [
        (n, candidate_source(p, base_dir), p)
        for n, p in zip(_unique_names(cands, [n for n, _ in base_specs]), cands, strict=True)
    ]
    if ev.candidate.model is not None or ev.candidate.endpoint is not None:
        extra = ev.candidate.name or "candidate"
        model_path = Path(ev.candidate.model) if ev.candidate.model else None
        cand_srcs.append((extra, cs.resolve_source(ev.candidate, base, base_dir), model_path))

    k = ev.few_shot_needed
    train = [split_row(r, f"train row {i + 1}") for i, r in enumerate(train_rows)] if k else []
    shots = select_few_shot(train, k, recipe.seed, examples)

    def one(name: str, src: cs.Source, spec: Any) -> Contestant:
        return cs.run(
            name, src, spec, shots[: spec.few_shot], examples, recipe, say, use_cache=cache
        )

    baselines = [one(n, src, s) for (n, s), src in zip(base_specs, base_srcs, strict=True)]
    contestants = [one(n, src, ev.candidate) for n, src, _ in cand_srcs]

    idx = bootstrap_indices(len(examples), ev.bootstrap, recipe.seed)
    for c in [*baselines, *contestants]:
        c.ci = {key: value_interval(s, idx) for key, s in c.scores.items()}
        _timing(c, ev.bootstrap, recipe.seed)
    comparisons: dict[str, dict[str, dict[str, Comparison]]] = {}
    gate: list[GateResult] = []
    economics: list[dict[str, Any]] = []
    for c, (_, _, path) in zip(contestants, cand_srcs, strict=True):
        comparisons[c.name] = {}
        train_s = cs.read_train_seconds(path) if path is not None else None
        price = ev.training_price_per_hour
        if price is None:  # trained on the hardware it will be served on
            price = c.prompt_spec.price_per_hour
        for b in baselines:
            cmp = {key: compare(b.scores[key], s, idx) for key, s in c.scores.items()}
            cmp.update(_unpaired(b, c, ev.bootstrap, recipe.seed))
            comparisons[c.name][b.name] = cmp
            gate += check_gate(ev.gate, cmp, c.name, b.name)
            economics.append(break_even(b, c, train_s, price))
    gate += failed_request_conditions([*baselines, *contestants], ev.max_failed_requests)

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
            "latency_sample": ev.latency_sample,
            "cache": cache,
        },
        decontamination=decontamination,
        power=[p.to_dict() for p in power_plan(recipe, rows)],
        break_even=economics,
    )


def failed_request_conditions(contestants: Sequence[Contestant], allowed: int) -> list[GateResult]:
    """A gate line per endpoint contestant: failed requests are counted against
    ``evaluate.max_failed_requests``, so an outage cannot pass as a model that is wrong."""
    out = []
    for c in contestants:
        req = c.operations.get("requests")
        if not req:
            continue
        failed = int(req["failed"])
        ok = failed <= allowed
        detail = f" (first: {req['errors'][0]})" if req["errors"] else ""
        out.append(
            GateResult(
                candidate=c.name,
                metric="failed_requests",
                name=f"failed_requests: max {allowed}",
                verdict="pass" if ok else "fail",
                message=f"failed_requests: {failed} of {req['total']} requests failed after "
                f"retries {'<=' if ok else '>'} max_failed_requests {allowed}{detail}",
                condition={"metric": "failed_requests", "max": allowed},
                baseline="-",
            )
        )
    return out
