"""Bounded fuzzing of the recipe loader (untrusted input): random bytes, YAML-shaped
text, recipe-shaped mappings and command-line overrides. Property: ``load_recipe``
ends in a Recipe or a LadleError, never another exception, and within a time budget.

Bounded for CI: a few hundred examples per property, a few seconds each file-wide.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ladle.errors import LadleError
from ladle.recipe import Recipe, load_recipe

BUDGET_S = 5  # per input; real recipes load in milliseconds
FUZZ = settings(
    max_examples=150,
    deadline=None,  # the alarm below is the time budget (hypothesis deadlines flake on load)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,  # the same corpus every run: CI failures reproduce
)


@contextmanager
def time_budget(seconds: int) -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"load_recipe ran past {seconds}s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check(text: bytes, overrides: list[str] | None = None) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.yaml"
        path.write_bytes(text)
        with time_budget(BUDGET_S):
            try:
                result = load_recipe(path, overrides or [])
            except LadleError:
                return
        assert isinstance(result, Recipe)


# ------------------------------------------------------------------ strategies

KEYS = [
    "name", "seed", "extends", "model", "base", "dtype", "quantize", "trust_remote_code",
    "data", "datasets", "path", "format", "split", "columns", "template", "max_length",
    "train_on", "packing", "dedup", "threshold", "train", "method", "adapter", "lora", "r",
    "lr", "max_steps", "epochs", "evaluate", "metrics", "gate", "metric", "min", "output",
    "run_name", "overwrite", "dir", "<<", "x", "",
]  # fmt: skip
TOKENS = [
    "\n", "  ", ": ", "- ", "[", "]", "{", "}", ", ", "&a ", "*a", "&b ", "*b", "<<: ",
    "!!python/object/apply:os.system ", "!!binary ", "!!set ", "!tag ", "? ", "|", ">",
    "'", '"', "#", "---\n", "...\n", "%YAML 1.1\n", "\t", "\\u0000", "1e-4", "null", "~",
    "yes", "2020-01-01", ".inf", "0x1F", "é", "\ufeff", "{{ x }}", "../", "x.j2",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["sft", "dpo", "lora", "qlora", "messages", "chatml", "x.j2", "a/b", ".."]),
)
# YAML keys need not be strings: `1: x`, `null: x`, `true: x`.
keys = st.one_of(
    st.sampled_from(KEYS), st.text(max_size=8), st.integers(), st.none(), st.booleans()
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=25,
)
recipe_like = st.dictionaries(st.one_of(st.sampled_from(KEYS), keys), values, max_size=8)

PATHS = [
    "train.lr", "train.max_steps", "train.max_steps.x.y", "data.datasets.0.path",
    "data.datasets.9", "data.template", "model.base", "output.run_name", "evaluate.gate.0",
    "name", "", ".", "..", "a..b", "train.", "0", "data.datasets.-1", "train.²",
]  # fmt: skip
overrides = st.lists(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.one_of(st.sampled_from(PATHS), st.text(max_size=12)),
        st.one_of(st.sampled_from(TOKENS), st.text(max_size=12)),
    )
    | st.text(max_size=12),
    max_size=3,
)

VALID = b"name: t\ndata:\n  datasets:\n    - path: a.jsonl\n"


# ------------------------------------------------------------------ properties


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.sampled_from(KEYS)), max_size=40))
def test_yaml_shaped_text(tokens: list[str]) -> None:
    check("".join(tokens).encode("utf-8", "surrogatepass"))


@FUZZ
@given(recipe_like)
def test_recipe_shaped_mappings(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    check(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(overrides)
def test_overrides_on_a_valid_recipe(args: list[str]) -> None:
    check(VALID, args)


def test_a_valid_recipe_loads() -> None:
    """The harness itself: a valid recipe reaches the Recipe branch."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.yaml"
        path.write_bytes(VALID)
        assert isinstance(load_recipe(path), Recipe)
