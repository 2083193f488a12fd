"""Reading recipes: YAML with positions, ``extends``, command-line overrides, and
errors that point at the file, line and column of the offending field.

Pydantic reports every error at once with a ``loc`` path; we keep a table from each
path to the YAML node that produced it (per file, since ``extends`` merges several),
and turn each pydantic error into a :class:`~ladle.errors.ConfigIssue`.
"""

from __future__ import annotations

import contextlib
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ladle.errors import ConfigIssue, RecipeError
from ladle.recipe.schema import Recipe

Loc = tuple[str | int, ...]
Position = tuple[str, int | None, int | None]  # file, line (1-based), column (1-based)
CLI = "<command line>"


@dataclass
class _Source:
    data: dict[str, Any]
    positions: dict[Loc, Position] = field(default_factory=dict)


def _walk(node: yaml.Node, file: str, loc: Loc, out: dict[Loc, Position]) -> None:
    out[loc] = (file, node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value
            _walk(value, file, (*loc, k), out)
            # Point key-level errors (unknown key) at the key itself.
            out[(*loc, k)] = (file, key.start_mark.line + 1, key.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, file, (*loc, i), out)


def _read_yaml(path: Path) -> _Source:
    if not path.is_file():
        raise RecipeError([ConfigIssue(str(path), None, None, "", "file not found")])
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        problem = getattr(e, "problem", None) or str(e)
        raise RecipeError(
            [ConfigIssue(str(path), line, col, "", f"invalid YAML: {problem}")]
        ) from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([ConfigIssue(str(path), 1, 1, "", "a recipe must be a YAML mapping")])
    src = _Source(data)
    if node is not None:
        _walk(node, str(path), (), src.positions)
    return src


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _load_with_extends(path: Path, stack: tuple[Path, ...] = ()) -> _Source:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise RecipeError([ConfigIssue(str(path), None, None, "extends", f"cycle: {chain}")])
    src = _read_yaml(path)
    parent_ref = src.data.get("extends")
    if parent_ref is None:
        return src
    if not isinstance(parent_ref, str):
        file, line, col = src.positions.get(("extends",), (str(path), None, None))
        raise RecipeError([ConfigIssue(file, line, col, "extends", "must be a file path")])
    parent_path = (path.parent / parent_ref).resolve()
    if not parent_path.is_file():
        file, line, col = src.positions.get(("extends",), (str(path), None, None))
        raise RecipeError(
            [ConfigIssue(file, line, col, "extends", f"base recipe {parent_path} not found")]
        )
    parent = _load_with_extends(parent_path, (*stack, path))
    parent.data.pop("extends", None)
    merged = _Source(_deep_merge(parent.data, src.data), dict(parent.positions))
    merged.positions.update(src.positions)
    return merged


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``train.lr=1e-4`` -> (["train", "lr"], 0.0001). Values are YAML scalars, typed
    later by the schema; list indices are written as numbers (``data.datasets.0.limit``)."""
    if "=" not in text:
        raise RecipeError(
            [ConfigIssue(CLI, None, None, text, "an override is KEY=VALUE, e.g. train.lr=1e-4")]
        )
    key, raw = text.split("=", 1)
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads "1e-4" as a string; the schema wants a number for those fields.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value for c in ".eE") else value
    return parts, value


def _apply_override(data: dict[str, Any], parts: list[str | int], value: Any) -> None:
    cur: Any = data
    for i, p in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(cur, list):
            if not isinstance(p, int) or p >= len(cur):
                raise RecipeError(
                    [ConfigIssue(CLI, None, None, ".".join(map(str, parts)), f"no list item {p}")]
                )
            cur = cur[p]
            continue
        if p not in cur or cur[p] is None:
            cur[p] = [] if isinstance(nxt, int) else {}
        cur = cur[p]
    last = parts[-1]
    settable = isinstance(cur, dict) or (
        isinstance(cur, list) and isinstance(last, int) and last < len(cur)
    )
    if settable:
        cur[last] = value
    else:
        raise RecipeError(
            [ConfigIssue(CLI, None, None, ".".join(map(str, parts)), "cannot set this path")]
        )


# ------------------------------------------------------------------- error mapping


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model class that owns the keys at ``loc`` (for "did you mean")."""
    cur: Any = Recipe
    for part in loc:
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            if not isinstance(part, str) or part not in cur.model_fields:
                return None
            cur = cur.model_fields[part].annotation
        cur = _unwrap(cur, part)
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _unwrap(tp: Any, part: str | int) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        models = [
            a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        return models[0] if models else tp
    if origin is list and isinstance(part, int):
        return typing.get_args(tp)[0]
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0], part)
    return tp


