"""The GitHub Action's script (``ci/action.sh``) run as GitHub would run it, with
temporary ``GITHUB_STEP_SUMMARY``, ``GITHUB_OUTPUT`` and event files: a real ``ladle
eval`` on the tiny model, then the verdict step. Only the comment step's API call is
not exercised (it needs GitHub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ladle.ci import COMMENT_MARKER, comment_body, verdict

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "ci" / "action.sh"

QUESTIONS = ["red", "green", "blue", "amber", "violet", "teal", "olive", "coral"]


def _row(word: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Colour of the word {word}?"},
            {"role": "assistant", "content": json.dumps({"colour": word})},
        ]
    }


@pytest.fixture(scope="module")
def workspace(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recipe over a few rows and a run folder holding an (untrained) LoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("action")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        root / "run" / "adapter"
    )
    (root / "data").mkdir()
    for split, words in (("train", QUESTIONS[:4]), ("eval", QUESTIONS[4:])):
        rows = "".join(json.dumps(_row(w)) + "\n" for w in words)
        (root / "data" / f"{split}.jsonl").write_text(rows)

    def recipe(gate: list[dict]) -> dict:
        return {
            "name": "action-test",
            "model": {"base": str(tiny_llama_dir)},
            "data": {
                "datasets": [
                    {"path": "data/train.jsonl", "split": "train"},
                    {"path": "data/eval.jsonl", "split": "eval"},
                ]
            },
            "evaluate": {
                "generation": {"max_new_tokens": 4, "batch_size": 4},
                "bootstrap": 100,
                "metrics": ["json_valid"],
                "gate": gate,
            },
        }

    passing = recipe([{"metric": "json_valid", "min": 0.0}])
    failing = recipe([{"metric": "json_valid", "min": 0.99}])  # a random model writes no JSON
    (root / "pass.yaml").write_text(yaml.safe_dump(passing))
    (root / "fail.yaml").write_text(yaml.safe_dump(failing))
    return root


def _action(step: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        # The venv's python and ladle first, as actions/setup-python + pip would leave them.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT), step], cwd=cwd, env=full, capture_output=True, text=True
    )


def _github_files(tmp: Path) -> dict[str, str]:
    event = tmp / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    for name in ("summary.md", "output.txt"):
        (tmp / name).write_text("")
    return {
        "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"),
        "GITHUB_OUTPUT": str(tmp / "output.txt"),
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_EVENT_NAME": "pull_request",
        "RUNNER_TEMP": str(tmp / "runner"),
    }


def _outputs(path: str) -> dict[str, str]:
    lines = Path(path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@pytest.mark.slow
def test_action_run_and_verdict_pass_then_fail(workspace: Path, tmp_path: Path) -> None:
    gh = _github_files(tmp_path)
    base = {"LADLE_MODE": "eval", "LADLE_CANDIDATE": str(workspace / "run"), **gh}

    r = _action("run", {**base, "LADLE_RECIPE": "pass.yaml"}, workspace)
    assert r.returncode == 0, r.stderr
    out = _outputs(gh["GITHUB_OUTPUT"])
    assert out["verdict"] == "pass" and out["exit-code"] == "0"
    report_dir = Path(out["report-dir"])
    assert (report_dir / "report.json").is_file() and (report_dir / "junit.xml").is_file()
    assert "| metric |" in Path(gh["GITHUB_STEP_SUMMARY"]).read_text()
    comment = Path(out["comment-file"]).read_text()
    assert comment.splitlines()[0] == COMMENT_MARKER.format(recipe="pass.yaml")
    assert "Ladle gate: pass" in comment
    v = _action("verdict", {"LADLE_VERDICT": out["verdict"]}, workspace)
    assert v.returncode == 0 and "passed" in v.stdout

    # The failing gate, compared against the passing run's report as "main's last report".
    passed_report = tmp_path / "main-report.json"
    passed_report.write_bytes((report_dir / "report.json").read_bytes())
    Path(gh["GITHUB_OUTPUT"]).write_text("")
    r = _action(
        "run",
        {**base, "LADLE_RECIPE": "fail.yaml", "LADLE_BASELINE_REPORT": str(passed_report)},
        workspace,
    )
    assert r.returncode == 0, r.stderr  # the run step never fails: upload/comment come first
    out = _outputs(gh["GITHUB_OUTPUT"])
    assert out["verdict"] == "fail" and out["exit-code"] == "1"
    summary = Path(gh["GITHUB_STEP_SUMMARY"]).read_text()
    assert "Change against the default branch" in summary
    assert "Gate: A passed, B FAILED." in summary
    v = _action("verdict", {"LADLE_VERDICT": out["verdict"]}, workspace)
    assert v.returncode == 1 and "::error::" in v.stdout


def test_action_bad_recipe_is_an_error_verdict(tmp_path: Path) -> None:
    gh = _github_files(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {datasets: []}\ntrain: {adapter: lorax}\n")
    r = _action("run", {**gh, "LADLE_RECIPE": str(bad), "LADLE_MODE": "run"}, tmp_path)
    assert r.returncode == 0
    assert _outputs(gh["GITHUB_OUTPUT"])["verdict"] == "error"
    assert _action("verdict", {"LADLE_VERDICT": "error"}, tmp_path).returncode == 1


@pytest.mark.parametrize(
    ("stated", "fail_on", "code"),
    [("insufficient-evidence", "false", 0), ("insufficient-evidence", "true", 1), ("", "", 1)],
)
def test_verdict_step_exit_codes(tmp_path: Path, stated: str, fail_on: str, code: int) -> None:
    env = {"LADLE_VERDICT": stated, "LADLE_FAIL_ON_INSUFFICIENT": fail_on}
    r = _action("verdict", env, tmp_path)
    assert r.returncode == code
    if stated and code == 0:
        assert r.stdout.startswith("::warning::")


def test_verdict_prefers_the_report_then_the_exit_code() -> None:
    assert verdict(None, 0) == "error"  # no report: nothing was shown, never a pass
    assert verdict({"gate_passed": True}, 0) == "pass"
    assert verdict({"gate_passed": False}, 1) == "fail"
    assert verdict({}, 3) == "insufficient-evidence"
    assert verdict({"verdict": "insufficient_evidence"}, 3) == "insufficient-evidence"
    assert verdict({"gate_passed": True}, 2) == "error"


def test_comment_body_has_marker_verdict_and_change() -> None:
    body = comment_body("r.yaml", "fail", "| metric |\n", change_vs_main="Gate: A passed")
    first, *rest = body.splitlines()
    assert first == "<!-- ladle-gate:r.yaml -->"
    assert "❌ Ladle gate: fail" in body and "Gate: A passed" in "\n".join(rest)
