"""Recipe language: validation messages, extends, overrides, paths, shipped recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ladle.errors import RecipeError
from ladle.recipe import json_schema, load_recipe, parse_override

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))

MINIMAL = """\
name: t
data:
  datasets:
    - path: train.jsonl
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), "a recipe opens with the command that runs it"


def test_three_mistakes_three_located_errors(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: bad\n"
        "model:\n"
        "  dtyp: float32\n"  # unknown key, line 3
        "data:\n"
        "  datasets:\n"
        "    - path: a.jsonl\n"
        "      format: messagez\n"  # bad choice, line 7
        "  max_length: lots\n",  # wrong type, line 8
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(p)
    issues = info.value.issues
    assert [(i.line, i.path) for i in issues] == [
        (3, "model.dtyp"),
        (7, "data.datasets.0.format"),
        (8, "data.max_length"),
    ]
    assert all(i.file == str(p) for i in issues)
    assert "did you mean 'dtype'" in issues[0].message
    assert "'messages'" in issues[1].message and "messagez" in issues[1].message
    assert "integer" in issues[2].message
    assert str(p) + ":3:3: model.dtyp:" in str(info.value)


def test_unknown_top_level_section_suggests(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "trian:\n  lr: 0.1\n")
    with pytest.raises(RecipeError, match="did you mean 'train'"):
        load_recipe(p)


def test_invalid_yaml_is_located(tmp_path: Path) -> None:
    p = write(tmp_path, "name: t\ndata: [unclosed\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(p)
    assert info.value.issues[0].line is not None
    assert "invalid YAML" in info.value.issues[0].message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_cross_field_rules_fail_at_validate(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "model:\n  quantize: nf4\ntrain:\n  method: dpo\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(p)
    text = str(info.value)
    assert "dpo needs `format: preference`" in text
    assert "nf4" in text and "qlora" in text


def test_paths_resolve_relative_to_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "project" / "recipes"
    sub.mkdir(parents=True)
    p = write(sub, MINIMAL + "output:\n  dir: ../runs\n")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(p)
    assert recipe.data.datasets[0].path == str(sub / "train.jsonl")
    assert Path(recipe.output.dir).resolve() == (tmp_path / "project" / "runs").resolve()


def test_overrides_are_typed_by_schema(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL)
    recipe = load_recipe(
        p,
        ["train.lr=1e-4", "data.max_length=1024", "train.adapter=dora", "data.datasets.0.limit=5"],
    )
    assert recipe.train.lr == pytest.approx(1e-4)
    assert recipe.data.max_length == 1024
    assert recipe.train.adapter == "dora"
    assert recipe.data.datasets[0].limit == 5


def test_bad_override_is_reported_as_command_line(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL)
    with pytest.raises(RecipeError) as info:
        load_recipe(p, ["train.lrr=0.1"])
    assert info.value.issues[0].file == "<command line>"
    assert "did you mean 'lr'" in info.value.issues[0].message
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        parse_override("train.lr")


def test_extends_deep_merges_and_locates_errors_in_the_right_file(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL + "train:\n  lr: 0.001\n  max_steps: 10\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\ntrain:\n  max_steps: 20\n")
    recipe = load_recipe(child)
    assert (recipe.name, recipe.train.lr, recipe.train.max_steps) == ("child", 0.001, 20)
    write(tmp_path, MINIMAL + "train:\n  lr: fast\n", "base.yaml")
    with pytest.raises(RecipeError) as info:
        load_recipe(child)
    assert info.value.issues[0].file == str((tmp_path / "base.yaml").resolve())
    assert info.value.issues[0].line == 6


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "extends: b.yaml\nname: a\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\nname: b\n", "b.yaml")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_json_schema_describes_every_field() -> None:
    schema = json_schema()
    json.dumps(schema)
    train = schema["$defs"]["TrainSection"]["properties"]
    assert train["adapter"]["enum"] == ["lora", "qlora", "dora", "full"]

    def walk(defs: dict) -> None:
        for name, d in defs.items():
            for field, prop in d.get("properties", {}).items():
                assert prop.get("description"), f"{name}.{field} has no description"

    walk(schema["$defs"])
