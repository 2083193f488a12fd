"""Recipe language: validation messages, extends, overrides, paths, shipped recipes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ladle.errors import RecipeError
from ladle.recipe import json_schema, load_recipe, parse_override

REPO = Path(__file__).resolve().parents[2]
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


# ----------------------------------------------------------------- hostile recipes


def test_recipe_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(p)
    issue = info.value.issues[0]
    assert (issue.line, issue.column) == (5, 6)
    assert "not UTF-8" in issue.message and "0xe9" in issue.message


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "x: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(RecipeError, match="nested deeper than 64 levels") as info:
        load_recipe(p)
    assert info.value.issues[0].line == 5


def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    # ~500 bytes that expand to 10**10 nodes: the position walker and pydantic would need
    # tens of GB; the expansion is counted per distinct node instead.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    p = write(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    assert p.stat().st_size < 700
    with pytest.raises(RecipeError, match="aliases expand this document to"):
        load_recipe(p)


def test_aliases_that_nest_deeper_than_the_text_are_refused(tmp_path: Path) -> None:
    # Each anchored list holds an alias of the previous one: every line is 40 levels deep,
    # the expansion 40 x 30 = 1,200 (a RecursionError in the position walker before).
    lines = ["x:", "  b0: &b0 1"]
    lines += [f"  b{k}: &b{k} {'[' * 40}*b{k - 1}{']' * 40}" for k in range(1, 30)]
    p = write(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    with pytest.raises(RecipeError, match="levels deep"):
        load_recipe(p)


def test_oversized_recipes_are_refused_quickly(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "x:\n" + "- x\n" * 30_000)  # 120 KB, 30,000 values
    with pytest.raises(RecipeError, match="more than 20,000 values"):
        load_recipe(p)
    p = write(tmp_path, MINIMAL + "# " + "x" * (1 << 20) + "\n")
    with pytest.raises(RecipeError, match="larger than 1 MiB"):
        load_recipe(p)


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "r.yaml"
    os.mkfifo(fifo)  # opening it would block until a writer comes
    with pytest.raises(RecipeError, match="not a regular file"):
        load_recipe(fifo)


def test_modest_aliases_still_work_and_are_not_shared(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: t\ndata:\n  datasets:\n    - &ds {path: a.jsonl, limit: 5}\n    - *ds\n",
    )
    recipe = load_recipe(p, ["data.datasets.1.limit=7"])
    assert [d.limit for d in recipe.data.datasets] == [5, 7]


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "x: &x [*x]\n")
    with pytest.raises(RecipeError, match="contains it"):
        load_recipe(p)


def test_duplicate_keys_are_errors_naming_both_lines(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        MINIMAL + "train:\n  lr: 0.001\n  max_steps: 5\n  lr: 0.1\nseed: 1\nseed: 2\n",
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(p)
    got = [(i.line, i.message.split(";")[0]) for i in info.value.issues]
    assert got == [
        (8, "duplicate key 'lr' (first at line 6)"),
        (10, "duplicate key 'seed' (first at line 9)"),
    ]


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: t\n"
        "data: {datasets: [{path: a.jsonl}]}\n"
        "train:\n"
        "  <<: {lr: 0.001, max_steps: 5}\n"
        "  max_steps: 9\n",
    )
    recipe = load_recipe(p)
    assert (recipe.train.lr, recipe.train.max_steps) == (0.001, 9)


def test_override_through_a_scalar_is_a_recipe_error(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "train:\n  max_steps: 5\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(p, ["train.max_steps.x.y=1"])
    issue = info.value.issues[0]
    assert issue.file == "<command line>" and issue.path == "train.max_steps.x.y"
    assert "train.max_steps is a value (5), not a section" in issue.message


def test_override_values_are_bounded_yaml(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL)
    recipe = load_recipe(p, ["train.report_to=[none]", "train.lora.target_modules=[q_proj]"])
    assert recipe.train.report_to == ["none"]
    with pytest.raises(RecipeError):  # kept as text, then refused by the schema
        load_recipe(p, ["train.lr=" + "[" * 5000])
    with pytest.raises(RecipeError, match="unknown key '²'"):
        load_recipe(p, ["train.²=1"])  # not a list index (int("²") would raise)


def test_run_name_must_be_a_plain_name(tmp_path: Path) -> None:
    for bad in ("..", "../x", "/tmp/x", ".hidden", "a/b"):
        p = write(tmp_path, MINIMAL + f"output:\n  run_name: '{bad}'\n")
        with pytest.raises(RecipeError) as info:
            load_recipe(p)
        assert info.value.issues[0].path == "output.run_name", bad
        assert info.value.issues[0].line == 6
    p = write(tmp_path, MINIMAL + "output:\n  run_name: try-1.b_2\n")
    assert load_recipe(p).output.run_name == "try-1.b_2"


@pytest.mark.parametrize("name", ["x.j2", "x.jinja", "tpl/x.txt"])
def test_template_path_rule(tmp_path: Path, name: str) -> None:
    from ladle.recipe.schema import template_kind

    assert template_kind(name) == "path"
    p = write(tmp_path, MINIMAL + f"  template: {name}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(p)
    issue = info.value.issues[0]
    assert issue.path == "data.template" and issue.line == 5
    assert "not found" in issue.message and "relative to the recipe" in issue.message
    target = tmp_path / name
    target.parent.mkdir(exist_ok=True)
    target.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert load_recipe(p).data.template == str(target)


def test_template_kinds() -> None:
    from ladle.recipe.schema import template_kind

    assert template_kind("chatml") == "builtin"
    assert template_kind("{{ messages[0]['content'] }}</s>") == "inline"
    assert template_kind("{% for m in messages %}a/b{% endfor %}") == "inline"


def test_unknown_key_named_like_a_type_is_reported(tmp_path: Path) -> None:
    # Found by tests/test_recipe_fuzz.py: `str` was taken for pydantic's union tag.
    p = write(tmp_path, MINIMAL + "str: 1\n")
    with pytest.raises(RecipeError, match="unknown key 'str'"):
        load_recipe(p)


def test_unprintable_character_is_located(tmp_path: Path) -> None:
    # Found by tests/test_recipe_fuzz.py: the YAML reader refuses it before parsing.
    p = tmp_path / "r.yaml"
    p.write_bytes(MINIMAL.encode() + b"seed: 1\x00\n")
    with pytest.raises(RecipeError, match="character 0x0000 is not allowed") as info:
        load_recipe(p)
    assert (info.value.issues[0].line, info.value.issues[0].column) == (5, 8)


LONG = "x" * 300  # longer than a file name may be (ENAMETOOLONG)


def test_paths_the_file_system_refuses_are_recipe_errors(tmp_path: Path) -> None:
    """Bad input, not an OSError: every path the loader looks at is checked in a guard."""
    p = write(tmp_path, MINIMAL + f"  template: {LONG}.j2\n")
    with pytest.raises(RecipeError, match=r"template file .* not found"):
        load_recipe(p)
    p = write(tmp_path, MINIMAL + f"extends: {LONG}.yaml\n")
    with pytest.raises(RecipeError, match=r"base recipe .* not found"):
        load_recipe(p)
    p = write(tmp_path, MINIMAL + f"model: {{base: {LONG}}}\n")
    assert load_recipe(p).model.base == LONG  # not a folder here: resolved (and refused) later
