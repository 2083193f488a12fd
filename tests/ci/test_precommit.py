"""The ``ladle-validate`` pre-commit hook, installed by pre-commit itself from this
repository (``pre-commit try-repo``) and run on a repository holding one good and one
bad recipe: the commit is refused, naming the bad file's line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

GOOD = """\
name: good
data:
  datasets:
    - {path: data/train.jsonl}
"""
BAD = """\
name: bad
data:
  datasets:
    - {path: data/train.jsonl}
train:
  adapter: lorax
"""


def test_hook_is_declared_without_torch() -> None:
    import yaml

    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "ladle-validate" and hook["entry"] == "ladle validate"
    # `ladle validate` must stay fast: it never imports torch.
    code = (
        "import sys; from ladle.cli import main; main(['validate', sys.argv[1]]); "
        "assert 'torch' not in sys.modules, 'validate imported torch'"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "recipes" / "quickstart.yaml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_try_repo_runs_the_hook(tmp_path: Path) -> None:
    pre_commit = shutil.which("pre-commit", path=str(BIN)) or shutil.which("pre-commit")
    assert pre_commit, "pre-commit is part of the dev extra"
    user = tmp_path / "user-repo"
    (user / "recipes").mkdir(parents=True)
    (user / "recipes" / "good.yaml").write_text(GOOD)
    (user / "recipes" / "bad.yaml").write_text(BAD)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=user, check=True)
    subprocess.run([*git, "add", "."], cwd=user, check=True)
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        # pre-commit builds Ladle from this checkout; sharing the cargo target folder of
        # `make setup` means only Ladle's own crate is compiled again.
        "CARGO_TARGET_DIR": os.environ.get("CARGO_TARGET_DIR", str(REPO / "target")),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(
        [pre_commit, "try-repo", str(REPO), "ladle-validate", "--all-files"],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "recipes/bad.yaml:6:" in out and "lorax" in out, out
    assert "✓ recipes/good.yaml" in out, out
