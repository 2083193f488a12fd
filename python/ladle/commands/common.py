"""Helpers shared by subcommands: recipe arguments and the subparser layout."""

from __future__ import annotations

import argparse
from typing import Any

from ladle.ui import console, err_console, is_tty

# Console output lives in ladle.ui; re-exported for the commands that import it from here.
__all__ = ["add_recipe_args", "console", "err_console", "is_tty", "subparser"]


class IntermixedParser(argparse.ArgumentParser):
    """Lets KEY=VALUE overrides follow options (``RECIPE --output DIR k=v``).

    Plain argparse matches all positionals in the first run of them, so an override after
    an option would be "unrecognized"; intermixed parsing collects them wherever
    they stand. The subparser action calls ``parse_known_args``, so that is redirected
    (the guard stops the recursion: the intermixed parser calls it internally)."""

    _inside = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.__class__ = IntermixedParser  # overrides may follow options: `RECIPE --output D k=v`
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
        epilog=("examples:" if "\n" in example.strip() else "example:")
        + "\n  "
        + example.strip().replace("\n", "\n  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # SUPPRESS: without the flag here the namespace keeps the top-level `ladle --debug`
    # (a default of False would overwrite it).
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks"
    )
    return p
