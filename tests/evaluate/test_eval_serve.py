"""A real OpenAI-compatible server: `transformers serve` on 127.0.0.1 serving the builtin
SmolLM2 folder, evaluated as a baseline and compared with the same model run locally."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "transformers"
    if not exe.exists() and shutil.which("transformers") is None:
        pytest.skip("the `transformers` CLI is not installed")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        pytest.skip("transformers[serving] (fastapi, uvicorn) is not installed")
    return [str(exe) if exe.exists() else "transformers", "serve"]


@pytest.fixture(scope="module")
def served(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the server, wait (bounded) until /health answers, stop it afterwards."""
    import urllib.request

    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        *_serve_cmd(),
        str(smollm2_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--device",
        "cpu",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not start:\n{log.read_text()[-2000:]}")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 12 + 30?",
    "Write the word 'hello' backwards.",
]


def test_served_baseline_matches_the_local_model(
    served: str, smollm2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from ladle.evaluate import evaluate, write_reports
    from ladle.recipe import load_recipe

    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))  # fresh response cache
    # the converted model lives in the real LADLE_HOME: pass it as a folder
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "x"}]}
        for q in QUESTIONS
    ]
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = {
        "name": "served-vs-local",
        "model": {"base": str(smollm2_dir)},
        "data": {"datasets": [{"path": "eval.jsonl", "split": "eval"}]},
        "evaluate": {
            "baseline": {
                "name": "served",
                "few_shot": 0,
                "endpoint": {"url": served, "model": str(smollm2_dir), "max_concurrency": 2},
            },
            "candidate": {"name": "local", "model": str(smollm2_dir)},
            "generation": {"max_new_tokens": 24, "batch_size": 4, "precision": "fp32"},
            "latency_sample": 2,
            "bootstrap": 200,
            "metrics": ["exact_match"],
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    report = evaluate(load_recipe(tmp_path / "r.yaml"), rows, [])
    write_reports(report, tmp_path / "report")
    served_c, local_c = report.baseline, report.candidates[0]
    assert served_c.kind == "endpoint" and local_c.kind == "model"
    assert served_c.operations["requests"]["failed"] == 0
    assert served_c.operations["prompt_tokens_source"] == "server usage"
    served_out = [o[0] for o in served_c.generation.outputs]
    local_out = [o[0] for o in local_c.generation.outputs]
    # Same weights, same chat template, greedy, fp32: the same answers. A server that
    # strips surrounding whitespace is the one difference allowed.
    assert [s.strip() for s in served_out] == [s.strip() for s in local_out]
    # The server counts the same prompt tokens as Ladle's renderer + tokenizer.
    assert served_c.generation.prompt_tokens.tolist() == local_c.generation.prompt_tokens.tolist()
    assert served_c.latency.size == len(QUESTIONS) and (served_c.latency > 0).all()


def test_vs_endpoint_recipe_against_the_real_server(
    served: str, smollm2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The shipped recipe, pointed at the test's server (its own url is the README's)."""
    import argparse

    from ladle.commands.eval import register

    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    parser = argparse.ArgumentParser(prog="ladle")
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "report"
    argv = [
        "eval",
        str(REPO / "recipes" / "vs-endpoint.yaml"),
        "--candidate",
        str(smollm2_dir),  # the untrained model stands in for a run folder
        "--output",
        str(out),
        f"evaluate.baselines.0.endpoint.url={served}",
        "evaluate.limit=4",
        "evaluate.latency_sample=2",
        "evaluate.generation.max_new_tokens=16",
        "evaluate.gate=[{metric: prompt_tokens, max_ratio: 1.0}]",
    ]
    args = parser.parse_args(argv)
    code = args.func(args)
    report = json.loads((out / "report.json").read_text())
    served_b = report["baselines"][0]
    assert served_b["name"] == "served-3shot" and served_b["kind"] == "endpoint"
    assert served_b["operations"]["requests"] == {
        "total": 4,
        "failed": 0,
        "errors": [],
        "retried_responses": 0,
        "cache_hits": 0,
    }
    # the 0-shot candidate reads far fewer prompt tokens than the 3-shot served baseline
    assert code == 0 and report["verdict"] == "pass"
    assert served_b["source"].endswith(f"@ {served}")
