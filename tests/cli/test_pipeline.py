"""``run_recipe`` (the library behind ``ladle run``) reports through the reporter it is
given, prints nothing itself and never imports the CLI layer (``ladle.commands``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = """
import json, sys
from ladle.pipeline import run_recipe

class Recording:
    def __init__(self):
        self.calls = []
    def stage(self, message):
        self.calls.append(["stage", message])
    def prep_done(self, result):
        self.calls.append(["prep_done", result.manifest.train.examples])
    def eval_report(self, markdown):
        self.calls.append(["eval_report", markdown[:200]])

rec = Recording()
out = run_recipe(sys.argv[1], ["train.max_steps=1"], reporter=rec)
cli = sorted(m for m in sys.modules if m.startswith("ladle.commands") or m == "ladle.cli")
print(json.dumps({"calls": rec.calls, "cli_modules": cli, "run_dir": str(out.run_dir)}))
"""


def test_run_recipe_reports_through_its_reporter(tiny_llama_dir: Path, tmp_path: Path) -> None:
    def rows(n: int, offset: int) -> str:
        return "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Ticket {offset + i}: printer {i} jams"},
                        {"role": "assistant", "content": f"hardware {i % 3}"},
                    ]
                }
            )
            + "\n"
            for i in range(n)
        )

    (tmp_path / "train.jsonl").write_text(rows(16, 0))
    (tmp_path / "eval.jsonl").write_text(rows(4, 100))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        textwrap.dedent(f"""\
        name: tiny
        model: {{base: {tiny_llama_dir}}}
        data:
          datasets:
            - {{path: train.jsonl, split: train}}
            - {{path: eval.jsonl, split: eval}}
          max_length: 128
          dedup: {{enabled: false}}
        train: {{report_to: [none], threads: 1}}
        evaluate:
          baseline: {{few_shot: 0}}
          generation: {{max_new_tokens: 4, batch_size: 4}}
          bootstrap: 100
        """)
    )
    env = {**os.environ, "LADLE_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(recipe)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, "run_recipe printed on its own: " + r.stdout[:2000]
    got = json.loads(lines[0])
    assert got["cli_modules"] == []
    kinds = [c[0] for c in got["calls"]]
    assert kinds.count("prep_done") == 1 and kinds.count("eval_report") == 1
    assert kinds.index("prep_done") < kinds.index("eval_report")
    assert ["prep_done", 16] in got["calls"]
    stages = [c[1] for c in got["calls"] if c[0] == "stage"]
    assert any(s.startswith("1/3 data") for s in stages)
    assert any(s.startswith("3/3 evaluate") for s in stages)
    assert (Path(got["run_dir"]) / "eval" / "report.json").is_file()
