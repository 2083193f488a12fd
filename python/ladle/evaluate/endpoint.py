"""Contestants served over HTTP: any OpenAI-compatible chat-completions server.

The ``openai`` client does the transport: it retries 408/409/429/5xx and connection
errors with exponential backoff and honours ``Retry-After`` (and ``retry-after-ms``).
Ladle adds what an honest comparison needs around it:

- requests run concurrently (``max_concurrency`` threads, each blocking on one request),
  and each request's wall time is its latency (with time to first token when streaming),
  so latency here is measured at that concurrency, and the report says so;
- a request that still fails is a counted error with its reason (the key removed), never
  an empty answer scored as a silent zero;
- responses are cached by content (url, model, messages, generation parameters) under
  ``$LADLE_HOME/eval-cache``, written atomically, so re-running a CI gate does not pay
  twice; hits are counted;
- prompt tokens come from the server's ``usage``; when a server reports none they are a
  characters/4 estimate, flagged as such;
- the API key is read from the environment variable the recipe names, at request time,
  and goes nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ladle.errors import EvalError
from ladle.evaluate.generate import Generation
from ladle.paths import atomic_write_text, ladle_home
from ladle.recipe.schema import EndpointSpec, GenerationSpec

Messages = list[dict[str, str]]

CHARS_PER_TOKEN = 4.0
"""Rough characters per token for the prompt-token estimate when a server reports no
``usage`` (English text under BPE vocabularies of 32k-200k entries)."""

CACHE_VERSION = 1


def cache_dir() -> Path:
    return ladle_home() / "eval-cache"


@dataclass
class EndpointRun:
    """What an endpoint produced for every prompt, and how the requests went."""

    generation: Generation
    failed: list[int] = field(default_factory=list)
    """Indices of examples whose request failed after every retry."""
    errors: list[str] = field(default_factory=list)
    """The first few failure reasons, one line each."""
    retried_responses: int = 0
    """429 / 5xx responses that were retried (or ended in failure)."""
    cache_hits: int = 0
    prompt_tokens_estimated: int = 0
    """Examples whose prompt tokens are an estimate (no ``usage`` from the server)."""
    ttft_s: np.ndarray | None = None
    """Time to first token per fresh request (streaming only), NaN where not measured."""
    fresh: np.ndarray | None = None
    """True where the answer came from the server in this run (not the cache)."""


def request_params(spec: GenerationSpec, seed: int) -> dict[str, Any]:
    """Generation parameters sent with every request (and part of the cache key).

    Greedy decoding is ``temperature: 0``; ``seed`` is passed so servers that support it
    (vLLM, OpenAI) reproduce sampled answers.
    """
    params: dict[str, Any] = {"max_tokens": spec.max_new_tokens, "seed": seed}
    if spec.do_sample:
        params.update(temperature=spec.temperature, top_p=spec.top_p)
    else:
        params["temperature"] = 0.0
    return params


def cache_key(endpoint: EndpointSpec, messages: Messages, params: dict[str, Any]) -> str:
    """Content address of one request. Headers and the key are not part of it: they
    change who pays, not the answer."""
    blob = json.dumps(
        [CACHE_VERSION, endpoint.url.rstrip("/"), endpoint.model, messages, params],
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or damaged: ask the server again
    return data if isinstance(data, dict) and isinstance(data.get("output"), str) else None


def api_key(endpoint: EndpointSpec) -> str:
    if endpoint.api_key_env is None:
        return "none"  # local servers ignore it; the client insists on a value
    key = os.environ.get(endpoint.api_key_env)
    if not key:
        raise EvalError(
            f"endpoint {endpoint.url}: environment variable {endpoint.api_key_env} "
            "(evaluate.*.endpoint.api_key_env) is not set"
        )
    return key


def _one_line(err: BaseException, secret: str) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    if secret and secret != "none":
        text = text.replace(secret, "***")
    return text[:300]


def _client(endpoint: EndpointSpec, key: str, on_response: Any) -> Any:
    import httpx2
    import openai

    http = httpx2.Client(
        timeout=endpoint.timeout_s,
        event_hooks={"response": [on_response]},
        limits=httpx2.Limits(max_connections=endpoint.max_concurrency),
    )
    return openai.OpenAI(
        base_url=endpoint.url,
        api_key=key,
        timeout=endpoint.timeout_s,
        max_retries=endpoint.max_retries,
        default_headers=endpoint.headers or None,
        http_client=http,
    )


def served_model(client: Any, endpoint: EndpointSpec) -> str:
    """The model to ask for: the recipe's, else the one model the server lists."""
    if endpoint.model is not None:
        return endpoint.model
    try:
        names = [m.id for m in client.models.list()]
    except Exception as e:  # the server is down or has no /models: say so in one line
        raise EvalError(
            f"endpoint {endpoint.url}: cannot list its models ({type(e).__name__}); "
            "set endpoint.model"
        ) from e
    if len(names) != 1:
        raise EvalError(
            f"endpoint {endpoint.url} serves {len(names)} models ({', '.join(names[:5])}); "
            "set endpoint.model to one of them"
        )
    return str(names[0])


