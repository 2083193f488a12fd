"""Builtin data generators (the quickstart's support tickets)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ladle.recipe.schema import Recipe


def ensure_generated(recipe: Recipe) -> list[Path]:
    """Write every dataset that has a ``generate`` block and no file yet; return those.

    Generation happens once: afterwards the file is ordinary data, fingerprinted by its
    bytes like any other, so editing it by hand invalidates the prep cache as expected.
    """
    from ladle.demo import skills, tickets

    written = []
    suites = [s.dataset for s in recipe.evaluate.suites]
    for ds in [*recipe.data.datasets, *suites]:
        gen = ds.generate
        if gen is None or not isinstance(ds.path, str) or Path(ds.path).exists():
            continue
        rows: Iterable[dict[str, object]]
        if gen.name == "general-skills":
            rows = skills.generate(gen.rows, gen.seed)
        elif gen.name == "tickets":
            rows = tickets.generate(gen.rows, gen.seed)
        else:
            rows = tickets.generate_preference(gen.rows, gen.seed)
        tickets.write_jsonl(Path(ds.path), rows)
        written.append(Path(ds.path))
    return written


__all__ = ["ensure_generated"]
