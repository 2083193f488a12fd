"""Helpers shared by subcommands: recipe arguments and console output."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override recipe fields by dotted path, e.g. train.lr=1e-4 data.max_length=512",
    )


def subparser(
    sub: Any, name: str, help: str, description: str, example: str
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog="example:\n  " + example.strip().replace("\n", "\n  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def is_tty() -> bool:
    return sys.stdout.isatty()
