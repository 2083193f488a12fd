"""The ``judge`` metric: a model (local or served) grades free-text answers.

Two modes:

- ``score``: the judge reads the question, the reference and one answer and replies with
  an integer 1..scale; it becomes ``(score - 1) / (scale - 1)`` so it sits on the 0..1
  axis of the other metrics. A reply without a valid integer is NaN and counted.
- ``pairwise``: the judge sees the baseline's and the candidate's answers and names the
  better one, twice, with the order swapped. Judges favour a position; a verdict that
  flips with the order is recorded as a tie (0.5), and the share of pairs whose two
  verdicts agree is the **agreement rate** the report states. The per-example value is
  1 (candidate wins both), 0 (baseline wins both) or 0.5, so the mean is the
  candidate's win rate and the paired bootstrap applies as to any metric.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ladle.evaluate.prompts import Example
from ladle.recipe.schema import GenerationSpec, JudgeSpec, MetricSpec

Messages = list[dict[str, str]]

_INT = re.compile(r"(?<![\d.])(\d+)(?!\d|\.\d)")  # an integer, not part of 4.5
_CHOICE = re.compile(r"\b(A|B)\b")


def _question(example: Example) -> str:
    return "\n".join(m["content"] for m in example.prompt if m["role"] != "system")


def score_prompt(spec: JudgeSpec, example: Example, answer: str) -> Messages:
    return [
        {"role": "system", "content": spec.rubric},
        {
            "role": "user",
            "content": f"Question:\n{_question(example)}\n\nReference answer:\n{example.reference}"
            f"\n\nAnswer to grade:\n{answer}\n\nReply with one integer from 1 to {spec.scale}.",
        },
    ]


def pair_prompt(spec: JudgeSpec, example: Example, first: str, second: str) -> Messages:
    return [
        {"role": "system", "content": spec.rubric},
        {
            "role": "user",
            "content": f"Question:\n{_question(example)}\n\nReference answer:\n{example.reference}"
            f"\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\n"
            "Which answer is better? Reply with A or B only.",
        },
    ]


def parse_score(text: str, scale: int) -> float:
    """The first integer in 1..scale, scaled to 0..1; NaN when there is none."""
    for m in _INT.finditer(text):
        v = int(m.group(1))
        if 1 <= v <= scale:
            return (v - 1) / (scale - 1)
    return math.nan


def parse_choice(text: str) -> str | None:
    m = _CHOICE.search(text.strip())
    return m.group(1) if m else None


def pair_values(first: Sequence[str], swapped: Sequence[str]) -> tuple[np.ndarray, float, int]:
    """Per-example candidate score from the two orders (candidate is B in ``first``, A in
    ``swapped``): 1 win, 0 loss, 0.5 tie or disagreement; the agreement rate over pairs
    with two readable verdicts; and the count of unreadable replies."""
    values, agree, readable, unread = [], 0, 0, 0
    for x, y in zip(first, swapped, strict=True):
        a, b = parse_choice(x), parse_choice(y)
        unread += (a is None) + (b is None)
        cand_first = None if a is None else a == "B"
        cand_second = None if b is None else b == "A"
        if cand_first is not None and cand_second is not None:
            readable += 1
            if cand_first == cand_second:
                agree += 1
                values.append(1.0 if cand_first else 0.0)
                continue
        values.append(0.5)
    return np.asarray(values), (agree / readable if readable else math.nan), unread


Ask = Callable[[list[Messages]], list[str]]


@dataclass
class Judge:
    """A judge model ready to answer; the local model is loaded once, on first use."""

    spec: JudgeSpec
    name: str
    ask_fn: Ask
    info: dict[str, Any] = field(default_factory=dict)

    def ask(self, conversations: list[Messages]) -> list[str]:
        return self.ask_fn(conversations) if conversations else []


def make_judge(
    spec: JudgeSpec, base_model: str, *, seed: int, use_cache: bool, dtype: str = "auto"
) -> Judge:
    gen = GenerationSpec(max_new_tokens=spec.max_new_tokens, batch_size=16)
    if spec.endpoint is not None:
        from ladle.evaluate.endpoint import query

        endpoint = spec.endpoint

        def ask_endpoint(convs: list[Messages]) -> list[str]:
            run = query(endpoint, convs, gen, seed=seed, use_cache=use_cache)
            return [o[0] if o else "" for o in run.generation.outputs]

        name = f"{endpoint.model or 'the served model'} @ {endpoint.url}"
        return Judge(spec, name, ask_endpoint)

    from ladle.device import pick_device
    from ladle.evaluate.generate import (
        ModelSource,
        generate,
        load_model,
        prompt_renderer,
    )
    from ladle.models import resolve_model

    ref = spec.model or base_model
    src = ModelSource(resolve_model(ref))
    loaded: dict[str, Any] = {}

    def ask_model(convs: list[Messages]) -> list[str]:
        if not loaded:
            model, tok = load_model(src, dtype=dtype, device=pick_device())
            loaded.update(model=model, tok=tok, render=prompt_renderer(Path(src.model_dir)))
        prompts = [loaded["render"](c) for c in convs]
        out = generate(loaded["model"], loaded["tok"], prompts, gen, seed=seed)
        return [o[0] for o in out.outputs]

    return Judge(spec, ref, ask_model)


def judge_keys(metrics: Sequence[MetricSpec]) -> list[MetricSpec]:
    return [m for m in metrics if m.name == "judge" and m.judge is not None]


def score_values(judge: Judge, examples: Sequence[Example], outputs: list[list[str]]) -> np.ndarray:
    """Score-mode values per example (first sample), NaN where the reply was unreadable."""
    convs = [
        score_prompt(judge.spec, e, o[0] if o else "")
        for e, o in zip(examples, outputs, strict=True)
    ]
    replies = judge.ask(convs)
    return np.asarray([parse_score(r, judge.spec.scale) for r in replies], dtype=np.float64)


def pairwise_values(
    judge: Judge,
    examples: Sequence[Example],
    base_out: list[list[str]],
    cand_out: list[list[str]],
) -> tuple[np.ndarray, float, int]:
    b = [o[0] if o else "" for o in base_out]
    c = [o[0] if o else "" for o in cand_out]
    first = judge.ask(
        [pair_prompt(judge.spec, e, x, y) for e, x, y in zip(examples, b, c, strict=True)]
    )
    swapped = judge.ask(
        [pair_prompt(judge.spec, e, y, x) for e, x, y in zip(examples, b, c, strict=True)]
    )
    return pair_values(first, swapped)
