"""``ladle prep``: prepare a recipe's data (or find it in the cache) and summarise it."""

from __future__ import annotations

import argparse
from pathlib import Path
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
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ladle.commands.common import console
    from ladle.data.prep import prep
    from ladle.recipe import load_recipe

    recipe = load_recipe(args.recipe, [*args.overrides, *engine_overrides(args)])
    if args.quiet:
        result = prep(recipe, force=args.force)
    else:
        with _bar(console) as report:
            result = prep(recipe, force=args.force, progress=report)
    console.print(summary_table(result))
    console.print(f"output: {result.path}", soft_wrap=True)
    return 0


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


def summary_table(result: Any) -> Any:
    """The table ``ladle prep`` prints: rows, drops, tokens, efficiency, cache, path."""
    from rich.table import Table

    m = result.manifest
    t = Table(
        title=f"ladle prep ({'cache hit' if result.cache_hit else 'built'}"
        f" in {result.seconds:.2f}s)",
        show_header=True,
    )
    t.add_column("dataset")
    t.add_column("split")
    t.add_column("rows in", justify="right")
    t.add_column("rows out", justify="right")
    t.add_column("tokens", justify="right")
    for d in m["datasets"]:
        name = ", ".join(Path(p).name for p in d["path"].split(", "))
        t.add_row(
            name,
            d["split"],
            f"{d['rows_in']:,}",
            f"{d['rows_out']:,}",
            f"{d.get('tokens', 0):,}",
        )
    for reason, info in m["drops"].items():
        where = f" (first: {info['first'][0]})" if info["first"] else ""
        t.add_row(f"[yellow]dropped: {reason}[/]{where}", "", "", f"-{info['count']:,}", "")
    tr = m["train"]
    t.add_section()
    t.add_row("train examples / rows", "", f"{tr['examples']:,}", f"{tr['rows']:,}", "")
    t.add_row("tokens (trained)", "", "", "", f"{tr['tokens']:,} ({tr['trained_tokens']:,})")
    if tr.get("efficiency") is not None:
        t.add_row(
            f"packing {m['packing']} @ {m['max_length']}",
            "",
            f"{tr['efficiency']:.2%}",
            f"+{tr['rows_over_lower_bound']} over lower bound {tr['lower_bound_rows']:,}",
            "",
        )
    t.add_row("eval rows", "", "", f"{m['eval']['rows']:,}", "")
    return t
