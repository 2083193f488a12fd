"""From normalised rows to token documents: tokenize, mask, apply the over-long policy.

Every example that leaves here has at least one trained token that survives packing
(the first token of a packed document never carries loss), because an example with
nothing to learn still costs compute and silently dilutes the loss: it is a counted
drop (``no_trained_tokens``), never a quiet row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ladle._core import IGNORE_INDEX
from ladle.data.load import Drops, replies

Ids = npt.NDArray[np.int32]


@dataclass
class Encoder:
    """What tokenizing a chunk of rows needs: the chat tokenizer and the recipe's rules."""

    chat: Any  # ladle.data.ChatTokenizer (or anything with its encode_batch signature)
    text: Callable[[list[str]], list[list[int]]]
    eos_id: int | None
    max_length: int
    train_on: str
    overlong: str  # auto | drop | truncate | split
    strict: bool = False

    def policy(self, is_text: bool) -> str:
        if self.overlong == "auto":
            return "split" if is_text else "drop"
        return self.overlong


@dataclass
class Overlong:
    dropped: int = 0
    truncated: int = 0
    split: int = 0
    pieces: int = 0

    def merge(self, o: Overlong) -> None:
        self.dropped += o.dropped
        self.truncated += o.truncated
        self.split += o.split
        self.pieces += o.pieces


def text_encoder(
    chat: Any, model_dir: Path
) -> tuple[Callable[[list[str]], list[list[int]]], int | None]:
    """Raw-text tokenization (for ``format: text``) and the EOS id that ends each document.

    Uses the chat tokenizer's own raw-text path when it has one, else the ``tokenizers``
    package on the model's tokenizer.json (same ids: same file, no special tokens added).
    """
    eos_id: int | None = getattr(chat, "eos_token_id", None)
    fn = None
    if hasattr(chat, "tokenize_batch"):

        def fn(texts: list[str]) -> list[list[int]]:
            ids, offsets = chat.tokenize_batch(texts)
            return [ids[offsets[k] : offsets[k + 1]] for k in range(len(texts))]

    if fn is None or eos_id is None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        if fn is None:

            def fn(texts: list[str]) -> list[list[int]]:
                return [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]

        if eos_id is None:
            eos_id = _eos_id(model_dir, tok)
    return fn, eos_id


def _eos_id(model_dir: Path, tok: Any) -> int | None:
    cfg = model_dir / "tokenizer_config.json"
    if not cfg.is_file():
        return None
    eos = json.loads(cfg.read_text()).get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    return tok.token_to_id(eos) if isinstance(eos, str) else None


def _pairs(result: Any) -> list[tuple[list[int], list[int]]]:
    """Accept encode_batch output as a list of dicts or a dict of lists."""
    if isinstance(result, dict):
        return list(zip(result["input_ids"], result["labels"], strict=True))
    return [(r["input_ids"], r["labels"]) for r in result]


def _trained(labels: Ids) -> int:
    """Trained tokens once packed (the document's first label is always ignored)."""
    return int(np.count_nonzero(labels[1:] != IGNORE_INDEX))


@dataclass
class Docs:
    """A chunk's documents in one flat layout: document ``k`` is
    ``ids[offsets[k]:offsets[k + 1]]`` (labels alike, first label as encoded) and came
    from row ``rows[k]``. Flat, so a chunk is written, counted and masked with a few
    numpy calls instead of a Python loop per document."""

    ids: Ids
    labels: Ids
    offsets: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.rows)

    def as_list(self) -> list[tuple[int, Ids, Ids]]:
        o = self.offsets
        return [
            (int(r), self.ids[o[k] : o[k + 1]], self.labels[o[k] : o[k + 1]])
            for k, r in enumerate(self.rows.tolist())
        ]


