"""Exact and near-duplicate removal, and decontamination against an eval set.

Duplicates waste compute and overweight some behaviours; eval rows that leak into
training make every before/after comparison a lie. The work runs in Rust
(``ladle._core.dedup_*``, all cores, GIL released); this module chooses the text that
defines an example's identity, checks arguments and shapes the results.

- :func:`minhash`: signatures you can store (Parquet) and compare across shards later.
  ``scheme="datasketch"`` equals ``datasketch.MinHash(num_perm, seed)`` bit for bit;
  ``"datasketch-legacy"`` equals ``MinHash(..., scheme="legacy")``; ``"fast"`` hashes
  words with xxh3 (same shingles, same permutation math, several times faster).
- :func:`deduplicate`: keep/cluster/pairs for a list of texts.
- :func:`dedup_rows`: the same over dataset rows, driven by a recipe's ``data.dedup``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from ladle import _core
from ladle.errors import DataError

Fields = Literal["conversation", "user", "assistant", "prompt"]
Scheme = Literal["fast", "datasketch", "datasketch-legacy"]
KeepPolicy = Literal["first", "longest"]
FIELDS: tuple[str, ...] = ("conversation", "user", "assistant", "prompt")
# The recipe schema (``NormalizeSpec``) spells some normalisation options shorter.
_NORM_ALIASES = {
    "punctuation": "strip_punctuation",
    "digits": "digits_to_zero",
    "whitespace": "collapse_whitespace",
}


@dataclass(frozen=True)
class NormalizeConfig:
    """Normalisation before hashing. Digit folding is off by default because it merges
    rows that differ only in their numbers ("page 3" vs "page 4")."""

    nfkc: bool = True
    lowercase: bool = True
    strip_punctuation: bool = True
    collapse_whitespace: bool = True
    digits_to_zero: bool = False

    @classmethod
    def coerce(cls, obj: Mapping[str, Any]) -> NormalizeConfig:
        values = {_NORM_ALIASES.get(k, k): v for k, v in obj.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown normalize option(s) {unknown}; known: {sorted(names)}")
        return cls(**values)


@dataclass(frozen=True)
class DedupConfig:
    """The ``data.dedup`` section of a recipe (also the CLI's options)."""

    enabled: bool = True
    exact: bool = True
    near: bool = True
    threshold: float = 0.8
    ngram: int = 5
    num_perm: int = 128
    fields: Fields = "conversation"
    keep: KeepPolicy = "first"
    verify: bool = True
    normalize: bool | NormalizeConfig = True
    scheme: Scheme = "fast"
    seed: int = 1
    decontaminate: bool = True
    decontaminate_fields: Fields = "prompt"
    lsh_weights: tuple[float, float] | None = None

    @classmethod
    def coerce(cls, obj: Any) -> DedupConfig:
        """Accept a DedupConfig, a mapping, a pydantic model or any object with these
        attributes, so the recipe schema can evolve without this module knowing it."""
        if isinstance(obj, cls):
            return obj
        if obj is None:
            return cls()
        if hasattr(obj, "model_dump"):
            obj = obj.model_dump()
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            obj = dataclasses.asdict(obj)
        elif not isinstance(obj, Mapping):
            obj = {
                f.name: getattr(obj, f.name)
                for f in dataclasses.fields(cls)
                if hasattr(obj, f.name)
            }
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - names)
        if unknown:
            raise ValueError(f"unknown dedup option(s) {unknown}; known: {sorted(names)}")
        values = dict(obj)
        norm = values.get("normalize", True)
        if hasattr(norm, "model_dump"):
            norm = norm.model_dump()
        if isinstance(norm, Mapping):
            values["normalize"] = NormalizeConfig.coerce(norm)
        cfg = cls(**{k: v for k, v in values.items() if v is not None})
        cfg.check()
        return cfg

    def check(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        for name, value in (
            ("fields", self.fields),
            ("decontaminate_fields", self.decontaminate_fields),
        ):
            if value not in FIELDS:
                raise ValueError(f"{name} must be one of {FIELDS}, got {value!r}")
        if self.keep not in ("first", "longest"):
            raise ValueError(f"keep must be 'first' or 'longest', got {self.keep!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data, stable across runs: part of ``ladle prep``'s fingerprint."""
        return dataclasses.asdict(self)


def _norm_kwargs(normalize: bool | NormalizeConfig) -> dict[str, bool]:
    if normalize is True:
        return {"normalize": True}
    if normalize is False:
        return {"normalize": False}
    return {"normalize": True, **dataclasses.asdict(normalize)}


def minhash(
    texts: Sequence[str],
    num_perm: int = 128,
    ngram: int = 5,
    scheme: Scheme = "datasketch",
    seed: int = 1,
    normalize: bool | NormalizeConfig = True,
) -> np.ndarray:
    """MinHash signatures, shape ``(len(texts), num_perm)``.

    dtype is datasketch's ``hashvalues`` dtype for the scheme: uint32 for
    ``datasketch``/``fast`` (datasketch 2.x's default ``affine32``), uint64 for
    ``datasketch-legacy``. Shingles: the (normalised) text split on whitespace, each
    run of ``ngram`` words joined by one space; shorter texts are one shingle; an empty
    text has none and keeps the all-max signature of an empty datasketch MinHash.
    """
    return _core.dedup_minhash(
        _as_str_list(texts, "texts"),
        num_perm=num_perm,
        ngram=ngram,
        scheme=scheme,
        seed=seed,
        **_norm_kwargs(normalize),
    )


class Pair(NamedTuple):
    """A removed row and the row that explains it, with their true shingle Jaccard."""

    removed: int
    kept: int
    similarity: float


@dataclass
class DedupResult:
    """Per-row decisions plus the counters a report needs."""

    keep: np.ndarray
    """bool per row: survives dedup and decontamination."""
    cluster: np.ndarray
    """int64 per row: index of the kept row of its cluster (itself if unique), -1 if
    removed by decontamination."""
    pairs: list[Pair]
    """(removed row, kept row, similarity) for every row removed as a duplicate."""
    contaminated: list[Pair]
    """(removed training row, eval row, similarity) for every decontaminated row."""
    stats: _core.DedupStats
    """Counters: rows_in, rows_out, exact_removed, near_clusters, near_removed,
    decontaminated, empty_rows, candidate_pairs, verified_pairs, bands, rows_per_band."""

    @property
    def kept_indices(self) -> np.ndarray:
        return np.flatnonzero(self.keep)


def deduplicate(
    texts: Sequence[str],
    threshold: float = 0.8,
    ngram: int = 5,
    num_perm: int = 128,
    against: Sequence[str] | None = None,
    keep: KeepPolicy = "first",
    *,
    exact: bool = True,
    near: bool = True,
    verify: bool = True,
    scheme: Scheme = "fast",
    seed: int = 1,
    normalize: bool | NormalizeConfig = True,
    bands: tuple[int, int] | None = None,
    lsh_weights: tuple[float, float] | None = None,
    lengths: Sequence[int] | None = None,
    against_keys: Sequence[str] | None = None,
    progress: bool = False,
) -> DedupResult:
    """Find exact and near duplicates in ``texts`` and pick one row per cluster.

    ``against``: eval texts; training rows that are exact or near copies of any of them
    are removed first (``.contaminated``). ``against_keys``: the training texts to
    compare with ``against`` when they differ from ``texts`` (e.g. prompts only).
    ``verify``: drop LSH candidates whose true Jaccard is below ``threshold`` (the
    banding's false positives). ``bands``: explicit (bands, rows). Otherwise they are
    chosen for ``threshold`` by datasketch's optimiser (``MinHashLSH._optimal_param``)
    with ``lsh_weights`` = (false-positive, false-negative) weights; by default
    datasketch's (0.5, 0.5) without verification (128 perms at 0.8: 9 x 13) and
    (0.1, 0.9) with it, since a verified false positive costs only a Jaccard check
    (14 x 9: a pair at Jaccard 0.85 becomes a candidate with probability 0.975, not 0.69).
    """
    if keep not in ("first", "longest"):
        raise ValueError(f"keep must be 'first' or 'longest', got {keep!r}")
    items = _as_str_list(texts, "texts")
    options: dict[str, Any] = dict(
        threshold=threshold,
        num_perm=num_perm,
        ngram=ngram,
        scheme=scheme,
        seed=seed,
        exact=exact,
        near=near,
        verify=verify,
        keep=keep,
        bands=None if bands is None else (int(bands[0]), int(bands[1])),
        lsh_weights=None if lsh_weights is None else (float(lsh_weights[0]), float(lsh_weights[1])),
        **_norm_kwargs(normalize),
    )
    kwargs: dict[str, Any] = {"lengths": None if lengths is None else [int(x) for x in lengths]}
    if against is not None:
        kwargs["against"] = _as_str_list(against, "against")
        if against_keys is not None:
            kwargs["against_keys"] = _as_str_list(against_keys, "against_keys")

    def call(prog: Any) -> _core.DedupOutput:
        return _core.dedup_run(items, options, progress=prog, **kwargs)

    raw = _with_progress(call, len(items)) if progress else call(None)

    def pairs(d: _core.DedupPairs) -> list[Pair]:
        return [
            Pair(int(r), int(k), float(s))
            for r, k, s in zip(d.removed, d.kept, d.similarity, strict=True)
        ]

    return DedupResult(
        keep=raw.keep,
        cluster=raw.cluster,
        pairs=pairs(raw.pairs),
        contaminated=pairs(raw.contaminated),
        stats=raw.stats,
    )


def _with_progress(call: Callable[[Any], _core.DedupOutput], n: int) -> _core.DedupOutput:
    """Run ``call`` in a worker thread (Rust releases the GIL) and poll its counters
    into a rich progress bar from this one."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    prog = _core.DedupProgress()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = call(prog)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    worker = threading.Thread(target=work, daemon=True)
    columns = (
        TextColumn("dedup {task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("sketch", total=n)
        worker.start()
        while worker.is_alive():
            stage, done, total = prog.snapshot()
            bar.update(task, description=stage, completed=min(done, total), total=max(total, 1))
            time.sleep(0.1)
        worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _as_str_list(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of strings, not one string")
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise DataError(f"{name}[{i}] must be text, got {type(t).__name__}")
    return items


# ---------------------------------------------------------------- rows


def _content(value: Any, where: str, path: str) -> str:
    """Text of a message content: a string, None (tool calls) or a list of parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, Mapping) and part.get("type") not in (None, "text"):
                continue  # images and other non-text parts carry no text identity
            else:
                raise DataError(f"{where}: field '{path}[{j}]' must be text or a text part")
        return "\n".join(parts)
    raise DataError(f"{where}: field '{path}' must be text, got {type(value).__name__}")


def _turns(messages: Any, where: str, path: str, roles: set[str] | None) -> list[str]:
    if not isinstance(messages, list):
        raise DataError(
            f"{where}: field '{path}' must be a list of messages, got {type(messages).__name__}"
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise DataError(f"{where}: field '{path}[{i}]' must be a message object")
        role = m.get("role", m.get("from"))
        if not isinstance(role, str):
            raise DataError(f"{where}: field '{path}[{i}].role' must be text")
        if (
            roles is None
            or role in roles
            or (role in ("human", "gpt") and {"human": "user", "gpt": "assistant"}[role] in roles)
        ):
            key = "content" if "content" in m else "value"
            out.append(_content(m.get(key), where, f"{path}[{i}].{key}"))
    return out


def _part(row: Mapping[str, Any], key: str, where: str, roles: set[str] | None) -> list[str]:
    value = row.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return _turns(value, where, key, roles)
    return [_content(value, where, key)]


def example_text(
    row: Mapping[str, Any], fields: Fields = "conversation", where: str = "row"
) -> str:
    """The text that defines an example's identity.

    ``conversation``: every turn; ``user``: user turns (same question, different
    answers count as duplicates); ``assistant``: assistant turns; ``prompt``: the
    prompt of preference/prompt-completion rows, the user turns of a conversation.
    Rows: ``{"messages": [...]}`` (or ShareGPT ``conversations``), preference
    ``{"prompt", "chosen", "rejected"}``, ``{"prompt", "completion"}``, Alpaca
    ``{"instruction", "input", "output"}`` or ``{"text"}``.
    """
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: a row must be an object, got {type(row).__name__}")
    if fields not in FIELDS:
        raise ValueError(f"fields must be one of {FIELDS}, got {fields!r}")
    users, bots = {"user"}, {"assistant"}
    for key in ("messages", "conversations"):
        if key in row:
            roles = {"conversation": None, "user": users, "prompt": users, "assistant": bots}[
                fields
            ]
            return "\n".join(_turns(row[key], where, key, roles))
    if "prompt" in row:
        prompt_roles = None if fields == "conversation" else users
        prompt = _part(row, "prompt", where, prompt_roles)
        answers = [
            t for k in ("chosen", "rejected", "completion") for t in _part(row, k, where, bots)
        ]
        chosen = {
            "conversation": prompt + answers,
            "user": prompt,
            "prompt": prompt,
            "assistant": answers,
        }[fields]
        return "\n".join(chosen)
    if "instruction" in row or "output" in row:
        prompt = _part(row, "instruction", where, None) + _part(row, "input", where, None)
        answer = _part(row, "output", where, None)
        return "\n".join(
            {
                "conversation": prompt + answer,
                "user": prompt,
                "prompt": prompt,
                "assistant": answer,
            }[fields]
        )
    if "text" in row:
        if fields != "conversation":
            raise DataError(
                f"{where}: fields={fields!r} needs messages or a prompt; this row has only 'text'"
            )
        return _content(row["text"], where, "text")
    raise DataError(
        f"{where}: no text found (expected 'messages', 'prompt', 'instruction' or 'text'); "
        f"keys: {sorted(row)[:8]}"
    )


def dedup_rows(
    rows: Sequence[Mapping[str, Any]],
    config: Any = None,
    against_rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    locations: Sequence[str] | None = None,
    against_locations: Sequence[str] | None = None,
    sample: int = 20,
    progress: bool = False,
) -> tuple[list[Mapping[str, Any]], dict[str, Any]]:
    """Deduplicate dataset rows per a ``data.dedup`` config; returns (kept rows, report).

    ``locations`` label rows in errors and in the report (e.g. ``train.jsonl:12``).
    """
    cfg = DedupConfig.coerce(config)
    rows = list(rows)
    base: dict[str, Any] = {"config": cfg.to_dict(), "rows_in": len(rows)}
    if not cfg.enabled:
        return rows, {**base, "rows_out": len(rows), "enabled": False}

    def loc(i: int, locs: Sequence[str] | None, default: str) -> str:
        return locs[i] if locs is not None else f"{default} {i}"

    texts = [example_text(r, cfg.fields, loc(i, locations, "row")) for i, r in enumerate(rows)]
    lengths = None
    if cfg.keep == "longest":
        lengths = [
            len(example_text(r, "conversation", loc(i, locations, "row")))
            for i, r in enumerate(rows)
        ]
    against = keys = None
    if against_rows is not None and cfg.decontaminate:
        against = [
            example_text(r, cfg.decontaminate_fields, loc(i, against_locations, "eval row"))
            for i, r in enumerate(against_rows)
        ]
        if cfg.decontaminate_fields != cfg.fields:
            keys = [
                example_text(r, cfg.decontaminate_fields, loc(i, locations, "row"))
                for i, r in enumerate(rows)
            ]
    res = deduplicate(
        texts,
        cfg.threshold,
        cfg.ngram,
        cfg.num_perm,
        against,
        cfg.keep,
        exact=cfg.exact,
        near=cfg.near,
        verify=cfg.verify,
        scheme=cfg.scheme,
        seed=cfg.seed,
        normalize=cfg.normalize,
        lsh_weights=cfg.lsh_weights,
        lengths=lengths,
        against_keys=keys,
        progress=progress,
    )
    kept = [r for r, k in zip(rows, res.keep, strict=True) if k]
    eval_texts = against or []
    train_keys = keys or texts

    def snippet(s: str) -> str:
        return s if len(s) <= 200 else s[:197] + "..."

    def show(i: int) -> str | int:
        return locations[i] if locations is not None else i

    report = {
        **base,
        **res.stats.to_dict(),
        "enabled": True,
        "removed_pairs_sample": [
            {
                "removed": show(p.removed),
                "kept": show(p.kept),
                "similarity": round(p.similarity, 4),
                "removed_text": snippet(texts[p.removed]),
                "kept_text": snippet(texts[p.kept]),
            }
            for p in _spread(res.pairs, sample)
        ],
        "contaminated_pairs": [
            {
                "removed": show(p.removed),
                "eval": against_locations[p.kept] if against_locations is not None else p.kept,
                "similarity": round(p.similarity, 4),
                "removed_text": snippet(train_keys[p.removed]),
                "eval_text": snippet(eval_texts[p.kept]),
            }
            for p in res.contaminated
        ],
    }
    return kept, report


def _spread(pairs: list[Pair], k: int) -> list[Pair]:
    """Up to ``k`` pairs: half the least similar (the ones that tell a user whether the
    threshold is too loose), half spread evenly over the rest."""
    if k <= 0 or not pairs:
        return []
    ranked = sorted(pairs, key=lambda p: (p.similarity, p.removed))
    if len(ranked) <= k:
        return ranked
    low = ranked[: k // 2]
    rest = ranked[k // 2 :]
    step = len(rest) / (k - len(low))
    return low + [rest[int(i * step)] for i in range(k - len(low))]


__all__ = [
    "DedupConfig",
    "DedupResult",
    "NormalizeConfig",
    "Pair",
    "dedup_rows",
    "deduplicate",
    "example_text",
    "minhash",
]
