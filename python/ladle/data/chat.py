"""Chat rendering, tokenization and loss masks, as a library.

``ChatTokenizer`` renders conversations with the model's chat template exactly as
transformers' ``apply_chat_template`` would (minijinja in Rust, byte-for-byte tested),
tokenizes with the model's ``tokenizer.json`` (same ids as the Python tokenizer) and
computes per-token labels, all in parallel with the GIL released. ``ladle prep`` uses the
batch forms; notebooks and pipelines can use it directly.

A conversation is a list of OpenAI-style messages (``{"role", "content"}``, optional
``"train": False`` to keep a message out of the loss) or a dict with ``"messages"`` and
optional ``"tools"``/``"documents"``.

Loss masks (``train_on``): ``assistant`` trains every assistant turn, ``last`` the final
one, ``all`` every token; a message with ``train: False`` is never trained. A turn's
span runs from the end of the generation prompt to the end of the turn, so the
end-of-turn token (``<|im_end|>``) is trained. Templates with ``{% generation %}``
markers use the marked spans instead (transformers' ``return_assistant_tokens_mask``).
Templates whose generation prompt is not a prefix of the conversation (indented ones
such as gemma-it or vicuna) have each reply located inside its own turn: from where
its content is printed to the end of the turn. ``EncodedBatch.mask_methods`` says which
rule placed each row (``generation``, ``prefix``, ``turn``, or ``none`` when nothing
was located, as with ``train_on: all``); a row no rule can place is a TemplateError.
A token is trained when it overlaps a trained span: a token that straddles the header
and the reply (SmolLM2 merges the header's newline with a reply's leading spaces) is
trained, since it carries reply text. Rows with nothing to train report
``n_trained == 0`` so a pipeline can drop them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ladle._core import ChatEncoder
from ladle.errors import DataError, TemplateError, TokenizerError
from ladle.recipe.schema import template_kind

TrainOn = Literal["assistant", "last", "all"]
MASK_METHODS = ("generation", "prefix", "turn")
"""How a row's mask can be located, in the order they are tried (see the module doc)."""
Conversation = Sequence[Mapping[str, Any]] | Mapping[str, Any]

# The variables transformers passes to a template from the tokenizer's special tokens
# (``PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES``).
SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)

BUILTIN_TEMPLATES: dict[str, str] = {
    # Plain ChatML, as Qwen/SmolLM2 use it, without a default system prompt.
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    # ChatML with {% generation %} markers around each reply and its <|im_end|>, the
    # form transformers' return_assistant_tokens_mask reads.
    "chatml-generation": (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}"
        "{{ '<|im_start|>assistant\\n' }}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{{ '\\n' }}"
        "{% else %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
}
"""Named templates a recipe can pick with ``template: NAME``."""


@dataclass
class EncodedBatch:
    """A batch in the flat layout pyarrow's ``ListArray.from_arrays(offsets, values)``
    takes: row ``i`` is ``input_ids[offsets[i]:offsets[i+1]]``.

    ``errors[i]`` holds the exception of a row that failed (its slice is empty), so a
    pipeline can count and skip bad rows instead of losing the batch.
    """

    input_ids: np.ndarray  # int32, flat
    labels: np.ndarray  # int32, flat, IGNORE_INDEX where not trained
    offsets: np.ndarray  # int64, len(rows) + 1
    n_trained: np.ndarray  # int64, trained tokens per row (0: nothing to learn)
    errors: list[BaseException | None]
    mask_methods: list[str]  # how each row's mask was located (see the module doc)

    def __len__(self) -> int:
        return len(self.n_trained)

    def mask_method(self) -> str:
        """The rules that placed the masks of the rows that encoded, e.g. ``prefix`` or
        ``prefix+turn`` (``none`` when no row located a reply): what a prep manifest
        records per dataset."""
        return mask_method_summary(
            m for m, e in zip(self.mask_methods, self.errors, strict=True) if e is None
        )

    def row(self, i: int) -> dict[str, list[int]]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return {"input_ids": self.input_ids[a:b].tolist(), "labels": self.labels[a:b].tolist()}


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json stores a special token as a string or as a serialized
    # AddedToken ({"content": ..., "lstrip": ...}).
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _load_model_template(folder: Path, config: Mapping[str, Any]) -> str:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tmpl = config.get("chat_template")
    if isinstance(tmpl, str):
        return tmpl
    if isinstance(tmpl, list):
        named = {t.get("name"): t.get("template") for t in tmpl if isinstance(t, Mapping)}
        if isinstance(named.get("default"), str):
            return str(named["default"])
    raise TemplateError(
        f"{folder} has no chat template (chat_template.jinja or tokenizer_config.json); "
        f"pass template= one of {sorted(BUILTIN_TEMPLATES)} or inline Jinja text"
    )