def _position(positions: dict[Loc, Position], loc: Loc, default_file: str) -> Position:
    for n in range(len(loc), -1, -1):
        if loc[:n] in positions:
            return positions[loc[:n]]
    return (default_file, None, None)


def _issue(err: Any, positions: dict[Loc, Position], file: str) -> ConfigIssue:
    loc: Loc = tuple(
        p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))
    )
    # Union/tagged errors append the member type name; drop it from the user-facing path.
    loc = tuple(p for p in loc if p not in ("str", "list[str]", "dict[str,any]"))
    path = ".".join(str(p) for p in loc)
    kind = err["type"]
    msg = err["msg"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        owner = _model_at(loc[:-1])
        choices = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
        msg = f"unknown key {key!r}"
        msg += f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(choices)})"
    elif kind == "literal_error":
        msg = f"{msg}, got {err.get('input')!r}"
    elif kind == "missing":
        msg = "required field is missing"
    elif kind.endswith("_parsing") or kind.endswith("_type"):
        msg = f"{msg}, got {err.get('input')!r}"
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    f, line, col = _position(positions, loc, file)
    return ConfigIssue(f, line, col, path, msg)


# ------------------------------------------------------------------- public API


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load, merge (``extends``), override and validate a recipe.

    Raises :class:`RecipeError` listing every problem found, each located in its YAML file.
    Relative paths inside the recipe are made absolute against the recipe's folder.
    """
    path = Path(path)
    src = _load_with_extends(path)
    data = src.data
    data.pop("extends", None)
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(data, parts, value)
        src.positions[tuple(parts)] = (CLI, None, None)
    if "name" not in data:
        data["name"] = path.stem.replace(" ", "-")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        issues = [_issue(err, src.positions, str(path)) for err in e.errors()]
        issues.sort(key=lambda i: (i.file, i.line or 0, i.column or 0))
        raise RecipeError(issues) from None
    _absolutize(recipe, path.resolve().parent)
    return recipe


def _absolutize(recipe: Recipe, base: Path) -> None:
    """Paths in a recipe mean "relative to this file", never the working directory."""
    for ds in recipe.data.datasets:
        if isinstance(ds.path, list):
            ds.path = [str(base / p) for p in ds.path]
        else:
            ds.path = str(base / ds.path)
    tpl = recipe.data.template
    if tpl and "\n" not in tpl and "{" not in tpl and tpl.endswith((".jinja", ".j2", ".jinja2")):
        recipe.data.template = str(base / tpl)
    ref = recipe.model.base
    if not ref.startswith("builtin:") and (
        ref.startswith((".", "/", "~")) or (base / ref).exists()
    ):
        recipe.model.base = str((base / ref).expanduser())
    recipe.output.dir = str(base / recipe.output.dir)
    for suite in recipe.evaluate.suites:
        p = suite.dataset.path
        suite.dataset.path = [str(base / x) for x in p] if isinstance(p, list) else str(base / p)
    ev = recipe.evaluate
    for spec in [*(ev.baselines or [ev.baseline]), ev.candidate]:
        if spec.model and not spec.model.startswith("builtin:"):
            ref = spec.model
            if ref.startswith((".", "/", "~")) or (base / ref).exists():
                spec.model = str((base / ref).expanduser())


def validate_files(paths: list[str | Path]) -> dict[str, RecipeError | None]:
    """Validate several recipes; returns each file's error (or None)."""
    out: dict[str, RecipeError | None] = {}
    for p in paths:
        try:
            load_recipe(p)
            out[str(p)] = None
        except RecipeError as e:
            out[str(p)] = e
    return out


def json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Ladle recipe"
    return schema
