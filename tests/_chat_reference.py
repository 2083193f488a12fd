"""TEST-ONLY reference tokenizer with ``ladle.data.ChatTokenizer``'s signature.

Implemented the slow reference way: transformers' ``apply_chat_template`` for rendering
and prefix-diff tokenization for the loss mask (render the conversation up to each
trained assistant turn with ``add_generation_prompt=True``; the tokens between that
prefix and the end of the turn are trained). It served as a stand-in before the Rust
ChatTokenizer was merged; now it is the reference ``prep`` is checked against, and it
exercises prep's generic path for tokenizers without ``encode_json``. Never imported
by the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ladle._core import IGNORE_INDEX as IGNORE


class ReferenceChatTokenizer:
    def __init__(self, tok: Any) -> None:
        self.tok = tok

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, template: str | None = None
    ) -> ReferenceChatTokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        if template is not None:
            tok.chat_template = Path(template).read_text() if Path(template).is_file() else template
        return cls(tok)

    def render(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = False, tools: Any = None
    ) -> str:
        clean = [{k: v for k, v in m.items() if k != "train"} for m in messages]
        out = self.tok.apply_chat_template(
            clean, tokenize=False, add_generation_prompt=add_generation_prompt, tools=tools
        )
        return str(out)

    def _ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def encode(
        self, messages: list[dict[str, Any]], train_on: str = "assistant", tools: Any = None
    ) -> dict[str, list[int]]:
        ids = self._ids(self.render(messages, tools=tools))
        labels = [IGNORE] * len(ids)
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
        for i, m in enumerate(messages):
            trained = train_on == "all" or (
                m["role"] == "assistant" and (train_on == "assistant" or i == last)
            )
            if not trained or m.get("train") is False:
                continue
            if train_on == "all":
                start = len(self._ids(self.render(messages[:i], tools=tools))) if i else 0
            else:
                start = len(
                    self._ids(self.render(messages[:i], add_generation_prompt=True, tools=tools))
                )
            end = len(self._ids(self.render(messages[: i + 1], tools=tools)))
            for t in range(start, min(end, len(ids))):
                labels[t] = ids[t]
        return {"input_ids": ids, "labels": labels}

    def render_batch(
        self,
        conversations: list[list[dict[str, Any]]],
        add_generation_prompt: bool = False,
        tools: Any = None,
    ) -> list[str]:
        return [self.render(c, add_generation_prompt, tools) for c in conversations]

    def encode_batch(
        self,
        conversations: list[list[dict[str, Any]]],
        train_on: str = "assistant",
        tools: Any = None,
    ) -> list[dict[str, list[int]]]:
        return [self.encode(c, train_on, tools) for c in conversations]
