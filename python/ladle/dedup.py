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

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
from pydantic import ValidationError

from ladle import _core
from ladle.data.load import is_preference_row, replies
from ladle.errors import DataError
from ladle.recipe.schema import DedupFields, DedupSpec, NormalizeSpec

Fields = DedupFields
Scheme = Literal["fast", "datasketch", "datasketch-legacy"]
KeepPolicy = Literal["first", "longest"]
FIELDS: tuple[str, ...] = get_args(DedupFields)


def dedup_spec(config: DedupSpec | Mapping[str, Any] | None = None, **options: Any) -> DedupSpec:
    """A :class:`DedupSpec` from a spec, a mapping (recipe keys) and/or keyword options,
    validated once: a bad value is a one-line ``DataError`` naming the option."""
    base = config.model_dump() if isinstance(config, DedupSpec) else dict(config or {})
    try:
        return DedupSpec.model_validate({**base, **options})
    except ValidationError as e:
        first = e.errors()[0]
        name = ".".join(str(x) for x in first["loc"]) or "dedup"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise DataError(f"dedup option {name}: {first['msg']}{more}") from None


def _normalize_options(normalize: bool | NormalizeSpec) -> dict[str, bool]:
    if normalize is False:
        return {"normalize": False}
    spec = NormalizeSpec() if normalize is True else normalize
    return {"normalize": True, **spec.model_dump()}


def core_options(spec: DedupSpec) -> dict[str, Any]:
    """The options of ``_core.dedup_run`` for a spec: the one place they are built."""
    return {
        "threshold": spec.threshold,
        "num_perm": spec.num_perm,
        "ngram": spec.ngram,
        "scheme": spec.scheme,
        "seed": spec.seed,
        **_normalize_options(spec.normalize),
        "exact": spec.exact,
        "near": spec.near,
        "verify": spec.verify,
        "keep": spec.keep,
        "bands": spec.bands,
        "lsh_weights": spec.lsh_weights,
    }


def minhash(
    texts: Sequence[str],
    num_perm: int = 128,
    ngram: int = 5,
    scheme: Scheme = "datasketch",
    seed: int = 1,
    normalize: bool | NormalizeSpec = True,
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
        **_normalize_options(normalize),
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
    report: dict[str, Any] = field(default_factory=dict)
    """What :func:`dedup_rows` found, as plain JSON data (config, counts, sample pairs)."""

    @property
    def kept_indices(self) -> np.ndarray:
        return np.flatnonzero(self.keep)

    def removed(self) -> dict[int, str]:
        """Each removed row's index and why: ``duplicate`` or ``contaminated``."""
        leaked = {p.removed for p in self.contaminated}
        return {
            int(i): "contaminated" if int(i) in leaked else "duplicate"
            for i in np.flatnonzero(~np.asarray(self.keep, dtype=bool))
        }


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
    normalize: bool | NormalizeSpec = True,
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
    The options are checked by :class:`DedupSpec`, the same rules as a recipe's.
    """
    spec = dedup_spec(
        threshold=threshold,
        ngram=ngram,
        num_perm=num_perm,
        keep=keep,
        exact=exact,
        near=near,
        verify=verify,
        scheme=scheme,
        seed=seed,
        normalize=normalize,
        bands=bands,
        lsh_weights=lsh_weights,
    )
    return _run(texts, spec, against, against_keys, lengths, progress)


def _run(
    texts: Sequence[str],
    spec: DedupSpec,
    against: Sequence[str] | None,
    against_keys: Sequence[str] | None,
    lengths: Sequence[int] | None,
    progress: bool,
) -> DedupResult:
    items = _as_str_list(texts, "texts")
    opts = core_options(spec)
    extra: dict[str, Any] = {
        "lengths": None if lengths is None else [int(x) for x in lengths],
    }
    if against is not None:
        extra["against"] = _as_str_list(against, "against")
        if against_keys is not None:
            extra["against_keys"] = _as_str_list(against_keys, "against_keys")

    def call(prog: Any) -> _core.DedupOutput:
        return _core.dedup_run(items, opts, progress=prog, **extra)

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


def _contents(messages: list[dict[str, Any]], roles: set[str] | None) -> list[str]:
    return [m["content"] for m in messages if roles is None or m["role"] in roles]


_USER, _BOT = {"user"}, {"assistant"}


def example_text(row: Mapping[str, Any], fields: Fields = "conversation") -> str:
    """The text that defines an example's identity, from a row in the loader's
    normalised form (``ladle.data.load``: chat, preference or text; every other format
    arrives as one of these, content already text).

    ``conversation``: every turn; ``user``: user turns (same question, different
    answers count as duplicates); ``assistant``: assistant turns; ``prompt``: user
    turns (of a preference row's prompt). A text row is all content: its text, whatever
    ``fields`` asks for.
    """
    if fields not in FIELDS:
        raise DataError(f"fields must be one of {FIELDS}, got {fields!r}")
    if "messages" in row:
        roles = {"conversation": None, "user": _USER, "prompt": _USER, "assistant": _BOT}[fields]
        return "\n".join(_contents(row["messages"], roles))
    if is_preference_row(row):
        prompt = _contents(row["prompt"], None if fields == "conversation" else _USER)
        answers = [a for reply in replies(row) for a in _contents(reply, _BOT)]
        parts = {
            "conversation": prompt + answers,
            "user": prompt,
            "prompt": prompt,
            "assistant": answers,
        }[fields]
        return "\n".join(parts)
    return str(row["text"])


def dedup_rows(
    rows: Sequence[Mapping[str, Any]],
    config: DedupSpec | Mapping[str, Any] | None = None,
    against_rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    locations: Sequence[str] | None = None,
    against_locations: Sequence[str] | None = None,
    sample: int = 20,
    progress: bool = False,
) -> DedupResult:
    """Deduplicate normalised rows (``ladle.data.load``'s form) per a ``data.dedup``
    spec. ``.keep`` says which rows stay, ``.removed()`` why the others went, and
    ``.report`` holds plain data for a report (config, counts, sample pairs).

    ``locations`` label rows in the report (e.g. ``train.jsonl:12``).
    """
    spec = dedup_spec(config)
    n = len(rows)
    base: dict[str, Any] = {"config": spec.model_dump(mode="json"), "rows_in": n}
    if not spec.enabled:
        return DedupResult(
            keep=np.ones(n, dtype=bool),
            cluster=np.arange(n, dtype=np.int64),
            pairs=[],
            contaminated=[],
            stats=_core.DedupStats(rows_in=n),
            report={**base, "rows_out": n, "enabled": False},
        )
    texts = [example_text(r, spec.fields) for r in rows]
    lengths = None
    if spec.keep == "longest":
        lengths = [len(example_text(r)) for r in rows]
    against = keys = None
    if against_rows is not None and spec.decontaminate:
        against = [example_text(r, spec.decontaminate_fields) for r in against_rows]
        if spec.decontaminate_fields != spec.fields:
            keys = [example_text(r, spec.decontaminate_fields) for r in rows]
    res = _run(texts, spec, against, keys, lengths, progress)
    eval_texts = against or []
    train_keys = keys or texts

    def snippet(s: str) -> str:
        return s if len(s) <= 200 else s[:197] + "..."

    def show(i: int) -> str | int:
        return locations[i] if locations is not None else i

    res.report = {
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
    return res


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
    "DedupResult",
    "DedupSpec",
    "NormalizeSpec",
    "Pair",
    "core_options",
    "dedup_rows",
    "dedup_spec",
    "deduplicate",
    "example_text",
    "minhash",
]
