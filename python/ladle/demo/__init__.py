"""Builtin data generators (the quickstart's support tickets)."""

from __future__ import annotations

from pathlib import Path

from ladle.recipe.schema import Recipe


def ensure_generated(recipe: Recipe) -> list[Path]:
    """Write every dataset that has a ``generate`` block and no file yet; return those.

    Generation happens once: afterwards the file is ordinary data, fingerprinted by its
    bytes like any other, so editing it by hand invalidates the prep cache as expected.
    """
    from ladle.demo import tickets

    written = []
    for ds in recipe.data.datasets:
        gen = ds.generate
        if gen is None or not isinstance(ds.path, str) or Path(ds.path).exists():
            continue
        rows = (
            tickets.generate(gen.rows, gen.seed)
            if gen.name == "tickets"
            else tickets.generate_preference(gen.rows, gen.seed)
        )
        tickets.write_jsonl(Path(ds.path), rows)
        written.append(Path(ds.path))
    return written


__all__ = ["ensure_generated"]