def _resolve_template(template: str | None, folder: Path, config: Mapping[str, Any]) -> str:
    if template is None:
        return _load_model_template(folder, config)
    if template in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[template]
    kind = template_kind(template)
    if kind == "inline":
        return template
    path = Path(template).expanduser()
    if kind == "path" and path.is_file():
        return path.read_text(encoding="utf-8")
    raise TemplateError(
        f"template {template!r} is neither a builtin ({', '.join(sorted(BUILTIN_TEMPLATES))}), "
        "inline Jinja text nor an existing template file (.jinja, .j2, .jinja2 or a path)"
    )


def _model_folder(model: str | Path) -> Path:
    path = Path(model).expanduser()
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return path
    from ladle.models import resolve_model  # heavy (torch-free but imports gguf tools)

    return resolve_model(str(model))


def _dumps(conversation: Conversation, tools: Sequence[Any] | None) -> str:
    if tools is not None:
        if isinstance(conversation, Mapping):
            conversation = {**conversation, "tools": list(tools)}
        else:
            conversation = {"messages": list(conversation), "tools": list(tools)}
    elif not isinstance(conversation, Mapping | Sequence) or isinstance(conversation, str):
        raise DataError(f"a conversation is a list of messages, not {type(conversation).__name__}")
    try:
        text = json.dumps(conversation, ensure_ascii=False)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # Surrogates (a pair spelled as two code points, or a lone one) cannot cross to
        # Rust as UTF-8; escaped, the Rust parser decodes a pair (and its guards see the
        # character) and refuses a lone one as a DataError.
        return json.dumps(conversation)
    except (TypeError, ValueError) as e:
        raise DataError(f"conversation is not JSON data: {e}") from e


