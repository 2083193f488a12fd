"""The ``ladle`` command: help, validate, schema, models, error policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ladle.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("validate", "schema", "models"):
        assert cmd in out
    assert "examples:" in out


def test_validate_shipped_recipes_ok(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(p) for p in sorted((REPO / "recipes").glob("*.yaml"))]
    assert main(["validate", *files]) == 0
    assert capsys.readouterr().out.count("✓") == len(files)


def test_validate_bad_recipe_exits_1_with_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata:\n  datasets: []\ntrain:\n  adapter: lorax\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err and f"{bad}:5:" in err


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Ladle recipe"


def test_models_lists_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["builtins"][0]["ref"] == "builtin:smollm2-135m-instruct"
    assert data["builtins"][0]["installed"] is True


def test_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ladle.cli", "models", "--resolve", "builtin:nope"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unknown builtin model 'nope'" in r.stderr