def encode_sft_flat(
    enc: Encoder,
    rows: list[str],
    kinds: list[str],
    locations: Sequence[str],
    drops: Drops,
    over: Overlong,
    mask_methods: dict[int, str] | None = None,
) -> Docs:
    """Tokenize a chunk of rows (JSON text; ``kinds`` "chat" or "text") into documents.

    One row can give several documents (``split``) or none (a counted drop).
    ``mask_methods``, when given, receives how each encoded chat row's loss mask was
    located (``ChatTokenizer``'s ``EncodedBatch.mask_methods``), by row index.

    Rows that fit, encoded and have a trained token past the first (nearly all of them)
    are kept as they are, decided for the whole chunk at once; only the others (errors,
    over-long rows, rows with nothing to learn) go through the per-row rules.
    """
    n = len(rows)
    ids, labels, off, ok = _encode_rows(enc, rows, kinds, locations, drops, mask_methods)
    lens = np.diff(off)
    # Trained tokens per row: a sum per segment of a bool array (an int64 cumsum over
    # every token of the chunk cost a quarter of this function on a 100k-row corpus).
    has = lens > 0
    n_trained = np.zeros(n, np.int64)
    if has.any():
        n_trained[has] = np.add.reduceat(labels != IGNORE_INDEX, off[:-1][has], dtype=np.int64)
    first_trained = np.zeros(n, bool)
    first_trained[has] = labels[off[:-1][has]] != IGNORE_INDEX
    simple = ok & (lens <= enc.max_length) & (n_trained - first_trained > 0)
    p_ids: list[Ids] = []
    p_lab: list[Ids] = []
    p_len: list[npt.NDArray[np.int64]] = []
    p_row: list[npt.NDArray[np.int64]] = []
    start = 0
    for s in [*np.flatnonzero(~simple).tolist(), n]:
        if s > start:  # a run of rows kept as they are: one slice of the flat arrays
            p_ids.append(ids[off[start] : off[s]])
            p_lab.append(labels[off[start] : off[s]])
            p_len.append(lens[start:s])
            p_row.append(np.arange(start, s, dtype=np.int64))
        start = s + 1
        if s == n or not ok[s]:
            continue
        row_ids, row_lab = ids[off[s] : off[s + 1]], labels[off[s] : off[s + 1]]
        for a, b in _pieces(enc, row_ids, row_lab, kinds[s] == "text", locations[s], drops, over):
            p_ids.append(a)
            p_lab.append(b)
            p_len.append(np.array([len(a)], np.int64))
            p_row.append(np.array([s], np.int64))
    doc_lens = np.concatenate(p_len) if p_len else np.zeros(0, np.int64)
    offsets = np.zeros(len(doc_lens) + 1, np.int64)
    np.cumsum(doc_lens, out=offsets[1:])
    return Docs(
        _join(p_ids),
        _join(p_lab),
        offsets,
        np.concatenate(p_row) if p_row else np.zeros(0, np.int64),
    )


def _join(parts: list[Ids]) -> Ids:
    """One int32 array of ``parts``; a single part (a chunk with nothing to set apart) is
    returned as it is, not copied."""
    if len(parts) == 1:
        return parts[0].astype(np.int32, copy=False)
    return np.concatenate(parts).astype(np.int32, copy=False) if parts else np.zeros(0, np.int32)


def _pieces(
    enc: Encoder,
    ids: Ids,
    labels: Ids,
    is_text: bool,
    location: str,
    drops: Drops,
    over: Overlong,
) -> list[tuple[Ids, Ids]]:
    """One encoded row's documents under the over-long policy; those with nothing to
    learn are counted drops."""
    pieces = [(ids, labels)]
    if len(ids) > enc.max_length:
        policy = enc.policy(is_text)
        if policy == "drop":
            over.dropped += 1
            drops.add("overlong", f"{location}: {len(ids)} tokens > {enc.max_length}")
            return []
        if policy == "truncate":
            over.truncated += 1
            pieces = [(ids[: enc.max_length], labels[: enc.max_length])]
        else:
            over.split += 1
            m = enc.max_length
            pieces = [(ids[a : a + m], labels[a : a + m]) for a in range(0, len(ids), m)]
            over.pieces += len(pieces)
    kept = [(a, b) for a, b in pieces if _trained(b) > 0]
    if not kept:
        drops.add("no_trained_tokens", location)
        return []
    if len(kept) < len(pieces):  # split pieces with nothing to learn: counted, not lost
        drops.add(
            "split_piece_no_trained_tokens",
            f"{location}: {len(pieces) - len(kept)} of {len(pieces)} pieces",
            len(pieces) - len(kept),
        )
    return kept


