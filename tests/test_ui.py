"""Console output (``ladle.ui``): what users see is rendered, never interpreted."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from ladle.ui import prep_summary


def test_prep_summary_shows_file_names_as_text() -> None:
    manifest = {
        "datasets": [
            {"path": "/d/a[/b].jsonl", "split": "train", "rows_in": 3, "rows_out": 2, "tokens": 9}
        ],
        "drops": {"bad [json]": {"count": 1, "first": ["/d/a[/b].jsonl:2"]}},
        "train": {"examples": 2, "rows": 1, "tokens": 9, "trained_tokens": 4},
        "packing": "bfd",
        "max_length": 64,
        "eval": {"rows": 0},
    }
    result = SimpleNamespace(manifest=manifest, cache_hit=False, seconds=0.5)
    console = Console(width=200, record=True)
    console.print(prep_summary(result))  # a closing tag `[/b]` would raise MarkupError
    text = console.export_text()
    assert "b].jsonl" in text and "bad [json]" in text and "a[/b].jsonl:2" in text
