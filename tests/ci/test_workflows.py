"""The CI files that cannot run here are linted here: the GitHub workflows and the action
with actionlint (which also reads ``action.yml`` through the ``uses: ./`` self-test), and
every file against its vendor's JSON Schema with check-jsonschema (schemas ship inside the
package, so no network is needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
GITHUB_EXAMPLE = REPO / "examples" / "ci" / "github-actions.yml"


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; `make setup` installs the dev extra")
    return path


def test_there_are_workflows_to_lint() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml"}


def test_actionlint_passes_on_workflows_and_action() -> None:
    r = subprocess.run(
        [_tool("actionlint"), *map(str, WORKFLOWS), str(GITHUB_EXAMPLE)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_reads_the_action_through_a_workflow(tmp_path: Path) -> None:
    # The linter must really read action.yml: a workflow in a project holding it that
    # misspells an input fails, naming the input.
    (tmp_path / ".git").mkdir()
    shutil.copy(REPO / "action.yml", tmp_path / "action.yml")
    wf = tmp_path / ".github" / "workflows" / "bad.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v5\n      - uses: ./\n        with: {recipee: x}\n"
    )
    r = subprocess.run([_tool("actionlint"), str(wf)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1
    assert 'input "recipee" is not defined' in r.stdout
    assert 'missing input "recipe"' in r.stdout


@pytest.mark.parametrize(
    ("schema", "files"),
    [
        ("vendor.github-workflows", [*WORKFLOWS, GITHUB_EXAMPLE]),
        ("vendor.github-actions", [REPO / "action.yml"]),
        ("vendor.gitlab-ci", [REPO / "examples" / "ci" / "gitlab-ci.yml"]),
    ],
)
def test_ci_files_match_their_vendor_schema(schema: str, files: list[Path]) -> None:
    r = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_gitlab_schema_rejects_a_broken_job(tmp_path: Path) -> None:
    bad = tmp_path / "gitlab-ci.yml"
    bad.write_text("job:\n  script: echo hi\n  artifacts:\n    reports:\n      junit: 3\n")
    r = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(bad)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
