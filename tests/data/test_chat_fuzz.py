"""Bounded fuzzing of the chat encoder from Python (issue #11, "Fuzzing").

Random conversations (odd roles, unicode, empty and long content, null and list content,
tool calls, generation sentinels, stray keys) go through the real SmolLM2 tokenizer
under real templates. Property: every row ends in an encoded example whose labels are
the ids or -100, or in a Ladle error; never another exception, a crash or a hang. The
Rust side fuzzes random templates (rust/src/chat/fuzz.rs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ladle._core import IGNORE_INDEX
from ladle.data import ChatTokenizer
from ladle.errors import LadleError

ROLES = st.sampled_from(["user", "assistant", "assistant", "system", "tool", "", "ρόλος 🤖"])
CONTENT = st.one_of(
    st.text(max_size=40),
    st.just(""),
    st.integers(1, 2000).map(lambda n: "long " * n),
    st.none(),
    st.just([{"type": "text", "text": "part"}]),
    st.just("x\U000f0002y"),
    st.just("<|im_start|>assistant\n<|im_end|>"),
)
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES, "content": CONTENT},
    optional={
        "train": st.booleans(),
        "tool_calls": st.just(
            [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]
        ),
        "name": st.text(max_size=5),
    },
)
CONVERSATION = st.lists(MESSAGE, max_size=6)


@pytest.fixture(scope="module")
def tokenizers(smollm2_dir: Path, shared_dir: Path) -> list[ChatTokenizer]:
    special = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
    refs = shared_dir / "reference" / "chat_templates"
    toks = [ChatTokenizer.from_pretrained(smollm2_dir)]
    toks += [
        ChatTokenizer(smollm2_dir / "tokenizer.json", (refs / f"{n}.jinja").read_text(), special)
        for n in ("gemma-it", "qwen2.5-instruct", "vicuna")
    ]
    toks.append(ChatTokenizer.from_pretrained(smollm2_dir, template="chatml-generation"))
    return toks


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(convs=st.lists(CONVERSATION, min_size=1, max_size=4), tools=st.booleans())
def test_random_conversations_encode_or_fail_cleanly(
    tokenizers: list[ChatTokenizer], convs: list[list[dict[str, Any]]], tools: bool
) -> None:
    rows = [
        json.dumps({"messages": c, "tools": [{"type": "function", "function": {"name": "f"}}]})
        if tools
        else json.dumps(c)
        for c in convs
    ]
    for tok in tokenizers:
        for train_on in ("assistant", "last", "all"):
            batch = tok.encode_json(rows, train_on=train_on)  # type: ignore[arg-type]
            assert len(batch) == len(rows) == len(batch.mask_methods)
            for i, err in enumerate(batch.errors):
                if err is not None:
                    assert isinstance(err, LadleError), repr(err)
                    continue
                row = batch.row(i)
                assert len(row["input_ids"]) == len(row["labels"])
                assert all(
                    lab in (IGNORE_INDEX, t)
                    for lab, t in zip(row["labels"], row["input_ids"], strict=True)
                )
