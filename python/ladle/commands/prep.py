"""``ladle prep``: prepare a recipe's data (or find it in the cache) and summarise it."""

from __future__ import annotations

import argparse
from typing import Any

from ladle.commands.common import add_recipe_args, subparser
from ladle.data.ray_cluster import add_engine_args, engine_overrides

DESCRIPTION = """\
Load, deduplicate, render, tokenize, mask and pack the recipe's datasets into Parquet
shards under $LADLE_HOME/prep/<fingerprint>. The folder name is a fingerprint of the
input bytes, the data section, the seed, the tokenizer and template, and Ladle's
version: run it again with nothing changed and it is a cache hit in well under a
second; change one byte of input and it rebuilds. Training runs prep for you; run it
alone to check drop counts and packing efficiency first."""

EXAMPLE = """\
ladle prep recipes/quickstart.yaml
ladle prep recipe.yaml data.max_length=4096 data.packing=ffd --force"""


def register(subparsers: Any) -> None:
    p = subparser(
        subparsers,
        "prep",
        help="prepare (tokenize, mask, pack) a recipe's data into the cache",
        description=DESCRIPTION,
        example=EXAMPLE,
    )
    add_recipe_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the seconds each stage took (as recorded in manifest.json)",
    )
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ladle.data.prep import prep
    from ladle.recipe import load_recipe
    from ladle.ui import console, prep_summary

    recipe = load_recipe(args.recipe, [*args.overrides, *engine_overrides(args)])
    if args.quiet:
        result = prep(recipe, force=args.force)
    else:
        with _bar(console) as report:
            result = prep(recipe, force=args.force, progress=report)
    console.print(prep_summary(result))
    if args.verbose:
        console.print(
            stage_line(result.manifest.stages, cache_hit=result.cache_hit), soft_wrap=True
        )
    console.print(f"output: {result.path}", soft_wrap=True)
    return 0


def stage_line(stages: dict[str, float], *, cache_hit: bool) -> str:
    """``stages: load 0.31s, encode 1.20s, ...`` (the build's, also on a cache hit)."""
    if not stages:
        return "stages: not recorded"
    parts = ", ".join(f"{k} {v:.2f}s" for k, v in stages.items())
    return f"stages{' (of the build this cache hit found)' if cache_hit else ''}: {parts}"


class _bar:
    """A rich progress bar with one task per prep stage."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.progress = Progress(
            "[bold]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> Any:
        self.progress.__enter__()

        def report(stage: str, done: int, total: int) -> None:
            if stage not in self.tasks:
                self.tasks[stage] = self.progress.add_task(stage, total=total)
            self.progress.update(self.tasks[stage], completed=done, total=total)

        return report

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)
