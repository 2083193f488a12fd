"""Running one contestant: a local model or an endpoint, with its prompt, to scores.

Two timings, never confused:

- **throughput** comes from the quality pass (local: length-sorted batches of
  ``generation.batch_size``; endpoint: ``max_concurrency`` requests in flight): examples/s
  and generated tokens/s at that batch size or concurrency;
- **latency** is per request. A local model gets a separate pass at batch size 1 over a
  seeded sample of ``latency_sample`` prompts (a batch's wall time split over its rows
  is not any request's latency); an endpoint's latency is each fresh request's wall time
  at the configured concurrency, with time to first token when streaming.

Both passes of a local model prefill the token prefix its prompts share (system prompt,
few-shot turns) once and reuse its KV cache (``generation.prefix_cache``, on by
default): they measure a server with prefix caching, as vLLM and llama.cpp's server run
by default, and the report says how many tokens were shared. A request's latency then
excludes that prefix's prefill; ``prefix_cache: false`` measures a server without it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ladle.device import pick_device
from ladle.evaluate.generate import (
    Generation,
    ModelSource,
    candidate_source,
    generate,
    load_model,
    prompt_renderer,
)
from ladle.evaluate.metrics import Scores, consistency, score_samples
from ladle.evaluate.prompts import Example, build_conversation, build_prompt
from ladle.evaluate.result import Contestant
from ladle.recipe.schema import ContestantSpec, EndpointSpec, Recipe

Progress = Callable[[str], None]
Source = ModelSource | EndpointSpec


def resolve_source(spec: ContestantSpec, default: ModelSource, base_dir: Path) -> Source:
    """The weights (or server) behind a contestant spec: its endpoint, its model (a
    ``model.base`` form or a run / adapter folder), else ``default``."""
    from ladle.models import resolve_model

    if spec.endpoint is not None:
        return spec.endpoint
    if spec.model is None:
        return default
    path = Path(spec.model).expanduser()
    if path.exists() and ((path / "adapter").is_dir() or (path / "adapter_config.json").is_file()):
        return candidate_source(path, base_dir)
    return ModelSource(resolve_model(spec.model))


def describe_source(src: Source) -> str:
    if isinstance(src, EndpointSpec):
        return f"{src.model or 'the served model'} @ {src.url}"
    return str(src.adapter_dir or src.model_dir)


def token_cost(
    spec: ContestantSpec, recipe: Recipe
) -> tuple[float | None, float | None, str | None]:
    """(price per prompt token, per completion token, basis) for the per-example cost."""
    if spec.price_per_1m_input is not None or spec.price_per_1m_output is not None:
        return (
            (spec.price_per_1m_input or 0.0) / 1e6,
            (spec.price_per_1m_output or 0.0) / 1e6,
            "price per 1M input/output tokens",
        )
    ev = recipe.evaluate
    if ev.price_per_1k_prompt is not None or ev.price_per_1k_completion is not None:
        return (
            (ev.price_per_1k_prompt or 0.0) / 1e3,
            (ev.price_per_1k_completion or 0.0) / 1e3,
            "evaluate.price_per_1k_* (every contestant)",
        )
    return None, None, None


def any_price(recipe: Recipe) -> bool:
    ev = recipe.evaluate
    specs = [s for _, s in ev.named_baselines()] + [ev.candidate]
    return (
        ev.price_per_1k_prompt is not None
        or ev.price_per_1k_completion is not None
        or any(
            s.price_per_1m_input is not None
            or s.price_per_1m_output is not None
            or s.price_per_hour is not None
            for s in specs
        )
    )


def paired_operational(
    gen: Generation, spec: ContestantSpec, recipe: Recipe, examples_per_s: float
) -> tuple[dict[str, Scores], str | None]:
    """Tokens, cost and consistency: one value per example, so they pair like metrics."""
    pt, ct = gen.prompt_tokens, gen.completion_tokens
    out = {
        "prompt_tokens": Scores("prompt_tokens", pt, better="lower"),
        "completion_tokens": Scores("completion_tokens", ct, better="lower"),
    }
    p_in, p_out, basis = token_cost(spec, recipe)
    if p_in is not None and p_out is not None:
        out["cost"] = Scores("cost", pt * p_in + ct * p_out, better="lower")
    elif spec.price_per_hour is not None and examples_per_s > 0:
        per_request = spec.price_per_hour / 3600 / examples_per_s
        out["cost"] = Scores("cost", np.where(np.isnan(pt), np.nan, per_request), better="lower")
        basis = "price_per_hour / measured throughput"
    elif any_price(recipe):
        out["cost"] = Scores("cost", np.full(len(pt), np.nan), better="lower")
        basis = "no price given for this contestant"
    if any(len(o) > 1 for o in gen.outputs):
        out["consistency"] = Scores("consistency", consistency(gen.outputs))
    return out, basis


def latency_indices(n: int, sample: int, seed: int) -> list[int]:
    """A seeded sample of example indices for the batch-size-1 latency pass."""
    if sample >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).permutation(n)[:sample].tolist())


def latency_method(requests: int, prefix_tokens: int) -> str:
    """How a local model's latency was measured, for the report."""
    if not requests:
        return "not measured"
    how = f"batch size 1, {requests} requests sampled by seed"
    if prefix_tokens:
        how += (
            f"; the {prefix_tokens}-token prompt prefix they share prefilled once and cached "
            "(a server with prefix caching)"
        )
    return how


