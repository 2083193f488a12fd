"""Run folders: what ``output.overwrite`` may replace, and when (``ladle.train.folder``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ladle.errors import LadleError, TrainError
from ladle.recipe.schema import Recipe

torch = pytest.importorskip("torch")

from ladle.train import train  # noqa: E402


def tiny_recipe(model_dir: Path, **train_cfg: Any) -> Recipe:
    cfg = {"lr": 1e-2, "save_every": 0, "report_to": ["none"], "threads": 2, **train_cfg}
    return Recipe.model_validate(
        {
            "name": "t",
            "model": {"base": str(model_dir)},
            "data": {"datasets": [{"path": "x"}], "max_length": 64},
            "train": cfg,
            "output": {"overwrite": True},
        }
    )


def rows(n: int = 12) -> list[dict[str, Any]]:
    out = []
    for k in range(n):
        ids = [10 + (k + 3 * j) % 200 for j in range(16)]
        out.append(
            {
                "input_ids": ids,
                "labels": [-100, *ids[1:]],
                "position_ids": list(range(16)),
                "seq_lengths": [16],
            }
        )
    return out


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((".tmp-", ".old-")))


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_llama_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "project"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(TrainError, match="not a Ladle run folder"):
        train(tiny_recipe(tiny_llama_dir, max_steps=0), rows(), output_dir=target)
    assert (target / "notes.txt").read_text() == "mine"
    assert leftovers(tmp_path) == []


def test_a_file_is_not_a_run_folder(tiny_llama_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("data")
    with pytest.raises(TrainError, match="not a folder"):
        train(tiny_recipe(tiny_llama_dir, max_steps=0), rows(), output_dir=target)
    assert target.read_text() == "data"


def test_uncreatable_run_folder_is_a_train_error(tiny_llama_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("data")
    with pytest.raises(TrainError, match="cannot create run folder"):
        train(
            tiny_recipe(tiny_llama_dir, max_steps=0), rows(), output_dir=tmp_path / "file" / "run"
        )


def test_failed_new_run_leaves_no_empty_folder(tiny_llama_dir: Path, tmp_path: Path) -> None:
    bad = tiny_recipe(tmp_path / "no-such-model", max_steps=0)
    with pytest.raises(LadleError, match="does not exist"):
        train(bad, rows(), output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_old_run_replaced_only_when_the_new_one_finishes(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    first = train(tiny_recipe(tiny_llama_dir, max_steps=0), rows(), output_dir=run)
    assert first.run_dir == run.resolve()
    old_manifest = (run / "manifest.json").read_text()

    class Boom(Exception):
        pass

    def fail(info: Any) -> None:
        raise Boom

    with pytest.raises(Boom):  # the replacement fails mid-run
        train(tiny_recipe(tiny_llama_dir, max_steps=2), rows(), output_dir=run, on_step=fail)
    assert (run / "manifest.json").read_text() == old_manifest  # the old run is intact
    assert leftovers(tmp_path) == []

    second = train(tiny_recipe(tiny_llama_dir, max_steps=2), rows(), output_dir=run)
    assert second.run_dir == run.resolve() and second.output == run.resolve() / "adapter"
    assert (second.output / "adapter_config.json").is_file()
    assert json.loads((run / "manifest.json").read_text())["training"]["steps"] == 2
    assert leftovers(tmp_path) == []
