"""``ladle run``: the whole recipe, data -> model -> train -> evaluate -> report."""

from __future__ import annotations

import argparse
from typing import Any

from ladle.commands.common import add_recipe_args, subparser
from ladle.data.ray_cluster import add_engine_args, engine_overrides


def register(sub: Any) -> None:
    p = subparser(
        sub,
        "run",
        help="run a whole recipe: prep, train, evaluate against the prompted baseline, gate",
        description="Run every stage of a recipe in order: generate builtin data if needed, "
        "dedup and decontaminate, prep and pack (cached), pre-quantize (qlora), train, then "
        "evaluate the fine-tuned model against the prompted base model and apply the gate. "
        "Exit code 1 when the gate fails, 3 when a `significant` condition cannot be "
        "decided (insufficient evidence), 2 on usage or input errors.",
        example="ladle run recipes/quickstart.yaml\n"
        "ladle run recipes/quickstart.yaml train.max_steps=0   # no training: the gate fails\n"
        "ladle run recipes/quickstart.yaml --output runs/try1 train.lr=5e-4",
    )
    add_recipe_args(p)
    p.add_argument("--output", metavar="DIR", help="run folder (default: output.dir/<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ladle.pipeline import run_recipe
    from ladle.ui import ConsoleReporter

    overrides = [*args.overrides, *engine_overrides(args)]
    result = run_recipe(
        args.recipe,
        overrides,
        output=args.output,
        resume=args.resume,
        reporter=ConsoleReporter("ladle run"),
    )
    return result.exit_code