def _ask(client: Any, endpoint: EndpointSpec, messages: Messages, params: dict[str, Any]) -> dict:
    """One chat completion; returns output, token counts, latency and TTFT."""
    t0 = time.perf_counter()
    ttft: float | None = None
    usage: Any = None
    if endpoint.stream:
        parts: list[str] = []
        stream = client.chat.completions.create(
            model=endpoint.model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **params,
        )
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices or []:
                text = choice.delta.content if choice.delta else None
                if text:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    parts.append(text)
        output = "".join(parts)
    else:
        resp = client.chat.completions.create(model=endpoint.model, messages=messages, **params)
        if not resp.choices:
            raise EvalError("the server answered with no choices")
        output = resp.choices[0].message.content or ""
        usage = resp.usage
    latency = time.perf_counter() - t0
    return {
        "output": output,
        "prompt_tokens": getattr(usage, "prompt_tokens", None),
        "completion_tokens": getattr(usage, "completion_tokens", None),
        "latency_s": latency,
        "ttft_s": ttft,
    }


def query(
    endpoint: EndpointSpec,
    conversations: list[Messages],
    spec: GenerationSpec,
    *,
    seed: int,
    use_cache: bool = True,
    progress: Any = None,
) -> EndpointRun:
    """Ask the endpoint every conversation (``spec.num_samples`` times, seeds
    ``seed``, ``seed + 1``, ...), concurrently, through the cache."""
    key = api_key(endpoint)
    lock = threading.Lock()
    retried = [0]

    def on_response(response: Any) -> None:
        if response.status_code == 429 or response.status_code >= 500:
            with lock:
                retried[0] += 1

    client = _client(endpoint, key, on_response)
    endpoint = endpoint.model_copy(update={"model": served_model(client, endpoint)})
    n, k = len(conversations), spec.num_samples
    jobs = [(i, j) for i in range(n) for j in range(k)]
    answers: dict[tuple[int, int], dict[str, Any]] = {}
    failures: dict[int, str] = {}
    hits = 0
    root = cache_dir()

    def run(job: tuple[int, int]) -> None:
        nonlocal hits
        i, j = job
        params = request_params(spec, seed + j)
        path = root / f"{cache_key(endpoint, conversations[i], params)}.json"
        if use_cache:
            cached = _read_cache(path)
            if cached is not None:
                with lock:
                    answers[job] = {**cached, "fresh": False}
                    hits += 1
                return
        try:
            got = _ask(client, endpoint, conversations[i], params)
        except Exception as e:  # any transport or server failure is counted, not raised
            with lock:
                failures.setdefault(i, _one_line(e, key))
            return
        with lock:
            answers[job] = {**got, "fresh": True}
        if use_cache:
            atomic_write_text(path, json.dumps(got, ensure_ascii=False))

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=endpoint.max_concurrency) as pool:
            list(pool.map(run, jobs))
    finally:
        client.close()
    total = time.perf_counter() - t0

    outputs: list[list[str]] = [[] for _ in range(n)]
    prompt = np.full(n, np.nan)
    completion = np.full(n, np.nan)
    latency = np.full(n, np.nan)
    ttft = np.full(n, np.nan)
    fresh = np.zeros(n, dtype=bool)
    estimated = 0
    for i in range(n):
        got = [answers[(i, j)] for j in range(k) if (i, j) in answers]
        if i in failures or len(got) < k:
            outputs[i] = [""] * k
            failures.setdefault(i, "missing answer")
            continue
        outputs[i] = [g["output"] for g in got]
        first = got[0]
        if first.get("prompt_tokens") is None:
            chars = sum(len(m["content"]) for m in conversations[i])
            prompt[i] = round(chars / CHARS_PER_TOKEN)
            estimated += 1
        else:
            prompt[i] = float(first["prompt_tokens"])
        counts = [g.get("completion_tokens") for g in got]
        completion[i] = float(
            np.mean(
                [
                    c if c is not None else len(g["output"]) / CHARS_PER_TOKEN
                    for c, g in zip(counts, got, strict=True)
                ]
            )
        )
        latency[i] = float(first["latency_s"])
        ttft[i] = np.nan if first.get("ttft_s") is None else float(first["ttft_s"])
        fresh[i] = bool(first.get("fresh"))
    if hits:
        # Cached answers took no time now: charge each its recorded latency, spread over
        # the concurrency, so throughput (and $/hour cost) stay comparable across runs.
        cached = [a["latency_s"] for a in answers.values() if not a["fresh"]]
        total += float(np.nansum(cached)) / endpoint.max_concurrency
    gen = Generation(
        outputs=outputs,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_s=latency,
        total_s=total,
        precision="server",
    )
    return EndpointRun(
        generation=gen,
        failed=sorted(failures),
        errors=[failures[i] for i in sorted(failures)][:5],
        retried_responses=retried[0],
        cache_hits=hits,
        prompt_tokens_estimated=estimated,
        ttft_s=ttft if endpoint.stream else None,
        fresh=fresh,
    )
