"""Eval examples and the two contestants' prompts.

An eval row is a conversation whose LAST assistant message is the reference; the prompt
is everything before it, messages kept whole (``tool_calls``, ``name`` ...) together with
the row's conversation-level fields a chat template reads (``tools``, ``documents``), so
both contestants see what training rendered. The baseline's few-shot examples come from
TRAIN rows, drawn deterministically by seed from a pool that is deduplicated and
decontaminated against the eval prompts with the recipe's near-duplicate rule
(``few_shot_pool``), and a train row whose prompt equals an eval prompt is never drawn
(a leaked answer would flatter the baseline); both hold even when decontamination was
switched off in ``prep``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ladle.errors import EvalError
from ladle.recipe.schema import PromptSpec, Recipe

Messages = list[dict[str, Any]]

TEMPLATE_FIELDS = ("tools", "documents")
"""Conversation-level fields that chat templates read next to ``messages``."""


@dataclass(frozen=True)
class Example:
    """One eval (or few-shot) example: the prompt turns and the reference answer."""

    prompt: Messages
    reference: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """The row's ``TEMPLATE_FIELDS`` (tools, documents), rendered with the prompt."""
    id: str | None = None
    """Where the row came from (``file:line``), for the report's few-shot record."""


def split_row(row: dict[str, Any], where: str = "row") -> Example:
    """Split ``{"messages": [...], "tools": ...}`` at its last assistant message."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise EvalError(f"{where}: expected a non-empty `messages` list")
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise EvalError(f"{where}: every message needs a `role`")
        # A tool-calling assistant turn may carry tool_calls and no text.
        if not (isinstance(content, str) or (content is None and m.get("tool_calls"))):
            raise EvalError(f"{where}: a message needs string `content` (or `tool_calls`)")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    if last < 0:
        raise EvalError(f"{where}: no assistant message to use as the reference")
    if not isinstance(messages[last]["content"], str):
        raise EvalError(f"{where}: the last assistant message (the reference) has no text")
    prompt = [dict(m) for m in messages[:last]]
    if not any(m["role"] != "system" for m in prompt):
        raise EvalError(f"{where}: nothing before the reference answer but a system prompt")
    extra = {k: row[k] for k in TEMPLATE_FIELDS if row.get(k) is not None}
    rid = row.get("id")
    return Example(prompt, messages[last]["content"], extra, str(rid) if rid else None)


def prompt_key(messages: Messages) -> str:
    """Identity of a prompt for leakage checks: its non-system turns, whitespace-trimmed."""
    return json.dumps(
        [(m["role"], (m.get("content") or "").strip()) for m in messages if m["role"] != "system"]
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


def build_conversation(
    example: Example, spec: PromptSpec, shots: Sequence[Example]
) -> dict[str, Any]:
    """What a contestant's template renders: ``build_prompt``'s messages plus the row's
    own tools/documents (a shot's tools are not carried: the row's are the ones that
    hold for its question)."""
    return {"messages": build_prompt(example, spec, shots), **example.extra}


# ----------------------------------------------------------------------- reading rows


def read_split(recipe: Recipe, split: str) -> list[dict[str, Any]]:
    """Conversations of one split, through the data engine's loader (every format), each
    with its ``id`` (``file:line``).

    Preference rows become their prompt plus the chosen reply (or a completion labelled
    desirable), so a preference recipe's baseline gets few-shot examples of the answers
    it should prefer.
    """
    from ladle.data import load_dataset
    from ladle.data.load import good_reply, is_preference_row

    rows: list[dict[str, Any]] = []
    for i, ds in enumerate(recipe.data.datasets):
        if ds.split != split:
            continue
        loaded = load_dataset(ds, i)
        for row, loc in zip(loaded.rows, loaded.locations, strict=True):
            if "messages" in row:
                conv = {"messages": row["messages"]}
            elif is_preference_row(row) and (good := good_reply(row)) is not None:
                conv = {"messages": list(row.get("prompt") or []) + list(good)}
            else:
                continue  # text, or a completion labelled undesirable: no reference
            conv.update({k: row[k] for k in TEMPLATE_FIELDS if row.get(k) is not None})
            rows.append({**conv, "id": loc})
    return rows


def few_shot_pool(
    recipe: Recipe, eval_rows: Sequence[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train conversations the baseline's shots may come from, and what was removed.

    The train split deduplicated and decontaminated against the eval prompts with the
    recipe's own near-duplicate rule (``data.dedup``: exact + MinHash at its threshold,
    n-gram size and permutations), as ``prep`` does before training. Decontamination is
    on here even when the recipe switches it off for training: a shot that near-copies
    an eval prompt hands the baseline its answer.
    """
    from ladle.dedup import dedup_rows

    rows = read_split(recipe, "train")
    if not rows:
        return [], {"train_rows": 0, "kept": 0}
    spec = recipe.data.dedup.model_copy(
        update={"enabled": True, "exact": True, "near": True, "decontaminate": True}
    )
    against = [{"messages": r["messages"]} for r in eval_rows if r.get("messages")]
    res = dedup_rows(rows, spec, against_rows=against or None, locations=[r["id"] for r in rows])
    info = {
        "train_rows": len(rows),
        "kept": int(res.keep.sum()),
        "eval_copies_removed": len(res.contaminated),
        "rule": {k: res.report["config"][k] for k in ("threshold", "ngram", "num_perm", "fields")},
    }
    return [dict(rows[i]) for i in res.kept_indices], info