def _encode_rows(
    enc: Encoder,
    rows: list[str],
    kinds: list[str],
    locations: Sequence[str],
    drops: Drops,
    mask_methods: dict[int, str] | None,
) -> tuple[Ids, Ids, npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Every row's ids and labels, flat in row order, with row offsets and whether the
    row encoded (a template error is a counted drop here, or raises with ``strict``)."""
    n = len(rows)
    ok = np.ones(n, bool)
    chat_idx = [i for i, k in enumerate(kinds) if k == "chat"]
    text_idx = [i for i, k in enumerate(kinds) if k == "text"]
    encoded: dict[int, tuple[Ids, Ids]] = {}
    if chat_idx and hasattr(enc.chat, "encode_json"):
        # ChatTokenizer's flat form: the rows' JSON goes straight to Rust (no Python
        # dicts, no per-token Python objects), and a row whose template raises is a
        # counted drop instead of a failed batch. A row is {"messages", "tools"?}.
        b = enc.chat.encode_json([rows[i] for i in chat_idx], train_on=enc.train_on)
        for k, err in enumerate(b.errors):
            if err is None:
                continue
            i = chat_idx[k]
            if enc.strict:  # same class, naming the row (file:line)
                raise type(err)(f"{locations[i]}: {err}") from err
            drops.add("template_error", f"{locations[i]}: {err}")
            ok[i] = False
        if mask_methods is not None:
            for k, i in enumerate(chat_idx):
                if ok[i]:
                    mask_methods[i] = b.mask_methods[k]
        if len(chat_idx) == n:  # all chat: the batch is already the flat layout
            off = np.asarray(b.offsets, np.int64)
            return b.input_ids, b.labels, off, ok
        off = b.offsets
        for k, i in enumerate(chat_idx):
            encoded[i] = (b.input_ids[off[k] : off[k + 1]], b.labels[off[k] : off[k + 1]])
    elif chat_idx:  # any object with ChatTokenizer's encode/encode_batch signature
        parsed = {i: json.loads(rows[i]) for i in chat_idx}
        plain = [i for i in chat_idx if not parsed[i].get("tools")]
        if plain:
            batch = enc.chat.encode_batch(
                [parsed[i]["messages"] for i in plain], train_on=enc.train_on
            )
            for i, (raw_ids, raw_labels) in zip(plain, _pairs(batch), strict=True):
                encoded[i] = (np.asarray(raw_ids, np.int32), np.asarray(raw_labels, np.int32))
        for i in chat_idx:
            if parsed[i].get("tools"):
                r = enc.chat.encode(
                    parsed[i]["messages"], train_on=enc.train_on, tools=parsed[i]["tools"]
                )
                encoded[i] = (
                    np.asarray(r["input_ids"], np.int32),
                    np.asarray(r["labels"], np.int32),
                )
    if text_idx:
        texts = [json.loads(rows[i])["text"] for i in text_idx]
        for i, toks in zip(text_idx, enc.text(texts), strict=True):
            arr = np.asarray(toks, np.int32)
            if enc.eos_id is not None:
                arr = np.append(arr, np.int32(enc.eos_id))
            encoded[i] = (arr, arr.copy())
    empty = np.zeros(0, np.int32)
    per_row = [encoded.get(i, (empty, empty)) for i in range(n)]
    for i in range(n):
        ok[i] &= i in encoded
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(r[0]) for r in per_row], out=offsets[1:])
    if not per_row:
        return empty, empty, offsets, ok
    ids = np.concatenate([r[0] for r in per_row]).astype(np.int32, copy=False)
    labels = np.concatenate([r[1] for r in per_row]).astype(np.int32, copy=False)
    return ids, labels, offsets, ok


def _encode_replies(
    enc: Encoder,
    rows: list[dict[str, Any]],
    locations: Sequence[str],
    drops: Drops,
    over: Overlong,
) -> list[tuple[int, Ids, list[Ids]]]:
    """Tokenize each row's replies after its prompt: ``(row index, prompt, [reply, ...])``.

    The prompt is the conversation rendered up to the reply with the generation prompt
    (the tokens before the first trained one); each reply is its tokens up to and
    including the end-of-turn token, so the replies of a row share one exact prefix.
    """
    convs: list[list[dict[str, Any]]] = []
    owner: list[int] = []
    for i, r in enumerate(rows):
        pmsgs = [{**m, "train": False} for m in r["prompt"]]
        for reply in replies(r):
            convs.append(pmsgs + reply)
            owner.append(i)
    failed: dict[int, BaseException] = {}
    if hasattr(enc.chat, "encode_json"):
        # Per-conversation errors: one row the template refuses is a counted drop, not
        # the end of the whole prep.
        b = enc.chat.encode_json([json.dumps({"messages": c}) for c in convs], "assistant")
        off = b.offsets
        pairs = [
            (b.input_ids[off[k] : off[k + 1]], b.labels[off[k] : off[k + 1]])
            for k in range(len(convs))
        ]
        failed = {owner[k]: e for k, e in enumerate(b.errors) if e is not None}
    else:
        pairs = _pairs(enc.chat.encode_batch(convs, train_on="assistant"))
    by_row: dict[int, list[tuple[Any, Any]]] = {}
    for k, i in enumerate(owner):
        by_row.setdefault(i, []).append(pairs[k])
    out: list[tuple[int, Ids, list[Ids]]] = []
    for i in range(len(rows)):
        if i in failed:
            if enc.strict:
                raise failed[i]
            drops.add("template_error", f"{locations[i]}: {failed[i]}")
            continue
        spans = []
        for ids, labels in by_row.get(i, []):
            lab = np.asarray(labels, np.int32)
            trained = np.flatnonzero(lab != IGNORE_INDEX)
            if len(trained) == 0:
                break
            arr = np.asarray(ids, np.int32)
            spans.append((arr[: trained[0]], arr[trained[0] : trained[-1] + 1]))
        if len(spans) < len(by_row.get(i, [])) or not spans:
            drops.add("no_trained_tokens", locations[i])
            continue
        prompt = spans[0][0]
        if any(not np.array_equal(prompt, p) for p, _ in spans[1:]):
            drops.add("prompt_mismatch", locations[i])
            continue
        conts = [c for _, c in spans]
        longest = max(len(c) for c in conts)
        if len(prompt) + longest > enc.max_length:
            if enc.overlong != "truncate":
                over.dropped += 1
                drops.add("overlong", locations[i])
                continue
            over.truncated += 1
            keep = max(enc.max_length // 2, enc.max_length - longest)
            prompt = prompt[-keep:]  # keep the end of the prompt, nearest the reply
            room = enc.max_length - len(prompt)
            conts = [c[:room] for c in conts]
        out.append((i, prompt, conts))
    return out


def encode_preference(
    enc: Encoder, rows: list[dict[str, Any]], locations: Sequence[str], drops: Drops, over: Overlong
) -> list[tuple[int, Ids, Ids, Ids]]:
    """Tokenize preference pairs into ``(row index, prompt, chosen, rejected)`` id triples
    (DPO, ORPO). A labelled single completion is no pair: a counted drop (``unpaired``)."""
    pairs, where = [], []
    for r, loc in zip(rows, locations, strict=True):
        if "label" in r:
            drops.add("unpaired", f"{loc}: a completion/label row trains with train.method: kto")
            continue
        pairs.append(r)
        where.append(loc)
    index = [i for i, r in enumerate(rows) if "label" not in r]
    return [(index[j], p, c, r) for j, p, (c, r) in _encode_replies(enc, pairs, where, drops, over)]


def encode_labelled(
    enc: Encoder, rows: list[dict[str, Any]], locations: Sequence[str], drops: Drops, over: Overlong
) -> list[tuple[int, Ids, Ids, bool]]:
    """Tokenize preference rows into KTO's ``(row index, prompt, completion, desirable)``
    examples: a labelled row gives one, a pair gives two (chosen desirable, rejected not)."""
    out: list[tuple[int, Ids, Ids, bool]] = []
    for i, p, conts in _encode_replies(enc, rows, locations, drops, over):
        if "label" in rows[i]:
            out.append((i, p, conts[0], bool(rows[i]["label"])))
        else:
            out += [(i, p, conts[0], True), (i, p, conts[1], False)]
    return out
