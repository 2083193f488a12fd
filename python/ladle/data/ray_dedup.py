"""Dedup and decontamination on a Ray cluster, with the same decisions as one machine.

The expensive part of dedup is sketching every row (text extraction, normalisation,
MinHash); the decisions need only the rows that share an LSH band with another row or
with an eval row. So:

1. ``map_batches`` sketches each block: MinHash signatures from the Rust core
   (``ladle.dedup.minhash``), cut into the pipeline's band keys (the same mixing as
   ``rust/src/dedup/lsh.rs``). Eval keys are computed once and broadcast; a row that
   hits one is a decontamination candidate.
2. A shuffle keyed on the band key (``groupby(...).map_groups``) finds the buckets with
   two or more rows: the LSH candidates.
3. Only those rows travel to the driver, where the Rust core's own pipeline
   (``ladle.dedup.dedup_rows``) verifies them by true Jaccard, clusters them (connected
   components, smallest index as root) and picks the survivors.

Why step 3 gives the local engine's answer exactly: a row outside every multi-row bucket
and unmatched by an eval key is never in a candidate pair, so one machine keeps it
unchanged; a bucket of the local run is a bucket here with the same members in the same
order (indices only shift monotonically), so its star/chain candidate pairs, the
verified edges, the components and the kept row are the same. Exact copies share every
band (equal texts have equal signatures); rows with no words are sent along so the
report counts them. The driver holds the candidate rows, not the corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ladle import _core
from ladle.data.ray_cluster import resolve
from ladle.dedup import (
    DedupResult,
    DedupSpec,
    Pair,
    core_options,
    dedup_rows,
    dedup_spec,
    example_text,
    minhash,
)
from ladle.errors import DataError
from ladle.recipe.schema import NormalizeSpec

Progress = Callable[[str, int, int], None]
Locate = Callable[[npt.NDArray[np.int64]], list[str]]
# band_keys() in rust/src/dedup/lsh.rs
_SEED = np.uint64(0x243F6A8885A308D3)
_MUL = np.uint64(0x9E3779B97F4A7C15)


def _bands(cfg: DedupSpec) -> tuple[int, int]:
    """(bands, rows) exactly as rust/src/dedup/pipeline.rs chooses them."""
    if cfg.bands is not None:
        return cfg.bands
    if not cfg.near or cfg.threshold >= 1.0:
        return 1, cfg.num_perm
    weights = cfg.lsh_weights or ((0.1, 0.9) if cfg.verify else (0.5, 0.5))
    b, r = _core.dedup_optimal_params(cfg.threshold, cfg.num_perm, weights[0], weights[1])
    return int(b), int(r)


def band_keys(sig: npt.NDArray[Any], bands: int, rows: int) -> npt.NDArray[np.uint64]:
    """One key per (row, band), shape ``(n, bands)``; equals the Rust pipeline's keys."""
    s = sig.astype(np.uint64)
    out = np.empty((len(s), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(len(s), _SEED ^ np.uint64(band), dtype=np.uint64)
            for c in range(band * rows, (band + 1) * rows):
                h = (h ^ s[:, c]) * _MUL
                h ^= h >> np.uint64(29)
            out[:, band] = h ^ (h >> np.uint64(32))
    return out


def _text_key(texts: list[str], cfg: DedupSpec) -> tuple[npt.NDArray[np.uint64], list[bool]]:
    """A 64-bit hash of each normalised text (exact copies), and which texts are empty."""
    norm = texts
    if cfg.normalize is not False:
        opts = core_options(cfg)
        norm = _core.dedup_normalize(texts, **{k: opts[k] for k in NormalizeSpec.model_fields})
    keys = np.array(
        [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest()) for t in norm],
        dtype=np.uint64,
    )
    return keys, [not t.split() for t in norm]


def sketch_keys(
    texts: list[str], cfg: DedupSpec
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """Bucket keys per text, shape ``(n, k)``, and which texts have no shingles.

    Two texts that the Rust pipeline could pair (same band key, or the same normalised
    text when only exact dedup runs) share a key here."""
    if cfg.near:
        bands, rows = _bands(cfg)
        sig = minhash(texts, cfg.num_perm, cfg.ngram, cfg.scheme, cfg.seed, cfg.normalize)
        # An empty shingle set keeps datasketch's all-max signature (2**32 - 1 in every
        # scheme, also in the legacy scheme's uint64 dtype).
        empty = (sig == 0xFFFFFFFF).all(axis=1) if len(sig) else np.zeros(0, bool)
        return band_keys(sig, bands, rows), np.asarray(empty, dtype=bool)
    keys, empty = _text_key(texts, cfg)
    return keys[:, None], np.asarray(empty, dtype=bool)


def _texts(rows: Sequence[str], fields: str) -> tuple[list[str], list[bool]]:
    """Identity texts of JSON rows; a row whose text cannot be found is flagged (the
    driver's exact run raises its located error)."""
    out, bad = [], []
    for r in rows:
        try:
            out.append(example_text(json.loads(r), fields))  # type: ignore[arg-type]
            bad.append(False)
        except (DataError, ValueError):
            out.append("")
            bad.append(True)
    return out, bad


def _sketch_batch(batch: dict[str, Any], cfg: DedupSpec, eval_keys: Any) -> dict[str, Any]:
    """Rows -> (key, g) pairs for the bucket shuffle; forced rows carry ``force``."""
    eval_keys = resolve(eval_keys)
    g = np.asarray(batch["g"], dtype=np.int64)
    rows = list(batch["row"])
    texts, bad = _texts(rows, cfg.fields)
    keys, empty = sketch_keys(texts, cfg)
    force = np.asarray(bad, dtype=bool) | empty
    if eval_keys is not None and len(eval_keys):
        probe = keys
        if cfg.decontaminate_fields != cfg.fields:
            ptexts, pbad = _texts(rows, cfg.decontaminate_fields)
            probe, _ = sketch_keys(ptexts, cfg)
            force |= np.asarray(pbad, dtype=bool)
        force |= np.isin(probe, eval_keys).any(axis=1)
    k = keys.shape[1]
    return {
        "key": np.concatenate([keys.reshape(-1), np.zeros(int(force.sum()), np.uint64)]),
        "g": np.concatenate([np.repeat(g, k), g[force]]),
        "force": np.concatenate([np.zeros(len(g) * k, bool), np.ones(int(force.sum()), bool)]),
    }


def _partition(keyed: Any, parts: int) -> tuple[Any, ...]:
    """Map side of the bucket shuffle: the forced rows, then ``parts`` arrays of
    (key, row) pairs split by ``key % parts``."""
    key = keyed.column("key").to_numpy()
    g = keyed.column("g").to_numpy().astype(np.uint64)
    force = keyed.column("force").to_numpy(zero_copy_only=False)
    slot = key % np.uint64(parts)
    out = [g[force].astype(np.int64)]
    for p in range(parts):
        m = (slot == p) & ~force
        out.append(np.stack([key[m], g[m]]))
    return tuple(out)


def _shared(*pairs: Any) -> npt.NDArray[np.int64]:
    """Reduce side: the rows of every bucket that holds two or more distinct rows."""
    kg = np.concatenate([np.asarray(p).reshape(2, -1) for p in pairs], axis=1)
    if not kg.shape[1]:
        return np.zeros(0, np.int64)
    kg = np.unique(kg, axis=1)  # sorted by key, then row; each (key, row) once
    same = kg[0, 1:] == kg[0, :-1]
    hit = np.zeros(kg.shape[1], dtype=bool)
    hit[1:] |= same
    hit[:-1] |= same
    return np.unique(kg[1, hit].astype(np.int64))


def candidates(ds: Any, cfg: DedupSpec, eval_texts: list[str] | None) -> npt.NDArray[np.int64]:
    """Sorted indices (``g``) of the rows the exact pipeline must see (see module doc)."""
    import ray

    eval_keys = None
    if eval_texts:
        ek, eempty = sketch_keys(eval_texts, cfg)
        eval_keys = ray.put(np.unique(ek[~eempty].reshape(-1)))
    keyed = ds.map_batches(
        _sketch_batch, fn_args=(cfg, eval_keys), batch_format="numpy", batch_size=4096
    )
    # The shuffle keyed on the bucket is a map/reduce of plain Ray tasks over the
    # sketched blocks: Ray Data's groupby cost ~25 s of fixed overhead for 70k keys on
    # the 2-core test machine; this costs one task per block and one per partition.
    parts = max(1, int(ray.cluster_resources().get("CPU", 1)))
    split: Any = ray.remote(num_returns=parts + 1)(_partition)
    mapped = [split.remote(ref, parts) for ref in keyed.to_arrow_refs()]
    if not mapped:
        return np.zeros(0, np.int64)
    reduce: Any = ray.remote(_shared)
    forced = [m[0] for m in mapped]
    shared = [reduce.remote(*[m[p + 1] for m in mapped]) for p in range(parts)]
    got = [np.asarray(x, dtype=np.int64) for x in ray.get(forced + shared)]
    return np.unique(np.concatenate(got))


def fetch_rows(ds: Any, gs: npt.NDArray[np.int64]) -> list[str]:
    """The JSON rows with indices ``gs`` (sorted), in that order."""
    import ray

    if not len(gs):
        return []
    want = ray.put(gs)

    def pick(batch: dict[str, Any], want: Any) -> dict[str, Any]:
        g = np.asarray(batch["g"], dtype=np.int64)
        m = np.isin(g, resolve(want))
        return {"g": g[m], "row": np.asarray(batch["row"], dtype=object)[m]}

    got: dict[int, str] = {}
    for b in ds.map_batches(pick, fn_args=(want,), batch_format="numpy").iter_batches(
        batch_format="numpy"
    ):
        got.update(zip((int(x) for x in b["g"]), b["row"], strict=True))
    return [got[int(g)] for g in gs]


def dedup_dataset(
    ds: Any,
    n: int,
    config: DedupSpec | Mapping[str, Any] | None,
    *,
    locate: Locate,
    against_rows: Sequence[Mapping[str, Any]] | None = None,
    against_locations: Sequence[str] | None = None,
    sample: int = 20,
    progress: Progress | None = None,
) -> DedupResult:
    """Deduplicate the ``n`` rows of ``ds`` (columns ``g``: 0..n-1, ``row``: JSON text).

    Returns what ``ladle.dedup.dedup_rows`` gives for the whole set on one machine: the
    same keep mask, clusters, pairs and report. ``locate(indices)`` labels rows as the
    local engine does (``file:line``).
    """
    spec = dedup_spec(config)
    report = progress or (lambda stage, done, total: None)
    if not spec.enabled:
        # a disabled run reads only the number of rows: n placeholders stand in for them
        return dedup_rows([{}] * n, spec)
    against = None
    if against_rows is not None and spec.decontaminate:
        against = [example_text(r, spec.decontaminate_fields) for r in against_rows]
    report("dedup sketch + buckets", 0, n)
    gs = candidates(ds, spec, against)
    report("dedup sketch + buckets", n, n)
    report("dedup verify + cluster", 0, len(gs))
    sub = dedup_rows(
        [json.loads(r) for r in fetch_rows(ds, gs)],
        spec,
        against_rows,
        locations=locate(gs),
        against_locations=against_locations,
        sample=sample,
    )
    report("dedup verify + cluster", len(gs), len(gs))
    return _lift(sub, gs, n)


def _lift(sub: DedupResult, gs: npt.NDArray[np.int64], n: int) -> DedupResult:
    """The result over the candidate rows ``gs`` as the result over all ``n`` rows: every
    other row is unique and kept (its own cluster). Indices map monotonically, so the
    order of pairs (and the report's sample) is the local one."""
    keep = np.ones(n, dtype=bool)
    keep[gs] = sub.keep
    cluster = np.arange(n, dtype=np.int64)
    cluster[gs] = np.where(sub.cluster >= 0, gs[np.maximum(sub.cluster, 0)], -1)
    rows_out = n - int((~np.asarray(sub.keep, dtype=bool)).sum())
    sizes = {"rows_in": n, "rows_out": rows_out}
    return DedupResult(
        keep=keep,
        cluster=cluster,
        pairs=[Pair(int(gs[p.removed]), int(gs[p.kept]), p.similarity) for p in sub.pairs],
        contaminated=[Pair(int(gs[p.removed]), p.kept, p.similarity) for p in sub.contaminated],
        stats=_core.DedupStats(**{**sub.stats.to_dict(), **sizes}),
        report={**sub.report, **sizes},
    )


def rows_dataset(rows: Sequence[Mapping[str, Any]], block_rows: int = 16_384) -> Any:
    """Rows held by this process as a Ray dataset (``g``, ``row``: JSON) in blocks."""
    import pyarrow as pa
    import ray.data

    texts = [json.dumps(r, ensure_ascii=False, default=str) for r in rows]
    tables = [
        pa.table(
            {
                "g": pa.array(np.arange(a, min(a + block_rows, len(texts)), dtype=np.int64)),
                "row": pa.array(texts[a : a + block_rows], pa.large_string()),
            }
        )
        for a in range(0, len(texts), block_rows)
    ]
    return ray.data.from_arrow(tables) if tables else ray.data.from_items([])


def dedup_rows_ray(
    rows: Sequence[Mapping[str, Any]],
    config: DedupSpec | Mapping[str, Any] | None = None,
    against_rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    locations: Sequence[str] | None = None,
    against_locations: Sequence[str] | None = None,
    sample: int = 20,
    progress: bool = False,
    block_rows: int = 16_384,
) -> DedupResult:
    """``ladle.dedup.dedup_rows`` with the sketching and bucketing on the Ray cluster:
    the same ``DedupResult`` (keep mask, clusters, pairs, report) (``ladle dedup
    --engine ray``)."""
    from ladle.data.ray_cluster import connect

    connect(quiet=not progress)
    rows = list(rows)

    def locate(gs: npt.NDArray[np.int64]) -> list[Any]:
        # without locations the local report names rows by index, so these do too
        return [locations[int(g)] for g in gs] if locations is not None else [int(g) for g in gs]

    return dedup_dataset(
        rows_dataset(rows, block_rows),
        len(rows),
        config,
        locate=locate,
        against_rows=against_rows,
        against_locations=against_locations,
        sample=sample,
    )