class ChatTokenizer:
    """Render, tokenize and mask conversations for one model (template + tokenizer.json).

    Example::

        tok = ChatTokenizer.from_pretrained("builtin:smollm2-135m-instruct")
        ex = tok.encode([{"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello!"}])
        ex["labels"]  # IGNORE_INDEX on the prompt, the reply's ids and <|im_end|> trained
    """

    def __init__(
        self,
        tokenizer_path: str | Path,
        template: str,
        special_tokens: Mapping[str, str] | None = None,
        *,
        fast: bool = True,
    ) -> None:
        self.tokenizer_path = Path(tokenizer_path)
        self.template = template
        self.special_tokens = dict(special_tokens or {})
        self._fast = fast
        self._core = ChatEncoder(
            str(self.tokenizer_path), template, list(self.special_tokens.items()), fast
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The Rust object does not pickle; rebuilding from its inputs lets a
        # ChatTokenizer cross process boundaries (multiprocessing, datasets.map).
        return (
            _rebuild,
            (str(self.tokenizer_path), self.template, self.special_tokens, self._fast),
        )

    @classmethod
    def from_pretrained(
        cls, model: str | Path, template: str | None = None, *, fast: bool = True
    ) -> ChatTokenizer:
        """Load from a model folder, a builtin (``builtin:NAME``) or a hub id.

        ``template``: None uses the model's own chat template; a name from
        ``BUILTIN_TEMPLATES``; inline Jinja text; or a path to a ``.jinja`` file.
        ``fast=False`` disables the byte-level BPE fast path (for comparisons).
        """
        folder = _model_folder(model)
        tok_json = folder / "tokenizer.json"
        if not tok_json.is_file():
            raise TokenizerError(
                f"{folder} has no tokenizer.json (only fast tokenizers are supported)"
            )
        config: dict[str, Any] = {}
        cfg_path = folder / "tokenizer_config.json"
        if cfg_path.is_file():
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        special = {
            k: text for k in SPECIAL_TOKEN_KEYS if (text := _token_text(config.get(k))) is not None
        }
        return cls(tok_json, _resolve_template(template, folder, config), special, fast=fast)

    # ---- properties

    @property
    def is_fast(self) -> bool:
        """True when the hand-written byte-level BPE path encodes."""
        return bool(self._core.is_fast)

    @property
    def has_generation_markers(self) -> bool:
        """True when the template marks replies with ``{% generation %}``."""
        return bool(self._core.has_generation_markers)

    @property
    def vocab_size(self) -> int:
        return int(self._core.vocab_size)

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self.token_to_id(self.eos_token) if self.eos_token else None

    @property
    def pad_token_id(self) -> int | None:
        pad = self.special_tokens.get("pad_token")
        return self.token_to_id(pad) if pad else self.eos_token_id

    def token_to_id(self, token: str) -> int | None:
        return self._core.token_to_id(token)

    def fingerprint(self) -> str:
        """Hex fingerprint of everything that decides the ids and labels: tokenizer.json
        bytes, template text, special tokens and the Ladle version (for prep caches)."""
        from ladle._core import __version__, fingerprint_bytes, fingerprint_files

        parts = {
            "tokenizer": fingerprint_files([str(self.tokenizer_path)]),
            "template": self.template,
            "special_tokens": self.special_tokens,
            "ladle": __version__,
        }
        return fingerprint_bytes(json.dumps(parts, sort_keys=True).encode())

    # ---- rendering

    def render(
        self,
        messages: Conversation,
        add_generation_prompt: bool = False,
        tools: Sequence[Any] | None = None,
    ) -> str:
        """The text the model sees: ``apply_chat_template(tokenize=False)``.

        ``tools`` are JSON schemas (dicts); Python functions are not converted.
        """
        return self.render_batch([messages], add_generation_prompt, tools)[0]

    def render_batch(
        self,
        conversations: Sequence[Conversation],
        add_generation_prompt: bool = False,
        tools: Sequence[Any] | None = None,
    ) -> list[str]:
        """Render many conversations in parallel; raises the first row's error."""
        texts, errors = self._core.render(
            [_dumps(c, tools) for c in conversations], add_generation_prompt
        )
        _raise_first(errors)
        return [t for t in texts if t is not None]

    def trained_spans(
        self,
        messages: Conversation,
        train_on: TrainOn = "assistant",
        tools: Sequence[Any] | None = None,
    ) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character spans whose tokens are trained."""
        return self._core.trained_spans(_dumps(messages, tools), train_on)

    # ---- encoding

    def encode(
        self,
        messages: Conversation,
        train_on: TrainOn = "assistant",
        tools: Sequence[Any] | None = None,
    ) -> dict[str, list[int]]:
        """``{"input_ids", "labels"}`` of one conversation (labels IGNORE_INDEX where not trained)."""
        batch = self.encode_arrays([messages], train_on, tools)
        _raise_first(batch.errors)
        return batch.row(0)

    def encode_batch(
        self,
        conversations: Sequence[Conversation],
        train_on: TrainOn = "assistant",
        tools: Sequence[Any] | None = None,
    ) -> list[dict[str, list[int]]]:
        """``encode`` over many conversations in parallel; raises the first row's error."""
        batch = self.encode_arrays(conversations, train_on, tools)
        _raise_first(batch.errors)
        return [batch.row(i) for i in range(len(batch))]

    def encode_arrays(
        self,
        conversations: Sequence[Conversation],
        train_on: TrainOn = "assistant",
        tools: Sequence[Any] | None = None,
    ) -> EncodedBatch:
        """The fast form for pipelines: flat arrays, per-row errors kept (not raised)."""
        return self.encode_json([_dumps(c, tools) for c in conversations], train_on)

    def encode_json(self, rows: Sequence[str], train_on: TrainOn = "assistant") -> EncodedBatch:
        """Like ``encode_arrays`` on conversations already serialized to JSON text."""
        ids, labels, offsets, n_trained, errors, methods = self._core.encode(list(rows), train_on)
        return EncodedBatch(ids, labels, offsets, n_trained, errors, methods)

    # ---- plain tokenization

    def tokenize(self, text: str) -> list[int]:
        """Ids of plain text, no special tokens added (``add_special_tokens=False``)."""
        ids, _ = self._core.tokenize([text])
        return [int(i) for i in ids]

    def tokenize_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Flat int32 ids and int64 row offsets of many texts, in parallel."""
        return self._core.tokenize(list(texts))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._core.decode([int(i) for i in ids], skip_special_tokens)


def _rebuild(path: str, template: str, special: dict[str, str], fast: bool) -> ChatTokenizer:
    return ChatTokenizer(path, template, special, fast=fast)


def mask_method_summary(methods: Iterable[str]) -> str:
    """Distinct mask methods joined by ``+`` in a fixed order (``none`` when empty or
    when nothing was located)."""
    seen = set(methods) - {"none"}
    return "+".join(m for m in MASK_METHODS if m in seen) or "none"


def _raise_first(errors: Sequence[BaseException | None]) -> None:
    for i, e in enumerate(errors):
        if e is not None:
            if len(errors) == 1:
                raise e
            # Same class, with the row that failed, so a batch error names its row.
            raise type(e)(f"row {i}: {e}") from e
