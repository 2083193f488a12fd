"""Every shipped recipe that trains and evaluates is run end to end on the real SmolLM2
with its gate, in a scaled version that keeps its behaviour, and the verdict is asserted:

- quickstart (LoRA SFT): passes its gate (exit 0); without training it fails (exit 1);
- qlora (the same task on a 4-bit base): passes its gate, evaluated on the 4-bit base;
- dpo (preference pairs): after a few steps the model still writes valid JSON, at least
  as often as the prompted base (the displacement failure this recipe once had).

Scaling: fewer steps of smaller micro-batches (the same learning rate and schedule), a
shorter eval set and generation budget. The full-size figures are in the README.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from ladle.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"

# The quickstart at a third of its training tokens (40 steps of one packed 512-token row
# instead of 60 of four) still takes the model from copying its prompt to the record.
SFT_SCALED = [
    "train.max_steps=40",
    "train.micro_batch_tokens=512",
    "evaluate.limit=32",
    "evaluate.generation.max_new_tokens=40",
    "evaluate.latency_sample=4",
    "evaluate.suites.0.limit=12",
]


def _reports_parse(report_dir: Path) -> dict[str, Any]:
    report = json.loads((report_dir / "report.json").read_text())
    assert "| metric |" in (report_dir / "report.md").read_text()
    ET.parse(report_dir / "junit.xml")
    rows = [json.loads(line) for line in (report_dir / "examples.jsonl").read_text().splitlines()]
    assert rows and all("reference" in r for r in rows)
    assert (report_dir / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return report


def _run(recipe: str, run: Path, overrides: list[str]) -> tuple[int, dict[str, Any]]:
    code = main(["run", str(RECIPES / recipe), "--output", str(run), *overrides])
    return code, _reports_parse(run / "eval")


@pytest.mark.slow
def test_quickstart_passes_its_gate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, report = _run("quickstart.yaml", run, SFT_SCALED)
    assert code == 0, [g for g in report["gate"] if not g["passed"]]
    assert report["gate_passed"] is True
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "quickstart"
    assert (run / "adapter" / "adapter_config.json").is_file()
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in steps) == 40
    assert report["n_examples"] == 32
    # The baseline's shots are recorded by row id, from the decontaminated train split.
    assert all(s["id"] and "tickets-train.jsonl:" in s["id"] for s in report["few_shot"])
    # Operations, power and the regression suite are in the report.
    cand = report["candidates"][0]
    assert cand["operations"]["latency_s"]["n"] == 4  # batch-size-1 latency pass
    assert cand["operations"]["cost_per_1k_requests"] > 0
    (be,) = report["break_even"]
    assert be["train_s"] > 0 and be["training_cost"] > 0
    assert report["power"] and report["power"][0]["metric"] == "json_field_accuracy"
    assert report["suites"][0]["recipe"] == "general-skills"
    md = (run / "eval" / "report.md").read_text()
    assert "## Operations" in md and "## Power" in md and "Regression suite" in md


@pytest.mark.slow
def test_quickstart_without_training_fails_the_gate(tmp_path: Path) -> None:
    run = tmp_path / "untrained"
    code, report = _run(
        "quickstart.yaml",
        run,
        [
            "train.max_steps=0",
            "evaluate.limit=16",
            "evaluate.generation.max_new_tokens=40",
            "evaluate.latency_sample=2",
            "evaluate.suites.0.limit=4",
        ],
    )
    assert code == 1
    assert report["gate_passed"] is False and report["verdict"] == "fail"
    assert any(not g["passed"] for g in report["gate"])


@pytest.mark.slow
def test_qlora_recipe_passes_its_gate_on_the_4bit_base(tmp_path: Path) -> None:
    code, report = _run("qlora.yaml", tmp_path / "run", SFT_SCALED)
    assert code == 0, [g for g in report["gate"] if not g["passed"]]
    assert "4-bit" in report["candidates"][0]["loaded_as"]


# The DPO recipe at 24 steps of 2 pairs instead of 40 of 4 (the same rate and schedule).
# Measured 2026-12-02: the whole gate passes at 1 and 2 torch threads (field accuracy
# 0.56 vs 0.22-0.23, 95% CI of the gain from +0.17; valid JSON 1.00 vs 0.875).
DPO_SCALED = [
    "train.max_steps=24",
    "train.micro_batch_size=2",
    "evaluate.limit=16",
    "evaluate.generation.max_new_tokens=40",
    "evaluate.latency_sample=2",
]


@pytest.mark.slow
def test_dpo_recipe_keeps_valid_json(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, report = _run("dpo.yaml", run, DPO_SCALED)
    assert code == 0, report["gate"]
    assert report["gate_passed"] is True
    cand_name = report["candidates"][0]["name"]
    (per_base,) = report["comparisons"][cand_name].values()
    cand = per_base["json_valid"]
    assert cand["candidate"] >= 0.9, cand
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 24 and all("logps_chosen" in r for r in steps)
