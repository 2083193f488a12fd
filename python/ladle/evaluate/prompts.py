"""Eval examples and the two contestants' prompts.

An eval row is a conversation whose LAST assistant message is the reference; the prompt
is everything before it. The baseline's few-shot examples come from TRAIN rows, drawn
deterministically by seed, and a train row whose prompt equals an eval prompt is never
drawn (a leaked answer would flatter the baseline); the check holds even when
decontamination was switched off in ``prep``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
    """Conversations of one split, through the data engine's loader (every format).

    Preference rows become their prompt plus the chosen reply, so a DPO recipe's
    baseline gets few-shot examples of the answers it should prefer.
    """
    from ladle.data import load_dataset

    rows: list[dict[str, Any]] = []
    for i, ds in enumerate(recipe.data.datasets):
        if ds.split != split:
            continue
        for row in load_dataset(ds, i).rows:
            if "messages" in row:
                rows.append({"messages": row["messages"]})
            elif "chosen" in row:
                rows.append({"messages": list(row.get("prompt") or []) + list(row["chosen"])})
    return rows
