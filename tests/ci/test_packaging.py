"""`pip install ladle` without Rust: the abi3 wheel maturin builds installs into a fresh
virtualenv whose PATH has no cargo, and the slim install (no torch) validates recipes
and preps the quickstart data. The sdist carries everything a source build needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def _maturin() -> str:
    path = shutil.which("maturin", path=str(BIN)) or shutil.which("maturin")
    assert path, "maturin is part of the dev extra"
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # Reuses `make setup`'s target/ folder, so only the final link is new work.
    r = subprocess.run(
        [_maturin(), "build", "--release", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("ladle-*.whl")
    return whl


def test_wheel_is_abi3_manylinux_with_the_extension(wheel: Path) -> None:
    name = wheel.name
    assert "-cp311-abi3-" in name, name
    if sys.platform == "linux":
        assert "manylinux" in name, name
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("ladle/_core") and n.endswith((".so", ".pyd")) for n in names)
    assert {"ladle/cli.py", "ladle/py.typed", "ladle/_core.pyi"} <= set(names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry).decode().replace(" ", "")
    assert "ladle=ladle.cli:main" in scripts


@pytest.fixture(scope="module")
def slim_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{SYSTEM_PATH}"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


def _slim(venv: Path, *args: str, home: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "CARGO"))
    }
    env.update(PATH=f"{venv / 'bin'}:{SYSTEM_PATH}", LADLE_HOME=str(home))
    return subprocess.run(
        [str(venv / "bin" / "ladle"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.slow
def test_wheel_works_without_rust_or_torch(
    slim_venv: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    env = {"PATH": f"{slim_venv / 'bin'}:{SYSTEM_PATH}"}
    assert shutil.which("cargo", path=env["PATH"]) is None
    assert shutil.which("rustc", path=env["PATH"]) is None
    no_torch = subprocess.run([str(slim_venv / "bin" / "python"), "-c", "import torch"], env=env)
    assert no_torch.returncode != 0  # the slim install really is slim

    home = tmp_path / "home"
    r = _slim(slim_venv, "--help", home=home)
    assert r.returncode == 0 and "examples:" in r.stdout

    recipes = sorted(str(p) for p in (REPO / "recipes").glob("*.yaml"))
    r = _slim(slim_venv, "validate", *recipes, home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("✓") == len(recipes)

    # The quickstart's own data (generated on first use) through the installed Rust core;
    # the tokenizer comes from a local model folder, since the slim install has no torch
    # to convert the builtin GGUF.
    r = _slim(
        slim_venv,
        "prep",
        str(REPO / "recipes" / "quickstart.yaml"),
        f"model.base={tiny_llama_dir}",
        home=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    entries = [p for p in (home / "prep").iterdir() if p.is_dir()]
    assert entries and any((e / "manifest.json").is_file() for e in entries)


def test_sdist_has_what_a_source_build_needs(tmp_path: Path) -> None:
    r = subprocess.run(
        [_maturin(), "sdist", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sdist,) = tmp_path.glob("ladle-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"Cargo.toml", "Cargo.lock", "pyproject.toml", "rust/src/lib.rs"} <= names
    assert {"python/ladle/cli.py", "python/ladle/_core.pyi", "README.md"} <= names
    # The patched minijinja that Cargo.toml's [patch.crates-io] points at, with its license.
    vendored = "rust/vendor/minijinja/"
    assert {vendored + f for f in ("Cargo.toml", "LICENSE", "PATCHES.md", "src/lib.rs")} <= names
    assert vendored + "src/value/guard.rs" in names