def _score(
    name: str,
    src: Source,
    spec: ContestantSpec,
    prompts: list[str],
    gen: Generation,
    examples: Sequence[Example],
    recipe: Recipe,
    failed: Sequence[int] = (),
) -> Contestant:
    ev = recipe.evaluate
    refs = [e.reference for e in examples]
    scores = score_samples(ev.metrics, gen.outputs, refs, allow_code=ev.allow_code)
    if failed:  # a failed request has no answer to score: NaN, never a silent zero
        bad = np.asarray(failed)
        for s in scores.values():
            s.values = s.values.copy()
            s.values[bad] = np.nan
    n_ok = len(examples) - len(failed)
    eps = n_ok / gen.total_s if gen.total_s > 0 else math.nan
    ops, basis = paired_operational(gen, spec, recipe, eps)
    scores.update(ops)
    tokens = float(np.nansum(gen.completion_tokens))
    return Contestant(
        name=name,
        source=describe_source(src),
        prompt_spec=spec,
        prompts=prompts,
        generation=gen,
        scores=scores,
        kind="endpoint" if isinstance(src, EndpointSpec) else "model",
        operations={
            "throughput": {
                "examples_per_s": eps,
                "tokens_per_s": tokens / gen.total_s if gen.total_s > 0 else math.nan,
                "seconds": gen.total_s,
            },
            "cost_basis": basis,
        },
    )


def run_model(
    name: str,
    src: ModelSource,
    spec: ContestantSpec,
    shots: Sequence[Example],
    examples: Sequence[Example],
    recipe: Recipe,
    progress: Progress,
) -> Contestant:
    ev = recipe.evaluate
    t0 = time.perf_counter()
    model, tok = load_model(
        src,
        dtype=recipe.model.dtype,
        device=pick_device(),
        trust_remote_code=recipe.model.trust_remote_code,
    )
    load_s = time.perf_counter() - t0
    render = prompt_renderer(src.tokenizer_dir, recipe.data.template)
    prompts = [render(build_conversation(e, spec, shots)) for e in examples]
    progress(f"{name}: generating {len(prompts)} answers ({describe_source(src)})")
    gen = generate(
        model, tok, prompts, ev.generation, seed=recipe.seed, precision=ev.generation.precision
    )
    latency = np.array([])
    timed_prefix = 0
    if ev.latency_sample:
        picked = latency_indices(len(prompts), ev.latency_sample, recipe.seed)
        progress(f"{name}: latency pass, {len(picked)} requests at batch size 1")
        one = ev.generation.model_copy(update={"batch_size": 1, "num_samples": 1})
        timed = generate(
            model,
            tok,
            [prompts[i] for i in picked],
            one,
            seed=recipe.seed,
            precision=ev.generation.precision,
        )
        latency, timed_prefix = timed.latency_s, timed.prefix_tokens
    del model
    c = _score(name, src, spec, prompts, gen, examples, recipe)
    c.load_s = load_s
    c.loaded_as = src.describe()
    c.latency = latency
    c.operations["throughput"]["batch_size"] = ev.generation.batch_size
    c.operations["throughput"]["prefix_cached_tokens"] = gen.prefix_tokens
    c.operations["latency_method"] = latency_method(latency.size, timed_prefix)
    progress(f"{name}: done in {gen.total_s:.1f}s ({gen.precision})")
    return c


