"""Console output: what Ladle shows a person, kept apart from what it computes.

Library code (``ladle.pipeline``) reports through a :class:`Reporter` it is given and
never prints on its own account; the CLI passes a :class:`ConsoleReporter`, a notebook or
a service can pass its own (or :class:`SilentReporter`). The rich consoles and the prep
summary table live here so commands and the pipeline share one rendering.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


# Dependency messages that tell a Ladle user nothing they can act on, matched exactly so
# that anything else they say still shows.
_NOISE_WARNINGS = (
    # peft asks transformers 5.x for the old attribute name on every adapter load.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)
_NOISE_LOGS = (
    # bitsandbytes tries to fetch an optional CPU kernel from the Hugging Face Hub (which
    # Ladle never reaches at run time) and falls back to its own; the fallback is used.
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
)


def quiet_dependencies() -> None:
    """Silence the known, harmless messages of dependencies (see ``_NOISE_*``)."""
    for category, message in _NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefix in _NOISE_LOGS:
        logger = logging.getLogger(name)
        if not any(getattr(f, "ladle_prefix", None) == prefix for f in logger.filters):
            logger.addFilter(_DropPrefix(prefix))


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.ladle_prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.ladle_prefix)


def is_tty() -> bool:
    return sys.stdout.isatty()


class Reporter(Protocol):
    """What a long-running library call tells its caller while it works."""

    def stage(self, message: str) -> None:
        """A step started or finished (one line)."""

    def prep_done(self, result: Any) -> None:
        """Data preparation finished (a ``ladle.data.PrepResult``)."""

    def eval_report(self, markdown: str) -> None:
        """The before/after report, as Markdown."""


class ConsoleReporter:
    """Steps on stderr as ``PREFIX: message``; tables and the report on stdout."""

    def __init__(self, prefix: str = "ladle run") -> None:
        self.prefix = prefix

    def stage(self, message: str) -> None:
        print(f"{self.prefix}: {message}", file=sys.stderr, flush=True)

    def prep_done(self, result: Any) -> None:
        console.print(prep_summary(result))

    def eval_report(self, markdown: str) -> None:
        print(markdown, flush=True)


class SilentReporter:
    """Reports nothing (library use where the caller reads the returned values)."""

    def stage(self, message: str) -> None:
        pass

    def prep_done(self, result: Any) -> None:
        pass

    def eval_report(self, markdown: str) -> None:
        pass


def prep_summary(result: Any) -> Any:
    """The table ``ladle prep`` and ``ladle run`` print: rows, drops, tokens, efficiency."""
    from rich.markup import escape
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
    for d in m.datasets:
        # File names are text: a name holding `[/x]` must not be read as rich markup.
        name = escape(", ".join(Path(p).name for p in d.path.split(", ")))
        t.add_row(name, d.split, f"{d.rows_in:,}", f"{d.rows_out:,}", f"{d.tokens:,}")
    for reason, info in m.drops.items():
        where = f" (first: {escape(str(info.first[0]))})" if info.first else ""
        t.add_row(f"[yellow]dropped: {escape(reason)}[/]{where}", "", "", f"-{info.count:,}", "")
    tr = m.train
    t.add_section()
    t.add_row("train examples / rows", "", f"{tr.examples:,}", f"{tr.rows:,}", "")
    t.add_row("tokens (trained)", "", "", "", f"{tr.tokens:,} ({tr.trained_tokens:,})")
    if tr.efficiency is not None:
        t.add_row(
            f"packing {m.packing} @ {m.max_length}",
            "",
            f"{tr.efficiency:.2%}",
            f"+{tr.rows_over_lower_bound} over lower bound {tr.lower_bound_rows:,}",
            "",
        )
    t.add_row("eval rows", "", "", f"{m.eval.rows:,}", "")
    return t
