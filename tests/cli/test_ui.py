"""Console output (``ladle.ui``): what users see is rendered, never interpreted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from ladle.recipe import load_recipe
from ladle.ui import prep_summary


def test_prep_summary_shows_file_names_as_text(
    smollm2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ladle.data import prep

    monkeypatch.setenv("LADLE_HOME", str(tmp_path / "home"))
    folder = tmp_path / "a["
    folder.mkdir()
    data = folder / "b].jsonl"  # the path holds `[/b]`: a closing tag to rich
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    data.write_text(json.dumps(good) + "\n{broken\n" + json.dumps(good) + "\n")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        f"name: t\nmodel: {{base: {smollm2_dir}}}\n"
        "data:\n  datasets: [{path: 'a[/b].jsonl'}]\n  max_length: 64\n"
        "  dedup: {enabled: false}\n"
    )
    result = prep(load_recipe(recipe_file))
    console = Console(width=300, record=True)
    console.print(prep_summary(result))  # markup in a name would raise MarkupError
    text = console.export_text()
    assert "b].jsonl" in text
    assert "a[/b].jsonl:2" in text  # the malformed line's location, shown as written


def test_quiet_dependencies_drops_only_the_known_noise(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import warnings

    from ladle.ui import quiet_dependencies

    quiet_dependencies()
    quiet_dependencies()  # idempotent: one filter, not two
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(log.filters) == 1
    with caplog.at_level(logging.WARNING, logger=log.name):
        log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s", "x")
        log.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_dependencies()
        warnings.warn(
            "`is_gradient_checkpointing` is deprecated and will go", FutureWarning, stacklevel=1
        )
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another deprecation"]
