"""Eval examples and the two contestants' prompts.

An eval row is a conversation whose LAST assistant message is the reference; the prompt
is everything before it. The baseline's few-shot examples come from TRAIN rows, drawn
deterministically by seed, and a train row whose prompt equals an eval prompt is never
drawn (a leaked answer would flatter the baseline); the check holds even when
decontamination was switched off in ``prep``.
"""

from __future__ import annotations

import glob
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladle.errors import EvalError
from ladle.recipe.schema import PromptSpec, Recipe

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Example:
    """One eval (or few-shot) example: the prompt turns and the reference answer."""

    prompt: Messages
    reference: str


def split_row(row: dict[str, Any], where: str = "row") -> Example:
    """Split ``{"messages": [...]}`` at its last assistant message."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise EvalError(f"{where}: expected a non-empty `messages` list")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise EvalError(f"{where}: every message needs `role` and string `content`")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    if last < 0:
        raise EvalError(f"{where}: no assistant message to use as the reference")
    prompt = [{"role": str(m["role"]), "content": m["content"]} for m in messages[:last]]
    if not any(m["role"] != "system" for m in prompt):
        raise EvalError(f"{where}: nothing before the reference answer but a system prompt")
    return Example(prompt, messages[last]["content"])


def prompt_key(messages: Messages) -> str:
    """Identity of a prompt for leakage checks: its non-system turns, whitespace-trimmed."""
    return json.dumps(
        [(m["role"], m["content"].strip()) for m in messages if m["role"] != "system"]
    )


def select_few_shot(
    train: Sequence[Example], k: int, seed: int, eval_examples: Iterable[Example] = ()
) -> list[Example]:
    """``k`` train examples drawn by ``seed``, never one whose prompt is an eval prompt."""
    if k == 0:
        return []
    banned = {prompt_key(e.prompt) for e in eval_examples}
    pool = [e for e in train if prompt_key(e.prompt) not in banned]
    if len(pool) < k:
        raise EvalError(
            f"few_shot: {k} needs {k} train examples outside the eval set, found {len(pool)}"
        )
    return random.Random(seed).sample(pool, k)


def build_prompt(example: Example, spec: PromptSpec, shots: Sequence[Example]) -> Messages:
    """System prompt (the contestant's, else the row's own), few-shot turns, then the row."""
    own_system = [m for m in example.prompt if m["role"] == "system"]
    turns = [m for m in example.prompt if m["role"] != "system"]
    out: Messages = []
    if spec.system_prompt is not None:
        out.append({"role": "system", "content": spec.system_prompt})
    elif own_system:
        out.append(own_system[0])
    for shot in shots:
        out += [m for m in shot.prompt if m["role"] != "system"]
        out.append({"role": "assistant", "content": shot.reference})
    return out + turns


# ----------------------------------------------------------------------- reading rows


def read_split(recipe: Recipe, split: str) -> list[dict[str, Any]]:
    """Rows of one split, read directly from the recipe's `messages` datasets.

    INTEGRATION POINT: replace with ``ladle.data.prep(recipe)`` once the `prep` branch
    lands (normalised formats, dedup, decontamination counts); this reader handles
    JSONL/JSON files in `messages` format with the column, role, system and limit options.
    """
    rows: list[dict[str, Any]] = []
    for ds in recipe.data.datasets:
        if ds.split != split:
            continue
        if ds.format != "messages":
            raise EvalError(
                f"evaluation reads `messages` datasets until `ladle prep` is wired in; "
                f"{ds.path} is `{ds.format}`"
            )
        col = ds.columns.get("messages", "messages")
        taken = 0
        for path in _expand(ds.path):
            for i, raw in enumerate(_read_records(path)):
                if ds.limit is not None and taken >= ds.limit:
                    break
                msgs = raw.get(col)
                if not isinstance(msgs, list):
                    raise EvalError(f"{path}:{i + 1}: no `{col}` list")
                msgs = [
                    {
                        "role": ds.roles.get(str(m.get("role")), m.get("role")),
                        "content": m.get("content"),
                    }
                    for m in msgs
                    if isinstance(m, dict)
                ]
                if ds.system is not None and not any(m["role"] == "system" for m in msgs):
                    msgs.insert(0, {"role": "system", "content": ds.system})
                rows.append({"messages": msgs})
                taken += 1
    return rows


def _expand(path: str | list[str]) -> list[Path]:
    out: list[Path] = []
    for p in [path] if isinstance(path, str) else path:
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        if not matches or not all(Path(m).is_file() for m in matches):
            raise EvalError(f"dataset {p} not found (run `ladle prep` to generate it?)")
        out += [Path(m) for m in matches]
    return out


def _read_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    if path.suffix not in (".jsonl", ".ndjson"):
        raise EvalError(f"{path}: the eval reader takes .jsonl/.json until prep is wired in")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise EvalError(f"{path}:{n}: invalid JSON ({e})") from e
    return out
