"""Endpoint contestants against a small local OpenAI-compatible server that injects
faults: 429/503 before success, hangs, missing usage. Loopback only, bounded loops."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from _fake_openai import Script, serving
from ladle.evaluate.endpoint import cache_key, query, request_params
from ladle.recipe.schema import EndpointSpec, GenerationSpec

SECRET = "sk-test-DO-NOT-LEAK-1234567890"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, Script]]:
    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    with serving() as served:
        yield served


def convs(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"ticket {i}"}] for i in range(n)]


GREEDY = GenerationSpec(max_new_tokens=8)


def test_retries_429_and_503_honouring_retry_after(server):
    url, script = server
    script.failures = [(429, {"Retry-After": "1"}), (503, {})]
    ep = EndpointSpec(url=url, model="m", max_concurrency=1, max_retries=3)
    run = query(ep, convs(1), GREEDY, seed=0, use_cache=False)
    assert run.failed == [] and run.generation.outputs == [['{"label": "a"}']]
    assert run.retried_responses == 2 and len(script.requests) == 3
    assert script.times[1] - script.times[0] >= 0.95  # waited as Retry-After said
    # greedy requests carry temperature 0 and the seed
    assert script.requests[0]["temperature"] == 0 and script.requests[0]["seed"] == 0
    assert script.requests[0]["max_tokens"] == 8


def test_failures_after_retries_are_counted_not_zeroed(server):
    url, script = server
    script.failures = [(503, {})] * 4
    ep = EndpointSpec(url=url, model="m", max_concurrency=1, max_retries=1)
    run = query(ep, convs(2), GREEDY, seed=0, use_cache=False)
    assert run.failed == [0, 1] and len(script.requests) == 4  # bounded: 2 tries each
    assert "503" in run.errors[0] or "InternalServerError" in run.errors[0] or run.errors[0]
    assert all(o == [""] for o in run.generation.outputs)
    import numpy as np

    assert np.isnan(run.generation.prompt_tokens).all()


def test_a_hanging_server_times_out(server):
    url, script = server
    script.hang_s = 30
    ep = EndpointSpec(url=url, model="m", timeout_s=0.5, max_retries=0)
    t0 = time.monotonic()
    run = query(ep, convs(1), GREEDY, seed=0, use_cache=False)
    assert time.monotonic() - t0 < 10
    assert run.failed == [0] and "Timeout" in run.errors[0]


def test_concurrency_is_bounded(server):
    url, script = server
    script.delay_s = 0.2
    ep = EndpointSpec(url=url, model="m", max_concurrency=3)
    run = query(ep, convs(9), GREEDY, seed=0, use_cache=False)
    assert run.failed == [] and len(script.requests) == 9
    assert 1 < script.max_in_flight <= 3
    assert (run.generation.latency_s >= 0.2).all()


def test_cache_hits_skip_the_server_and_no_cache_asks_again(server):
    url, script = server
    ep = EndpointSpec(url=url, model="m")
    first = query(ep, convs(4), GREEDY, seed=0)
    assert first.cache_hits == 0 and len(script.requests) == 4
    again = query(ep, convs(4), GREEDY, seed=0)
    assert again.cache_hits == 4 and len(script.requests) == 4
    assert again.generation.outputs == first.generation.outputs
    assert again.fresh is not None and not again.fresh.any()
    # throughput of a cached run: recorded per-request times spread over the concurrency
    recorded = float(first.generation.latency_s.sum()) / ep.max_concurrency
    assert again.generation.total_s >= recorded
    query(ep, convs(4), GREEDY, seed=0, use_cache=False)
    assert len(script.requests) == 8
    # another seed or model is another request
    p0, p1 = request_params(GREEDY, 0), request_params(GREEDY, 1)
    assert cache_key(ep, convs(1)[0], p0) != cache_key(ep, convs(1)[0], p1)
    other = ep.model_copy(update={"model": "m2"})
    assert cache_key(ep, convs(1)[0], p0) != cache_key(other, convs(1)[0], p0)


def test_streaming_measures_time_to_first_token(server):
    url, script = server
    script.delay_s = 1.0  # between the two chunks
    ep = EndpointSpec(url=url, model="m", stream=True)
    run = query(ep, convs(2), GREEDY, seed=0, use_cache=False)
    assert run.failed == [] and run.generation.outputs == [['{"label": "a"}']] * 2
    assert run.ttft_s is not None
    lat = run.generation.latency_s
    assert (run.ttft_s > 0).all() and (run.ttft_s <= lat).all()
    # the first token arrives a second before the rest (on a starved CPU a client thread
    # may wake only after both chunks, so one clear case is asked for, not every one)
    assert (run.ttft_s < lat - 0.5).any()
    assert run.generation.prompt_tokens.tolist() == [3.0, 3.0]  # usage from the last chunk
    assert script.requests[0]["stream"] is True


def test_missing_usage_is_an_estimate(server):
    url, script = server
    script.usage = False
    run = query(EndpointSpec(url=url, model="m"), convs(2), GREEDY, seed=0, use_cache=False)
    assert run.prompt_tokens_estimated == 2
    assert run.generation.prompt_tokens.tolist() == [2.0, 2.0]  # "ticket 0": 8 chars / 4


def test_missing_api_key_is_a_clear_error(server, monkeypatch):
    from ladle.errors import EvalError

    url, _ = server
    monkeypatch.delenv("LADLE_TEST_KEY", raising=False)
    ep = EndpointSpec(url=url, model="m", api_key_env="LADLE_TEST_KEY")
    with pytest.raises(EvalError, match="LADLE_TEST_KEY"):
        query(ep, convs(1), GREEDY, seed=0)


def test_recipe_rejects_credentials_in_headers():
    with pytest.raises(ValueError, match="api_key_env"):
        EndpointSpec(url="http://127.0.0.1:1/v1", model="m", headers={"Authorization": "x"})
    with pytest.raises(ValueError, match="http"):
        EndpointSpec(url="127.0.0.1:1/v1", model="m")


# ----------------------------------------------------------------------- end to end


ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Classify ticket {i}"},
            {"role": "assistant", "content": json.dumps({"label": "ab"[i % 2]})},
        ]
    }
    for i in range(8)
]


def test_candidate_against_endpoint_and_model_baselines(
    server, tiny_llama_dir: Path, tmp_path: Path, monkeypatch
):
    """Two baselines (a served model with a key, the base model 0-shot) against one
    candidate; the key reaches the server and nothing written."""
    from ladle.commands.eval import register

    url, script = server
    monkeypatch.setenv("LADLE_TEST_KEY", SECRET)
    data = tmp_path / "eval.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    recipe = {
        "name": "vs-endpoint-test",
        "model": {"base": str(tiny_llama_dir)},
        "data": {"datasets": [{"path": "eval.jsonl", "split": "eval"}]},
        "evaluate": {
            "baselines": [
                {
                    "name": "served",
                    "endpoint": {"url": url, "model": "big", "api_key_env": "LADLE_TEST_KEY"},
                    "system_prompt": "Answer with JSON.",
                    "price_per_1m_input": 2.5,
                    "price_per_1m_output": 10.0,
                },
                {"name": "base-0shot", "few_shot": 0, "price_per_hour": 1.0},
            ],
            "candidate": {"model": str(tiny_llama_dir), "price_per_hour": 1.0},
            "generation": {"max_new_tokens": 4, "batch_size": 4},
            "latency_sample": 4,
            "bootstrap": 200,
            "metrics": ["json_valid", {"name": "json_field_accuracy", "fields": ["label"]}],
            "gate": [{"metric": "json_valid", "max_regression": 1.0}],
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    import argparse

    parser = argparse.ArgumentParser(prog="ladle")
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "report"
    args = parser.parse_args(["eval", str(tmp_path / "r.yaml"), "--output", str(out)])
    assert args.func(args) == 0
    assert script.auth and all(a == f"Bearer {SECRET}" for a in script.auth)
    report = json.loads((out / "report.json").read_text())
    assert [b["name"] for b in report["baselines"]] == ["served", "base-0shot"]
    assert set(report["comparisons"]["candidate"]) == {"served", "base-0shot"}
    served = report["baselines"][0]
    assert served["kind"] == "endpoint" and served["values"]["json_valid"] == 1.0
    assert served["operations"]["requests"]["failed"] == 0
    assert served["operations"]["prompt_tokens_source"] == "server usage"
    assert served["operations"]["cost_per_1k_requests"] > 0
    cand = report["candidates"][0]
    assert cand["operations"]["latency_s"]["n"] == 4  # the batch-size-1 pass
    lat = report["comparisons"]["candidate"]["served"]["latency_p50"]
    assert lat["p_value"] is None and lat["test"] == "unpaired bootstrap"
    for name in ("report.json", "report.md", "examples.jsonl", "junit.xml"):
        assert SECRET not in (out / name).read_text()
    assert "## Operations" in (out / "report.md").read_text()
    # a second run is served from the cache: no new requests
    n = len(script.requests)
    args = parser.parse_args(["eval", str(tmp_path / "r.yaml"), "--output", str(out)])
    assert args.func(args) == 0 and len(script.requests) == n
    again = json.loads((out / "report.json").read_text())
    assert again["baselines"][0]["operations"]["requests"]["cache_hits"] == len(ROWS)
    args = parser.parse_args(["eval", str(tmp_path / "r.yaml"), "-o", str(out), "--no-cache"])
    assert args.func(args) == 0 and len(script.requests) == 2 * n


def test_failed_requests_fail_the_gate(server, tiny_llama_dir: Path, tmp_path: Path):
    from ladle.evaluate import evaluate
    from ladle.recipe import load_recipe

    url, script = server
    script.failures = [(503, {})] * 100
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[:3]) + "\n")
    recipe = {
        "name": "down",
        "model": {"base": str(tiny_llama_dir)},
        "data": {"datasets": [{"path": "eval.jsonl", "split": "eval"}]},
        "evaluate": {
            "baseline": {"endpoint": {"url": url, "model": "m", "max_retries": 0}},
            "candidate": {"model": str(tiny_llama_dir)},
            "generation": {"max_new_tokens": 2},
            "latency_sample": 0,
            "metrics": ["json_valid"],
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    report = evaluate(load_recipe(tmp_path / "r.yaml"), ROWS[:3], [])
    assert report.verdict == "fail"
    failed = [g for g in report.gate if g.metric == "failed_requests"]
    assert len(failed) == 1 and "3 of 3 requests failed" in failed[0].message
    import math

    assert math.isnan(report.baseline.scores["json_valid"].value())  # not a silent 0
