"""Reading recipe YAML safely: bounded, strict, and with a position for every field.

A recipe is untrusted input, so reading it has limits that no real recipe comes near:

- **Nesting** deeper than :data:`MAX_DEPTH` is refused while composing (PyYAML's composer
  recurses once per level; a 20,000-deep ``[[[...]]]`` would otherwise end in a
  ``RecursionError``).
- **Size**: a file over :data:`MAX_BYTES` or :data:`MAX_NODES` values is no recipe.
- **Aliases** are counted as what they expand to. Ten nested ``&a [*a, *a, ...]`` lines
  are 500 bytes of YAML but billions of nodes for the position walker and for pydantic;
  a document that expands past :data:`MAX_NODES` nodes or :data:`MAX_DEPTH` levels is
  refused before anything walks it. A node that contains itself through an alias is
  refused too.
- **Duplicate keys** are errors naming both lines: YAML's "last one wins" would let a typo
  or a pasted block silently replace a setting.

The position table maps each field path (``("train", "lr")``) to the file, line and
column of its node, so validation errors point at the YAML that caused them.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ladle.errors import ConfigIssue, RecipeError

Loc = tuple[str | int, ...]
Position = tuple[str, int | None, int | None]  # file, line (1-based), column (1-based)

MAX_DEPTH = 64
"""Deepest nesting of mappings/lists accepted (real recipes stay under 10)."""
MAX_NODES = 20_000
"""Most YAML nodes a document may hold, written or once aliases are expanded (real
recipes: < 2,000)."""
MAX_BYTES = 1 << 20
"""Largest recipe file read (real recipes: a few KB; PyYAML parses ~100 KB/s)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class Source:
    """A recipe's data and where each of its fields was written."""

    data: dict[str, Any]
    positions: dict[Loc, Position] = field(default_factory=dict)


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses nesting past :data:`MAX_DEPTH` while composing."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH or self._nodes > MAX_NODES:
                mark = self.peek_event().start_mark
                problem = (
                    f"nested deeper than {MAX_DEPTH} levels"
                    if self._depth > MAX_DEPTH
                    else f"more than {MAX_NODES:,} values: not a recipe"
                )
                raise yaml.composer.ComposerError(None, None, problem, mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _mark(file: str, node: yaml.Node) -> Position:
    return (file, node.start_mark.line + 1, node.start_mark.column + 1)


def _expanded_shape(
    node: yaml.Node, file: str, memo: dict[int, tuple[int, int]], open_: set[int]
) -> tuple[int, int]:
    """(nodes, depth) of ``node`` with every alias expanded, computed once per distinct
    node, so the cost is linear in the document, not in its expansion."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_:
        raise RecipeError(
            [ConfigIssue(*_mark(file, node), "", "an alias refers to a node that contains it")]
        )
    open_.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    size, depth = 1, 0
    for child in children:
        n, d = _expanded_shape(child, file, memo, open_)
        size, depth = size + n, max(depth, d)
    open_.discard(key)
    memo[key] = (size, depth + 1)
    return memo[key]


def _walk(
    node: yaml.Node, file: str, loc: Loc, out: dict[Loc, Position], issues: dict[Position, str]
) -> None:
    """Record the position of every field path; collect duplicate keys into ``issues``."""
    out[loc] = _mark(file, node)
    if isinstance(node, yaml.MappingNode):
        # `<<: *base` merges another mapping's keys into this one; explicit keys win, so
        # merged ones are walked first and overwritten.
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                merged = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for m in merged:
                    _walk(m, file, loc, out, issues)
        seen: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG or not isinstance(key, yaml.ScalarNode):
                continue  # the constructor reports an unhashable key
            k = key.value
            if k in seen:
                first = seen[k].start_mark.line + 1
                issues[_mark(file, key)] = (
                    f"duplicate key {k!r} (first at line {first}); YAML would keep only the "
                    "last one, so delete or rename one of them"
                )
            seen[k] = key
            _walk(value, file, (*loc, k), out, issues)
            # Point key-level errors (unknown key) at the key itself.
            out[(*loc, k)] = _mark(file, key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, file, (*loc, i), out, issues)


def _unshare(obj: Any) -> Any:
    """Copy dicts and lists so no two paths share one (aliases construct shared objects,
    and an override of one path must not change another)."""
    if isinstance(obj, dict):
        return {k: _unshare(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unshare(v) for v in obj]
    return obj


def _yaml_issue(e: yaml.YAMLError, file: str, text: str) -> ConfigIssue:
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        line, col = mark.line + 1, mark.column + 1
    elif isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        return ConfigIssue(
            file, line, col, "", f"invalid YAML: character {e.character:#06x} is not allowed"
        )
    else:
        line = col = None
    problem = getattr(e, "problem", None) or " ".join(str(e).split())
    return ConfigIssue(file, line, col, "", f"invalid YAML: {problem}")


def parse_yaml(text: str, file: str, loc: Loc = ()) -> tuple[Any, dict[Loc, Position]]:
    """YAML text -> (data, positions), within the limits above.

    Raises :class:`RecipeError` for invalid YAML, too deep a nesting, too large an alias
    expansion and duplicate keys (all of those found, located).
    """
    positions: dict[Loc, Position] = {}
    try:
        loader = _BoundedLoader(text)  # the reader checks for unprintable characters here
    except yaml.YAMLError as e:
        raise RecipeError([_yaml_issue(e, file, text)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, positions
        # Aliases can nest deeper than the text does (an anchored list holding an alias
        # of the previous one), and expand to far more nodes: both are bounded before
        # anything recursive walks the tree.
        size, depth = _expanded_shape(node, file, {}, set())
        too_big = f"{size:,} nodes (at most {MAX_NODES:,})" if size > MAX_NODES else ""
        too_deep = f"{depth:,} levels deep (at most {MAX_DEPTH})" if depth > MAX_DEPTH else ""
        if too_big or too_deep:
            raise RecipeError(
                [
                    ConfigIssue(
                        *_mark(file, node),
                        "",
                        f"aliases expand this document to {too_big or too_deep}; write the "
                        "repeated parts out or use `extends`",
                    )
                ]
            )
        issues: dict[Position, str] = {}
        _walk(node, file, loc, positions, issues)  # before constructing: it flattens merges
        if issues:
            raise RecipeError(
                [ConfigIssue(f, line, col, "", msg) for (f, line, col), msg in issues.items()]
            )
        data = loader.construct_document(node)
    except yaml.YAMLError as e:
        raise RecipeError([_yaml_issue(e, file, text)]) from None
    finally:
        loader.dispose()
    return _unshare(data), positions


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise RecipeError(
            [
                ConfigIssue(
                    file,
                    line,
                    col,
                    "",
                    f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save the recipe as UTF-8",
                )
            ]
        ) from None


def read_source(path: Path) -> Source:
    """Read one recipe file (no ``extends``) into a :class:`Source`."""
    file = str(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device would block or stream
            raise RecipeError([ConfigIssue(file, None, None, "", "not a regular file")])
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        raise RecipeError([ConfigIssue(file, None, None, "", "file not found")]) from e
    except OSError as e:  # permissions, a name too long for the file system
        raise RecipeError([ConfigIssue(file, None, None, "", f"cannot read: {e.strerror}")]) from e
    if len(raw) > MAX_BYTES:
        raise RecipeError(
            [ConfigIssue(file, None, None, "", f"larger than {MAX_BYTES >> 20} MiB: not a recipe")]
        )
    data, positions = parse_yaml(_decode(raw, file), file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([ConfigIssue(file, 1, 1, "", "a recipe must be a YAML mapping")])
    return Source(data, positions)
