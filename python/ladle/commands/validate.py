"""``ladle validate`` and ``ladle schema``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ladle.commands.common import subparser
from ladle.ui import console


def register(sub: Any) -> None:
    p = subparser(
        sub,
        "validate",
        help="check recipes and report every error with its file and line",
        description="Validate recipe files against the schema. Every problem in a file is "
        "reported at once, located at its YAML line and column, with the field path and what "
        "is expected. Exit code 1 if any file has an error.",
        example="ladle validate recipes/*.yaml\nladle validate my.yaml train.lr=1e-4   # with overrides",
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="recipe files (KEY=VALUE overrides allowed after them)",
    )
    p.set_defaults(func=run_validate)

    s = subparser(
        sub,
        "schema",
        help="print the recipe JSON Schema (for editor completion)",
        description="Print the JSON Schema of recipes. Point your editor's YAML language "
        "server at it for completion and inline checks.",
        example="ladle schema > ladle.schema.json\n"
        "# then, first line of a recipe:  # yaml-language-server: $schema=ladle.schema.json",
    )
    s.set_defaults(func=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    from ladle.errors import RecipeError
    from ladle.recipe import load_recipe

    files = [f for f in args.files if "=" not in f]
    overrides = [f for f in args.files if "=" in f]
    failed = 0
    for f in files:
        try:
            recipe = load_recipe(f, overrides)
        except RecipeError as e:
            failed += 1
            print(f"✗ {f}: {e}", file=sys.stderr)
            continue
        console.print(
            f"✓ {f}: recipe {recipe.name!r} ({recipe.train.method}/{recipe.train.adapter}, "
            f"{len(recipe.data.datasets)} dataset(s))",
            markup=False,  # a file name like `a[/b].yaml` is text, not rich markup
        )
    return 1 if failed else 0


def run_schema(args: argparse.Namespace) -> int:
    from ladle.recipe import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0
