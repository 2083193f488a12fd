"""Reading recipes: YAML with positions, ``extends``, command-line overrides, and
errors that point at the file, line and column of the offending field.

Pydantic reports every error at once with a ``loc`` path; we keep a table from each
path to the YAML node that produced it (per file, since ``extends`` merges several),
and turn each pydantic error into a :class:`~ladle.errors.ConfigIssue`.
"""

from __future__ import annotations

import contextlib
import difflib
import reprlib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ladle.errors import ConfigIssue, RecipeError
from ladle.recipe.schema import Recipe, template_kind
from ladle.recipe.source import Loc, Position, Source, parse_yaml, read_source

CLI = "<command line>"
MAX_EXTENDS = 32


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _load_with_extends(path: Path, stack: tuple[Path, ...] = ()) -> Source:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise RecipeError([ConfigIssue(str(path), None, None, "extends", f"cycle: {chain}")])
    src = read_source(path)
    parent_ref = src.data.get("extends")
    if parent_ref is None:
        return src
    if not isinstance(parent_ref, str):
        file, line, col = src.positions.get(("extends",), (str(path), None, None))
        raise RecipeError([ConfigIssue(file, line, col, "extends", "must be a file path")])
    if len(stack) >= MAX_EXTENDS:
        file, line, col = src.positions.get(("extends",), (str(path), None, None))
        raise RecipeError(
            [ConfigIssue(file, line, col, "extends", f"more than {MAX_EXTENDS} levels of extends")]
        )
    try:
        parent_path = (path.parent / parent_ref).resolve()
    except (OSError, ValueError):  # a NUL byte, a symlink loop
        parent_path = path.parent / parent_ref
    if not _is_file(parent_path):
        file, line, col = src.positions.get(("extends",), (str(path), None, None))
        raise RecipeError(
            [ConfigIssue(file, line, col, "extends", f"base recipe {parent_path} not found")]
        )
    parent = _load_with_extends(parent_path, (*stack, path))
    parent.data.pop("extends", None)
    merged = Source(_deep_merge(parent.data, src.data), dict(parent.positions))
    merged.positions.update(src.positions)
    return merged


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``train.lr=1e-4`` -> (["train", "lr"], 0.0001). Values are YAML (scalars, or flow
    lists/mappings), typed later by the schema; list indices are written as numbers
    (``data.datasets.0.limit``)."""
    if "=" not in text:
        raise RecipeError(
            [ConfigIssue(CLI, None, None, text, "an override is KEY=VALUE, e.g. train.lr=1e-4")]
        )
    key, raw = text.split("=", 1)
    # isascii: str.isdigit() is also true for "²", which int() refuses.
    parts: list[str | int] = [
        int(p) if p.isascii() and p.isdigit() else p for p in key.strip().split(".")
    ]
    value: Any = None
    if raw.strip():
        try:
            value, _ = parse_yaml(raw, CLI)
        except RecipeError:
            value = raw  # not YAML: the schema decides whether the plain text is valid
    # YAML 1.1 reads "1e-4" as a string; the schema wants a number for those fields.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value for c in ".eE") else value
    return parts, value


def _apply_override(data: dict[str, Any], parts: list[str | int], value: Any) -> None:
    path = ".".join(map(str, parts))

    def refuse(msg: str) -> RecipeError:
        return RecipeError([ConfigIssue(CLI, None, None, path, msg)])

    cur: Any = data
    for i, p in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(cur, list):
            if not isinstance(p, int) or p >= len(cur):
                raise refuse(f"no list item {p}")
        elif isinstance(cur, dict):
            if p not in cur or cur[p] is None:
                cur[p] = [] if isinstance(nxt, int) else {}
        else:
            where = ".".join(map(str, parts[:i])) or "the recipe"
            raise refuse(
                f"{where} is a value ({reprlib.repr(cur)}), not a section: it has no field {p!r}"
            )
        cur = cur[p]
    last = parts[-1]
    settable = isinstance(cur, dict) or (
        isinstance(cur, list) and isinstance(last, int) and last < len(cur)
    )
    if not settable:
        where = ".".join(map(str, parts[:-1])) or "the recipe"
        raise refuse(f"cannot set {last!r}: {where} is {reprlib.repr(cur)}")
    cur[last] = value


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
    kind = err["type"]
    raw: Loc = tuple(
        p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))
    )
    # An unknown key is the last part, whatever its name (a user may write `str:`).
    head, tail = (raw[:-1], raw[-1:]) if kind == "extra_forbidden" else (raw, ())
    # Union/tagged errors append the member type name; drop it from the user-facing path.
    loc = tuple(p for p in head if p not in ("str", "list[str]", "dict[str,any]")) + tail
    path = ".".join(str(p) for p in loc)
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
    _absolutize(recipe, path.resolve().parent, src.positions, str(path))
    return recipe


def _is_dir_or_file(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _absolutize(recipe: Recipe, base: Path, positions: dict[Loc, Position], file: str) -> None:
    """Paths in a recipe mean "relative to this file", never the working directory."""
    for ds in recipe.data.datasets:
        if isinstance(ds.path, list):
            ds.path = [str(base / p) for p in ds.path]
        else:
            ds.path = str(base / ds.path)
    tpl = recipe.data.template
    if tpl is not None and template_kind(tpl) == "path":
        tpl_path = base / tpl
        try:
            found = tpl_path.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            f, line, col = _position(positions, ("data", "template"), file)
            raise RecipeError(
                [
                    ConfigIssue(
                        f,
                        line,
                        col,
                        "data.template",
                        f"template file {tpl_path} not found (a value ending in .jinja, .j2 or "
                        "containing '/' is a path relative to the recipe)",
                    )
                ]
            )
        recipe.data.template = str(tpl_path)
    ref = recipe.model.base
    if not ref.startswith("builtin:") and (
        ref.startswith((".", "/", "~")) or _is_dir_or_file(base / ref)
    ):
        recipe.model.base = str((base / ref).expanduser())
    if recipe.model.adapter is not None:
        recipe.model.adapter = str(base / Path(recipe.model.adapter).expanduser())
    recipe.output.dir = str(base / recipe.output.dir)
    for suite in recipe.evaluate.suites:
        p = suite.dataset.path
        suite.dataset.path = [str(base / x) for x in p] if isinstance(p, list) else str(base / p)
    ev = recipe.evaluate
    for spec in [*(ev.baselines or [ev.baseline]), ev.candidate]:
        if spec.model and not spec.model.startswith("builtin:"):
            ref = spec.model
            if ref.startswith((".", "/", "~")) or _is_dir_or_file(base / ref):
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
