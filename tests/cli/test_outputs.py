"""What `ladle quantize` and `ladle export` may overwrite, and bad quantize inputs.

An output folder is replaced only with --overwrite and only when this command wrote it
(its marker file), so a typo in OUT can never delete a model or a home folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ladle.cli import main

pytest.importorskip("torch")


def user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "precious.txt").write_text("mine")
    return path


def test_quantize_overwrite_replaces_only_its_own_output(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = str(tiny_llama_dir)
    mine = user_folder(tmp_path / "mine")
    assert main(["quantize", src, str(mine), "--overwrite"]) == 2
    assert "not written by ladle quantize" in capsys.readouterr().err
    assert (mine / "precious.txt").read_text() == "mine"

    out = tmp_path / "q"
    assert main(["quantize", src, str(out)]) == 0
    assert (out / "ladle_quantized.json").is_file()
    assert main(["quantize", src, str(out)]) == 2  # exists, no --overwrite
    assert main(["quantize", src, str(out), "--no-double-quant", "--overwrite"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["bnb_4bit_use_double_quant"] is False


BAD_SOURCES = {
    "config-not-json": ("config.json", b"{not json", "not a readable JSON file"),
    "config-not-utf8": ("config.json", b'{"a": "\xff"}', "not a readable JSON file"),
    "config-a-list": ("config.json", b"[1, 2]", "expected a JSON object"),
    "config-unknown-type": ("config.json", b'{"model_type": "nope-9"}', "config.json"),
    "config-bad-values": (
        "config.json",
        b'{"model_type": "llama", "hidden_size": "wide", "num_attention_heads": 4}',
        "",
    ),
    "index-not-json": ("model.safetensors.index.json", b"{", "not a readable JSON file"),
    "index-no-map": ("model.safetensors.index.json", b'{"metadata": {}}', "weight_map"),
    "index-escapes": (
        "model.safetensors.index.json",
        b'{"weight_map": {"w": "../../etc/passwd"}}',
        "is not a file name",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_quantize_bad_source_files_are_one_line_errors(
    tiny_llama_dir: Path, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, content, expected = BAD_SOURCES[case]
    src = tmp_path / "src"
    src.mkdir()
    for f in tiny_llama_dir.iterdir():
        (src / f.name).symlink_to(f)
    (src / name).unlink(missing_ok=True)
    (src / name).write_bytes(content)
    # In process: anything but a LadleError propagates out of main() and fails the test.
    assert main(["quantize", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ladle quantize: error: ") and expected in err
    assert err.count("\n") == 1, err  # one line
    assert not (tmp_path / "out").exists()


def test_export_overwrite_replaces_only_its_own_output(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ladle.recipe.schema import Recipe
    from ladle.train import train

    recipe = Recipe.model_validate(
        {
            "name": "t",
            "model": {"base": str(tiny_llama_dir)},
            "data": {"datasets": [{"path": "x"}], "max_length": 64},
            "train": {"max_steps": 0, "report_to": ["none"], "threads": 2},
        }
    )
    ids = list(range(10, 30))
    row = {"input_ids": ids, "labels": ids, "position_ids": list(range(20)), "seq_lengths": [20]}
    run = train(recipe, [row], output_dir=tmp_path / "run").run_dir

    mine = user_folder(tmp_path / "mine")
    assert main(["export", str(run), str(mine), "--overwrite"]) == 2
    assert "not written by ladle export" in capsys.readouterr().err
    assert (mine / "precious.txt").read_text() == "mine"

    assert main(["export", str(run), str(tmp_path / "mine" / "precious.txt" / "x")]) == 2
    assert "writing" in capsys.readouterr().err  # a disk error is a one-line error too

    out = tmp_path / "export"
    assert main(["export", str(run), str(out)]) == 0
    assert (out / "ladle_export.json").is_file() and (out / "adapter_config.json").is_file()
    assert main(["export", str(run), "--merge", str(out)]) == 2  # exists, no --overwrite
    assert main(["export", str(run), "--merge", str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()

    (run / "adapter" / "adapter_config.json").write_text("{not json")  # a damaged run
    assert main(["export", str(run), "--merge", str(tmp_path / "broken")]) == 2
    assert "cannot load the adapter" in capsys.readouterr().err
    assert not (tmp_path / "broken").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_outputs_get_the_umask_mode_not_tempfiles_private_one(
    tmp_path: Path, umask: int
) -> None:
    """A file or folder written through a temporary one is as readable as a plain
    ``open``/``mkdir`` would make it (tempfile's are 0600/0700)."""
    import os

    from ladle.paths import atomic_dir, atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "run.json", "{}")
        with atomic_dir(tmp_path / "entry") as d:
            (d / "x").write_text("y")
        plain = tmp_path / "plain.txt"
        plain.write_text("")
        (tmp_path / "plain_dir").mkdir()
    finally:
        os.umask(old)
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "entry").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "entry").stat().st_mode == (tmp_path / "plain_dir").stat().st_mode


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_refused_output_is_named_not_its_temporary_file(tmp_path: Path) -> None:
    from ladle.paths import atomic_dir, atomic_write_text

    # /proc refuses new files: the error must name what the user asked to write.
    with pytest.raises(OSError) as e:
        atomic_write_text(Path("/proc/ladle-out.json"), "{}")
    assert e.value.filename == "/proc/ladle-out.json"
    with pytest.raises(OSError) as e, atomic_dir(Path("/proc/ladle-out")):
        pass
    assert e.value.filename == "/proc/ladle-out"
