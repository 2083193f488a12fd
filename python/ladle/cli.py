"""The ``ladle`` command.

Each subcommand lives in ``ladle.commands.<name>`` and exposes ``register(sub)``; this
file only assembles them and owns the error policy: a :class:`LadleError` (a user
mistake or bad input) prints one line and exits 2 (1 is reserved for "ran, and the
answer is no": a failed validation or gate), and so does an ``OSError`` (a path the file
system refuses); anything else is a bug and keeps its traceback. ``--debug`` shows
tracebacks for everything.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ladle import __version__
from ladle.errors import LadleError
from ladle.ui import quiet_dependencies

# Order = order in `ladle --help`. Command modules import torch and friends lazily, in
# the function that runs the command, so `ladle --help` and `ladle validate` stay fast.
COMMANDS = (
    "validate",
    "schema",
    "models",
    "prep",
    "render",
    "dedup",
    "quantize",
    "train",
    "export",
    "eval",
    "compare",
    "run",
)

EPILOG = """\
examples:
  ladle run recipes/quickstart.yaml               # the whole pipeline, with its gate
  ladle validate recipes/*.yaml                   # check recipes, every error at once
  ladle run recipes/quickstart.yaml train.lr=1e-4 data.max_length=512
  ladle <command> --help                          # each command teaches with an example

exit codes: 0 ok, 1 the answer is no (invalid recipe, failed gate), 2 usage or input error
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ladle",
        description="Declarative fine-tuning with a before/after gate against the prompted "
        "base model. Recipes (YAML) declare data, training and evaluation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ladle {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in dict.fromkeys(_module_for(name) for name in COMMANDS):
        importlib.import_module(f"ladle.commands.{module_name}").register(sub)
    return parser


def _module_for(name: str) -> str:
    # Small commands share a module with their sibling.
    return {"schema": "validate", "compare": "eval", "export": "train"}.get(name, name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("LADLE_DEBUG") == "1"
    if not debug:
        quiet_dependencies()
    try:
        code = args.func(args)
    except LadleError as e:
        if debug:
            raise
        print(f"ladle {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # A path the user gave that the file system refuses (too long a name, no
        # permission, a full disk): input or environment, not a bug in Ladle.
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"ladle {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ladle {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
