"""The before/after evaluation: baselines and candidates on the same eval set.

Order of work, chosen so that mistakes fail in seconds rather than after generation:
split the rows, check the gate's measure names against the metrics (scored once on the
references themselves), resolve every contestant's model or endpoint, draw the few-shot
examples, and only then load models and generate. One model is held in memory at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ladle.errors import EvalError
from ladle.evaluate import contestants as cs
from ladle.evaluate.gate import GateResult, check_gate, check_keys
from ladle.evaluate.generate import ModelSource, candidate_source
from ladle.evaluate.judge import judge_keys, make_judge, pairwise_values, score_values
from ladle.evaluate.metrics import Better, Scores, score_samples
from ladle.evaluate.power import PowerLine, plan
from ladle.evaluate.prompts import Example, select_few_shot, split_row
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
from ladle.recipe.schema import ContestantSpec, Recipe, SuiteSpec

Progress = Callable[[str], None]

QUANTILES = {"latency_p50": 50.0, "latency_p95": 95.0}


def measure_keys(recipe: Recipe, refs: Sequence[str]) -> dict[str, Better]:
    """Every measure an evaluation will report, with its better direction (metrics are
    scored on the references themselves to learn their keys)."""
    ev = recipe.evaluate
    scored = score_samples(ev.metrics, [[r] for r in refs], refs, allow_code=ev.allow_code)
    keys: dict[str, Better] = {k: s.better for k, s in scored.items()}
    keys.update({m.key: "higher" for m in judge_keys(ev.metrics)})
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


@dataclass(frozen=True)
class Entrant:
    """A contestant before it runs: its report name, weights or server, prompt, and the
    run folder it came from (for the training time in its manifest)."""

    name: str
    src: cs.Source
    spec: ContestantSpec
    path: Path | None = None


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
    """Evaluate every candidate against each baseline, on the eval set and on each
    regression suite, and return the report (a value: ``report.write_reports`` writes it).

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
    check_keys(ev.gate, measure_keys(recipe, [e.reference for e in examples]))
    suites = [(s, suite_recipe(recipe, s)) for s in ev.suites]
    suite_rows = [read_suite(s, recipe) for s in ev.suites]
    for (suite, sr), srows in zip(suites, suite_rows, strict=True):
        check_keys(suite.gate, measure_keys(sr, [e.reference for e in srows]))

    base_dir = resolve_model(recipe.model.base)
    base = ModelSource(base_dir)
    base_specs = ev.named_baselines()
    bases = [Entrant(n, cs.resolve_source(s, base, base_dir), s) for n, s in base_specs]
    names = _unique_names(cands, [n for n, _ in base_specs])
    entrants = [
        Entrant(n, candidate_source(p, base_dir, recipe, ev.candidate.merge), ev.candidate, p)
        for n, p in zip(names, cands, strict=True)
    ]
    if ev.candidate.model is not None or ev.candidate.endpoint is not None:
        entrants.append(
            Entrant(
                ev.candidate.name or "candidate",
                cs.resolve_source(ev.candidate, base, base_dir),
                ev.candidate,
                Path(ev.candidate.model) if ev.candidate.model else None,
            )
        )

    k = ev.few_shot_needed
    train = [split_row(r, f"train row {i + 1}") for i, r in enumerate(train_rows)] if k else []
    shots = select_few_shot(train, k, recipe.seed, examples)

    report = compare_set(recipe, examples, shots, bases, entrants, say, cache)
    report.few_shot = shots[: max(s.few_shot for _, s in base_specs)]
    report.decontamination = decontamination
    report.power = [p.to_dict() for p in power_plan(recipe, rows)]
    for (suite, sr), srows in zip(suites, suite_rows, strict=True):
        say(f"suite {suite.name}: {len(srows)} rows")
        plain = [replace(e, spec=plain_prompt(e.spec)) for e in bases]
        plain_c = [replace(e, spec=plain_prompt(e.spec)) for e in entrants]
        sub = compare_set(sr, srows, [], plain, plain_c, say, cache)
        sub.recipe = suite.name
        sub.gate = [
            replace(g, name=f"[{suite.name}] {g.name}", message=f"[{suite.name}] {g.message}")
            for g in sub.gate
        ]
        report.suites.append(sub)
    return report


def plain_prompt(spec: ContestantSpec) -> ContestantSpec:
    """A suite's rows carry their own prompt: no main-task system prompt or examples."""
    return spec.model_copy(update={"system_prompt": None, "few_shot": 0})


def suite_recipe(recipe: Recipe, suite: SuiteSpec) -> Recipe:
    """The recipe as a suite sees it: the suite's metrics and gate, no latency pass."""
    ev = recipe.evaluate.model_copy(
        update={
            "metrics": suite.metrics,
            "gate": suite.gate,
            "limit": suite.limit,
            "latency_sample": 0,
            "suites": [],
        }
    )
    return recipe.model_copy(update={"evaluate": ev})


