"""The ``ladle`` command: help, validate, schema, models, error policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ladle.cli import main

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("argv", [["--debug", "run"], ["run", "--debug"]])
def test_debug_flag_shows_the_traceback_wherever_it_stands(
    tmp_path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ladle.errors import RecipeError

    monkeypatch.delenv("LADLE_DEBUG", raising=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")  # no data section
    assert main(["run", str(bad)]) == 2  # without --debug: one message, exit 2
    with pytest.raises(RecipeError):  # with it: the exception propagates
        main([*argv, str(bad)])


HOSTILE_RECIPES = {
    "not-utf8": (b"name: x\n# caf\xe9\n", [], "not UTF-8"),
    "deep": (b"name: x\ndata: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", [], "nested deeper"),
    "scalar-override": (
        b"name: x\ndata: {datasets: [{path: a.jsonl}]}\ntrain: {max_steps: 5}\n",
        ["train.max_steps.x.y=1"],
        "not a section",
    ),
    "duplicate-key": (b"name: x\nname: y\n", [], "duplicate key 'name' (first at line 1)"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_RECIPES))
def test_hostile_recipe_is_one_error_exit_2(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process: anything but a LadleError would propagate out of main() and fail here.
    text, overrides, expected = HOSTILE_RECIPES[case]
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(text)
    if not overrides:
        assert main(["validate", str(recipe)]) == 1
        assert expected in capsys.readouterr().err
    assert main(["run", str(recipe), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ladle run: error: ") and expected in err


LONG = "x" * 300  # longer than any file name the file system takes (ENAMETOOLONG)


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", LONG + ".yaml"],
        ["run", LONG + ".yaml"],
        ["models", "--resolve", LONG],
        ["quantize", LONG, "out"],
        ["export", LONG, "out"],
    ],
    ids=["validate", "run", "models", "quantize", "export"],
)
def test_path_the_file_system_refuses_is_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) in (1, 2)  # validate: 1 (the answer is no); the others: 2
    err = capsys.readouterr().err
    assert "File name too long" in err or "file not found" in err
    assert "Traceback" not in err


def test_file_names_are_not_rich_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a[").mkdir()
    recipe = tmp_path / "a[" / "b].yaml"  # the path holds `[/b]`: a closing tag to rich
    recipe.write_text("name: t\ndata: {datasets: [{path: a.jsonl}]}\n")
    assert main(["validate", str(recipe)]) == 0
    assert f"✓ {recipe}" in capsys.readouterr().out
