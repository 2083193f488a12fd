"""The quickstart on the real SmolLM2, in smoke size: every stage runs, the reports
exist and parse, and a run without training fails its gate with exit code 1.

The full-size figures (JSON validity, field accuracy gain, prompt-token ratio) come
from `make demo` and are quoted in the README; here we only prove the wiring.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ladle.cli import main

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def _reports_parse(report_dir: Path) -> dict:
    report = json.loads((report_dir / "report.json").read_text())
    assert "| metric |" in (report_dir / "report.md").read_text()
    ET.parse(report_dir / "junit.xml")
    rows = [json.loads(line) for line in (report_dir / "examples.jsonl").read_text().splitlines()]
    assert rows and all("reference" in r for r in rows)
    assert (report_dir / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return report


@pytest.mark.slow
def test_quickstart_smoke_runs_every_stage(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = main(
        [
            "run",
            str(QUICKSTART),
            "--output",
            str(run),
            "train.max_steps=3",
            "evaluate.limit=24",
            "evaluate.generation.max_new_tokens=40",
            "evaluate.latency_sample=4",
            "evaluate.suites.0.limit=6",
        ]
    )
    # three steps may pass, fail or leave the gate undecided; the wiring must work
    assert code in (0, 1, 3)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "quickstart"
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    report = _reports_parse(run / "eval")
    assert report["n_examples"] == 24
    cand = report["candidates"][0]
    assert cand["operations"]["latency_s"]["n"] == 4  # batch-size-1 latency pass
    assert cand["operations"]["cost_per_1k_requests"] > 0
    (be,) = report["break_even"]
    assert be["train_s"] > 0 and be["training_cost"] > 0
    assert report["power"] and report["power"][0]["metric"] == "json_field_accuracy"
    assert report["suites"][0]["recipe"] == "general-skills"
    assert report["suites"][0]["n_examples"] == 6
    md = (run / "eval" / "report.md").read_text()
    assert "## Operations" in md and "## Power" in md and "Regression suite" in md


@pytest.mark.slow
def test_quickstart_without_training_fails_the_gate(tmp_path: Path) -> None:
    run = tmp_path / "untrained"
    code = main(
        [
            "run",
            str(QUICKSTART),
            "--output",
            str(run),
            "train.max_steps=0",
            "evaluate.limit=16",
            "evaluate.generation.max_new_tokens=40",
            "evaluate.latency_sample=0",
            "evaluate.suites=[]",
        ]
    )
    assert code == 1
    report = _reports_parse(run / "eval")
    assert report["gate_passed"] is False
    assert any(not g["passed"] for g in report["gate"])