def read_suite(suite: SuiteSpec, recipe: Recipe) -> list[Example]:
    from ladle.data import load_dataset
    from ladle.demo import ensure_generated

    ensure_generated(recipe)  # a generated suite is written once, then it is data
    rows = load_dataset(suite.dataset, 0).rows
    rows = rows[: suite.limit] if suite.limit else rows
    if not rows:
        raise EvalError(f"suite {suite.name!r}: no rows in {suite.dataset.path}")
    where = f"suite {suite.name} row"
    return [
        split_row({"messages": r.get("messages")}, f"{where} {i + 1}") for i, r in enumerate(rows)
    ]


def compare_set(
    recipe: Recipe,
    examples: Sequence[Example],
    shots: Sequence[Example],
    bases: Sequence[Entrant],
    entrants: Sequence[Entrant],
    say: Progress,
    cache: bool,
) -> EvalReport:
    """Run every contestant on one eval set, compare each candidate with each baseline
    and check the gate."""
    ev = recipe.evaluate

    def one(e: Entrant) -> Contestant:
        return cs.run(
            e.name, e.src, e.spec, shots[: e.spec.few_shot], examples, recipe, say, use_cache=cache
        )

    baselines = [one(e) for e in bases]
    contestants = [one(e) for e in entrants]
    judges = {
        m.key: make_judge(
            m.judge, recipe.model.base, seed=recipe.seed, use_cache=cache, dtype=recipe.model.dtype
        )
        for m in judge_keys(ev.metrics)
        if m.judge is not None
    }
    judge_info: list[dict[str, Any]] = []
    for key, j in judges.items():
        if j.spec.mode != "score":
            continue
        say(f"judge {key}: {j.name} grades {len(examples)} answers per contestant")
        unread = {}
        for c in [*baselines, *contestants]:
            values = score_values(j, examples, c.generation.outputs)
            unread[c.name] = int(np.isnan(values).sum())
            c.scores[key] = Scores(key, values)
        judge_info.append({"metric": key, "judge": j.name, "mode": "score", "unreadable": unread})
    idx = bootstrap_indices(len(examples), ev.bootstrap, recipe.seed)
    for c in [*baselines, *contestants]:
        c.ci = {key: value_interval(s, idx) for key, s in c.scores.items()}
        _timing(c, ev.bootstrap, recipe.seed)
    comparisons: dict[str, dict[str, dict[str, Comparison]]] = {}
    gate: list[GateResult] = []
    economics: list[dict[str, Any]] = []
    for c, e in zip(contestants, entrants, strict=True):
        comparisons[c.name] = {}
        train_s = cs.read_train_seconds(e.path) if e.path is not None else None
        price = ev.training_price_per_hour
        if price is None:  # trained on the hardware it will be served on
            price = c.prompt_spec.price_per_hour
        for b in baselines:
            cmp = {key: compare(b.scores[key], s, idx) for key, s in c.scores.items()}
            cmp.update(_unpaired(b, c, ev.bootstrap, recipe.seed))
            for key, j in judges.items():
                if j.spec.mode != "pairwise":
                    continue
                say(f"judge {key}: {j.name} compares {c.name} with {b.name}, both orders")
                vals, agree, unread_n = pairwise_values(
                    j, examples, b.generation.outputs, c.generation.outputs
                )
                tie = Scores(key, np.full(len(vals), 0.5))  # the baseline's side of a tie
                cmp[key] = compare(tie, Scores(key, vals), idx)
                judge_info.append(
                    {
                        "metric": key,
                        "judge": j.name,
                        "mode": "pairwise",
                        "candidate": c.name,
                        "baseline": b.name,
                        "win_rate": float(np.mean(vals)),
                        "agreement_rate": agree,
                        "unreadable": unread_n,
                    }
                )
            comparisons[c.name][b.name] = cmp
            gate += check_gate(ev.gate, cmp, c.name, b.name)
            economics.append(break_even(b, c, train_s, price))
    gate += failed_request_conditions([*baselines, *contestants], ev.max_failed_requests)
    return EvalReport(
        recipe=recipe.name,
        n_examples=len(examples),
        examples=list(examples),
        baselines=baselines,
        candidates=contestants,
        comparisons=comparisons,
        gate=gate,
        few_shot=[],
        settings={
            "seed": recipe.seed,
            "bootstrap": ev.bootstrap,
            "base_model": recipe.model.base,
            "generation": ev.generation.model_dump(),
            "latency_sample": ev.latency_sample,
            "cache": cache,
        },
        break_even=economics,
        judges=judge_info,
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
