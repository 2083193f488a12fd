"""Deterministic general-skills rows with exact answers: the quickstart's regression suite.

Fine-tuning a small model on one narrow task can break what it could already do. These
rows probe skills the base model partly has (small-number arithmetic, unit conversion,
following a one-word output format), each with one exact answer, so ``contains`` and
``exact_match`` score them without a judge. Seeded, so every machine gets the same set.
"""

from __future__ import annotations

import random
from collections.abc import Callable

Row = dict[str, object]

UNITS = [  # (from, to, factor)
    ("meters", "centimeters", 100),
    ("kilograms", "grams", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("kilometers", "meters", 1000),
    ("days", "hours", 24),
]
WORDS = ["apple", "river", "window", "garden", "yellow", "planet", "silver", "forest"]


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    op = rng.choice(["+", "-", "*"])
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 10)
    if op == "-" and b > a:
        a, b = b, a
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"What is {a} {op} {b}? Reply with the number only.", str(value)


def _units(rng: random.Random) -> tuple[str, str]:
    src, dst, factor = rng.choice(UNITS)
    n = rng.randint(2, 9)
    return f"How many {dst} are in {n} {src}? Reply with the number only.", str(n * factor)


def _format(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    kind = rng.randrange(3)
    if kind == 0:
        return (
            f"Write the word '{word}' in capital letters. Reply with that word only.",
            word.upper(),
        )
    if kind == 1:
        return f"Repeat this word exactly once and nothing else: {word}", word
    return f"Spell the word '{word}' backwards. Reply with the result only.", word[::-1]


TASKS: list[Callable[[random.Random], tuple[str, str]]] = [_arithmetic, _units, _format]


def generate(rows: int, seed: int) -> list[Row]:
    """``rows`` conversations (user question, exact assistant answer), tasks in turn."""
    rng = random.Random(seed)
    out: list[Row] = []
    for i in range(rows):
        question, answer = TASKS[i % len(TASKS)](rng)
        out.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ],
                "skill": TASKS[i % len(TASKS)].__name__.strip("_"),
            }
        )
    return out