def run_endpoint(
    name: str,
    endpoint: EndpointSpec,
    spec: ContestantSpec,
    shots: Sequence[Example],
    examples: Sequence[Example],
    recipe: Recipe,
    progress: Progress,
    *,
    use_cache: bool,
) -> Contestant:
    from ladle.evaluate.endpoint import query

    ev = recipe.evaluate
    conversations = [build_prompt(e, spec, shots) for e in examples]
    progress(f"{name}: asking {describe_source(endpoint)} ({len(conversations)} requests)")
    run = query(endpoint, conversations, ev.generation, seed=recipe.seed, use_cache=use_cache)
    import json

    prompts = [json.dumps(c, ensure_ascii=False) for c in conversations]
    c = _score(name, endpoint, spec, prompts, run.generation, examples, recipe, run.failed)
    fresh = run.fresh if run.fresh is not None else np.zeros(len(examples), dtype=bool)
    ok = ~np.isnan(run.generation.latency_s)
    c.latency = run.generation.latency_s[ok & fresh]
    c.operations["throughput"]["concurrency"] = endpoint.max_concurrency
    if run.cache_hits:
        c.operations["throughput"]["estimated_from_cache"] = run.cache_hits
    c.operations["latency_method"] = (
        f"wall time per fresh request at concurrency {endpoint.max_concurrency} "
        f"({int((ok & fresh).sum())} requests; cached answers are not timed)"
    )
    if run.ttft_s is not None:
        ttft = run.ttft_s[ok & fresh]
        ttft = ttft[~np.isnan(ttft)]
        c.operations["ttft_p50_s"] = float(np.percentile(ttft, 50)) if ttft.size else None
    c.operations["requests"] = {
        "total": len(examples) * ev.generation.num_samples,
        "failed": len(run.failed),
        "errors": run.errors,
        "retried_responses": run.retried_responses,
        "cache_hits": run.cache_hits,
    }
    c.operations["prompt_tokens_source"] = (
        "server usage"
        if run.prompt_tokens_estimated == 0
        else f"ESTIMATE (characters/4) for {run.prompt_tokens_estimated} examples: "
        "the server reported no usage"
    )
    progress(
        f"{name}: done in {run.generation.total_s:.1f}s, {len(run.failed)} failed, "
        f"{run.cache_hits} cache hits"
    )
    return c


def run(
    name: str,
    src: Source,
    spec: ContestantSpec,
    shots: Sequence[Example],
    examples: Sequence[Example],
    recipe: Recipe,
    progress: Progress,
    *,
    use_cache: bool = True,
) -> Contestant:
    if isinstance(src, EndpointSpec):
        return run_endpoint(name, src, spec, shots, examples, recipe, progress, use_cache=use_cache)
    return run_model(name, src, spec, shots, examples, recipe, progress)


def read_train_seconds(path: Path) -> float | None:
    """Training wall time from a run folder's manifest (the folder, or its parent for an
    ``adapter/`` path)."""
    import json

    for folder in (path, path.parent):
        try:
            data: Any = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        secs = (data.get("throughput") or {}).get("train_s") if isinstance(data, dict) else None
        if isinstance(secs, int | float):
            return float(secs)
    return None
