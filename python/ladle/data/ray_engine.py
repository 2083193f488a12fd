"""``data.engine: ray``: ``ladle prep`` as a Ray Data application, byte for byte the
local engine's output (``ladle.data.prep``).

Stages, and where their data lives:

- **read** (``ladle.data.ray_read``): Ray tasks parse line-aligned byte ranges of JSONL
  files (other files whole) with the Rust row normaliser into Arrow blocks held in the
  object store; the driver gets per-block counts, bad-row reports and line numbers.
- **split, dedup, weights**: index arithmetic on the driver (the seeded eval split and
  ``weight`` sampling reuse the local engine's code); dedup runs on the cluster
  (``ladle.data.ray_dedup``).
- **tokenize**: ``map_batches`` on an actor pool; each actor loads the tokenizer and
  template once and sends whole Arrow batches to the Rust encoder. Tokens go to flat
  int32 files under the output folder (a shared path on a real cluster); the driver
  gets lengths and counts only.
- **pack**: best-fit decreasing over all lengths on the driver (the same ``pack``).
- **write**: one Ray task per Parquet shard gathers its documents from those files
  through memory maps and writes the shard with the local engine's writer.

Each row keeps its index in the local engine's order (``g``), and every decision is
made in that order, so retries, block boundaries and actor counts cannot change a byte.
Preference (DPO) data is tokenized by the local engine.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ladle._core import IGNORE_INDEX
from ladle.data.examples import Encoder, Overlong, encode_sft_flat, text_encoder
from ladle.data.load import Drops
from ladle.data.packing import assemble
from ladle.data.prep import (
    CHUNK_ROWS,
    SHARD_TOKENS,
    _apply_weights,
    _build,
    _Rows,
    check_eval_split,
    dataset_stats,
    finish,
    is_preference,
    packed_stats,
    plan_bins,
    split_off_eval,
)
from ladle.data.prepared import PrepManifest, write_packed
from ladle.data.ray_cluster import connect, resolve
from ladle.data.ray_read import ReadSplit, gather, ladle_cause, number_rows, read_all
from ladle.recipe.schema import Recipe

TOKENIZE_ROWS = 2048  # rows per actor call (bounds an actor's memory)
# Actors retry forever: a killed worker's batch is redone with the same result.
ACTOR_ARGS = {"max_restarts": -1, "max_task_retries": -1}
SLOW_BATCH_ENV = "LADLE_RAY_SLOW_BATCH"  # test hook: seconds an actor sleeps per batch


# --------------------------------------------------------------------------- tokenize


class _Recorder(Drops):
    """Drops whose location is a row number: the driver adds the real location."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[int, tuple[str, str, int]] = {}  # at most one per row

    def add(self, reason: str, where: str | None = None, n: int = 1) -> None:
        assert where is not None
        head, _, rest = where[1:].partition("\x00")
        self.events[int(head)] = (reason, rest, n)


class Tokenize:
    """The tokenize/mask actor: one tokenizer per actor, whole batches into Rust."""

    def __init__(
        self,
        model_dir: str,
        recipe: Recipe,
        work: str,
        numbering: tuple[Any, Any, Any],
        delay: float = 0.0,
    ) -> None:
        from ladle.data.prep import load_chat_tokenizer

        data = recipe.data
        chat = load_chat_tokenizer(Path(model_dir), data.template)
        enc_text, eos_id = text_encoder(chat, Path(model_dir))
        self.enc = Encoder(
            chat, enc_text, eos_id, data.max_length, data.train_on, data.overlong, data.strict
        )
        self.formats = [s.format for s in data.datasets]
        self.work = Path(work)
        self.delay = delay
        starts, ds_arr, want = numbering
        self.numbering = (starts, ds_arr, resolve(want))

    def _encode(
        self, rows: list[str], kinds: list[str], methods: dict[int, str] | None = None
    ) -> tuple[list[Any], _Recorder, Overlong]:
        rec, over = _Recorder(), Overlong()
        locs = [f"\x00{i}\x00" for i in range(len(rows))]
        docs = encode_sft_flat(self.enc, rows, kinds, locs, rec, over, methods)
        return docs.as_list(), rec, over

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        if self.delay:
            time.sleep(self.delay)
        # numbering and selection happen here, not in a task upstream: the pool then
        # holds every CPU without starving another stage
        batch = number_rows(batch, *self.numbering)
        g = batch.column("g").to_numpy()
        rows = batch.column("row").to_pylist()
        kinds = [
            "text" if self.formats[d] == "text" else "chat" for d in batch.column("ds").to_pylist()
        ]
        methods: dict[int, str] = {}  # how each chat row's mask was placed
        docs, rec, over = self._encode(rows, kinds, methods)
        n = len(rows)
        # Over-long handling is counted per occurrence of a row (weights repeat rows), so
        # it must be known per row; it is rare, so only a batch that had any re-encodes
        # its candidate rows one at a time.
        over_rows = np.zeros((n, 4), dtype=np.int64)
        if any(vars(over).values()):
            ndoc = np.bincount([i for i, _, _ in docs], minlength=n)
            longest = np.zeros(n, dtype=np.int64)
            for i, ids, _ in docs:
                longest[i] = max(longest[i], len(ids))
            for i in range(n):
                if i in rec.events or ndoc[i] > 1 or longest[i] >= self.enc.max_length:
                    _, _, o = self._encode([rows[i]], [kinds[i]])
                    over_rows[i] = (o.dropped, o.truncated, o.split, o.pieces)
        lens = [[] for _ in range(n)]  # type: list[list[int]]
        trained = [[] for _ in range(n)]  # type: list[list[int]]
        ids_parts, lab_parts = [], []
        for i, ids, labels in docs:
            lab = labels.copy()
            lab[0] = IGNORE_INDEX
            ids_parts.append(ids)
            lab_parts.append(lab)
            lens[i].append(len(ids))
            trained[i].append(int(np.count_nonzero(lab != IGNORE_INDEX)))
        name = f"tok-{int(g[0]):012d}" if n else "tok-empty"
        ids_all = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
        lab_all = np.concatenate(lab_parts) if lab_parts else np.zeros(0, np.int32)
        for suffix, arr in ((".ids", ids_all), (".labels", lab_all)):
            tmp = self.work / f"{name}{suffix}.{os.getpid()}.tmp"
            tmp.write_bytes(arr.astype(np.int32).tobytes())
            os.replace(tmp, self.work / f"{name}{suffix}")  # a retried batch rewrites it whole
        row_tokens = np.asarray([sum(x) for x in lens], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(row_tokens)[:-1]]).astype(np.int64)
        return pa.table(
            {
                "g": pa.array(g),
                "file": pa.array([name] * n),
                "offset": pa.array(first),
                "lens": pa.array(lens, pa.list_(pa.int64())),
                "trained": pa.array(trained, pa.list_(pa.int64())),
                "drop": pa.array([rec.events.get(i, ("", "", 0))[0] for i in range(n)]),
                "msg": pa.array([rec.events.get(i, ("", "", 0))[1] for i in range(n)]),
                "n": pa.array([rec.events.get(i, ("", "", 0))[2] for i in range(n)], pa.int64()),
                "over": pa.array(over_rows.tolist(), pa.list_(pa.int64())),
                "method": pa.array([methods.get(i, "") for i in range(n)], pa.string()),
            }
        )


@dataclass
class _Tokens:
    """Per-row tokenize results, indexed by ``g`` (small integers only)."""

    files: list[str]
    file: npt.NDArray[np.int32]
    offset: npt.NDArray[np.int64]
    ndoc: npt.NDArray[np.int64]
    doc_start: npt.NDArray[np.int64]  # CSR into lens/trained, indexed by g
    lens: npt.NDArray[np.int64]
    trained: npt.NDArray[np.int64]
    over: npt.NDArray[np.int64]
    drops: dict[int, tuple[str, str, int]]  # g -> (reason, message, count)
    methods: dict[int, str]  # g -> how its chat mask was placed (encoded chat rows only)


def _collect(out: Any, n: int, report: Any, total: int) -> _Tokens:
    files: dict[str, int] = {}
    file = np.full(n, -1, dtype=np.int32)
    offset = np.zeros(n, dtype=np.int64)
    ndoc = np.zeros(n, dtype=np.int64)
    over = np.zeros((n, 4), dtype=np.int64)
    parts: list[tuple[Any, Any, Any]] = []
    drops: dict[int, tuple[str, str, int]] = {}
    methods: dict[int, str] = {}
    done = 0
    report("tokenize", 0, total)
    try:
        for b in out.iter_batches(batch_format="pyarrow", batch_size=None):
            g = b.column("g").to_numpy()
            file[g] = [files.setdefault(f, len(files)) for f in b.column("file").to_pylist()]
            offset[g] = b.column("offset").to_numpy()
            lens_col = b.column("lens").combine_chunks()
            ndoc[g] = np.asarray(lens_col.value_lengths(), dtype=np.int64)
            flat_t = b.column("trained").combine_chunks().flatten()
            parts.append(
                (g, np.asarray(lens_col.flatten(), np.int64), np.asarray(flat_t, np.int64))
            )
            over[g] = np.asarray(b.column("over").to_pylist(), dtype=np.int64).reshape(-1, 4)
            for gi, d, m, k in zip(
                g,
                b.column("drop").to_pylist(),
                b.column("msg").to_pylist(),
                b.column("n").to_pylist(),
                strict=True,
            ):
                if d:
                    drops[int(gi)] = (d, m, k)
            for gi, how in zip(g, b.column("method").to_pylist(), strict=True):
                if how:
                    methods[int(gi)] = how
            done += len(g)
            report("tokenize", done, total)
    except Exception as e:
        raise ladle_cause(e) from e
    doc_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(ndoc, out=doc_start[1:])
    lens = np.zeros(int(doc_start[-1]), dtype=np.int64)
    trained = np.zeros_like(lens)
    for g, fl, ft in parts:
        # a batch's documents come row by row, each row's together: scatter them to
        # the row's slots [doc_start[g], doc_start[g + 1])
        c = ndoc[g]
        pos = np.repeat(doc_start[g] - (np.cumsum(c) - c), c) + np.arange(int(c.sum()))
        lens[pos] = fl
        trained[pos] = ft
    names = sorted(files, key=files.__getitem__)
    return _Tokens(names, file, offset, ndoc, doc_start, lens, trained, over, drops, methods)


# --------------------------------------------------------------------------- write


def _write_shard(
    work: str,
    files: list[str],
    doc_file: npt.NDArray[np.int64],
    doc_off: npt.NDArray[np.int64],
    doc_len: npt.NDArray[np.int64],
    bins: list[list[int]],
    out: str,
) -> str:
    """Gather this shard's documents from the token files and write the shard."""
    order = sorted({d for b in bins for d in b})
    where = {d: k for k, d in enumerate(order)}
    maps: dict[int, tuple[Any, Any]] = {}
    offsets = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(doc_len[order], out=offsets[1:])
    ids = np.empty(int(offsets[-1]), dtype=np.int32)
    labels = np.empty_like(ids)
    for k, d in enumerate(order):
        f = int(doc_file[d])
        if f not in maps:
            p = Path(work) / files[f]
            size = (p.with_suffix(".ids")).stat().st_size // 4
            maps[f] = (
                np.memmap(p.with_suffix(".ids"), dtype=np.int32, mode="r", shape=(size,)),
                np.memmap(p.with_suffix(".labels"), dtype=np.int32, mode="r", shape=(size,)),
            )
        a, n = int(doc_off[d]), int(doc_len[d])
        ids[offsets[k] : offsets[k + 1]] = maps[f][0][a : a + n]
        labels[offsets[k] : offsets[k + 1]] = maps[f][1][a : a + n]
    packed = assemble(ids, labels, offsets, [[where[d] for d in b] for b in bins])
    tmp = Path(out).with_name(Path(out).name + f".{os.getpid()}.tmp")
    write_packed(tmp, packed)
    os.replace(tmp, out)
    return Path(out).name


# --------------------------------------------------------------------------- build


def build(
    recipe: Recipe,
    model_dir: Path,
    chat: Any,
    files: list[list[Path]],
    tmp: Path,
    report: Any,
) -> PrepManifest:
    """``ladle.data.prep._build`` on a Ray cluster: the same manifest, the same shards.

    Each step below is the local engine's step, in its order, over row indices (``g``)
    instead of rows; the checks and the manifest are ``prep``'s own functions."""
    data = recipe.data
    if is_preference(recipe):
        return _build(recipe, model_dir, chat, files, tmp, report)
    connect()
    train, evals_read, stats = read_all(recipe, files, report)
    drops = Drops()
    per_ds = []
    for i, spec in enumerate(data.datasets):
        st = stats[i]
        name = ", ".join(spec.path) if isinstance(spec.path, list) else spec.path
        per_ds.append(dataset_stats(name, spec, files[i], st["read"], st["rows"], st["drops"]))
        drops.merge(st["drops"])
    import ray

    all_g = np.arange(train.n, dtype=np.int64)
    eval_g = np.arange(evals_read.n, dtype=np.int64)
    evals = _Rows(
        [r for t in ray.get(evals_read.refs) for r in t.column("row").to_pylist()],
        evals_read.ds_of(eval_g).tolist(),
        evals_read.locate(eval_g),
    )
    keep = all_g
    rng = random.Random(recipe.seed)
    rows_ds = train.dataset()
    if not evals.rows and data.eval_fraction:
        held_idx, keep_idx = split_off_eval(train.n, data.eval_fraction, rng)
        held = np.asarray(held_idx, dtype=np.int64)
        keep = np.asarray(keep_idx, dtype=np.int64)
        from ladle.data.ray_dedup import fetch_rows

        evals = _Rows(fetch_rows(rows_ds, held), train.ds_of(held).tolist(), train.locate(held))

    dedup_report: dict[str, Any] | None = None
    if data.dedup.enabled and len(keep):
        keep, dedup_report = _dedup(recipe, rows_ds, train, keep, evals, drops, report)
    evals = check_eval_split(recipe, evals, drops)

    # weights: the local engine's own selection, over the rows left in ``keep``
    weighted = _apply_weights(recipe, train.ds_of(keep), rng)
    sel = keep if weighted is None else keep[np.asarray(weighted, dtype=np.int64)]

    work = tmp / ".work"
    work.mkdir()
    unique = np.unique(sel)
    want = ray.put(np.isin(all_g, unique))

    workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    out = train.blocks().map_batches(
        Tokenize,
        fn_constructor_args=(
            str(model_dir),
            recipe,
            str(work),
            (*train.numbering(), want),
            float(os.environ.get(SLOW_BATCH_ENV, "0") or 0),
        ),
        batch_format="pyarrow",
        batch_size=TOKENIZE_ROWS,
        compute=ray.data.ActorPoolStrategy(size=workers),
        **ACTOR_ARGS,
    )
    tokens = _collect(out, train.n, report, len(unique))
    stats_sft = _pack_and_write(recipe, tokens, train, sel, tmp, work, drops, report)
    stats_sft["overlong"] = stats_sft.pop("over")
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    return finish(recipe, model_dir, tmp, per_ds, drops, dedup_report, stats_sft, evals)


def _dedup(
    recipe: Recipe,
    rows_ds: Any,
    train: ReadSplit,
    keep: npt.NDArray[np.int64],
    evals: _Rows,
    drops: Drops,
    report: Any,
) -> tuple[npt.NDArray[np.int64], dict[str, Any]]:
    """``ladle.data.prep._dedup`` with the work on the cluster (``ray_dedup``): the rows
    ``keep`` (their ``g``) in, the surviving ``g`` and the report out."""
    import ray

    from ladle.data.ray_dedup import dedup_dataset

    cfg = recipe.data.dedup
    against = [json.loads(r) for r in evals.rows] if (cfg.decontaminate and evals.rows) else None
    subset = rows_ds
    if len(keep) != train.n:  # renumber the rows left after the eval split 0..len(keep)-1
        subset = _only(rows_ds, ray.put(keep))

    def locate(pos: npt.NDArray[np.int64]) -> list[str]:
        return train.locate(keep[pos])

    res = dedup_dataset(
        subset,
        len(keep),
        cfg,
        locate=locate,
        against_rows=against,
        against_locations=evals.loc if against is not None else None,
        progress=report,
    )
    removed = res.removed()
    locs = locate(np.asarray(list(removed), dtype=np.int64))
    for reason, loc in zip(removed.values(), locs, strict=True):
        drops.add(reason, loc)
    return keep[np.asarray(res.keep, dtype=bool)], res.report


def _keep_rows(batch: Any, keep: Any) -> Any:
    import pyarrow as pa

    keep = resolve(keep)
    g = batch.column("g").to_numpy()
    pos = np.minimum(np.searchsorted(keep, g), max(len(keep) - 1, 0))
    hit = keep[pos] == g if len(keep) else np.zeros(len(g), dtype=bool)
    out = batch.filter(pa.array(hit))
    return out.set_column(out.schema.get_field_index("g"), "g", pa.array(pos[hit]))


def _only(ds: Any, keep: Any) -> Any:
    """The rows of ``ds`` whose ``g`` is in the broadcast sorted array ``keep``, with
    ``g`` renumbered to the row's position in ``keep``."""
    return ds.map_batches(_keep_rows, fn_args=(keep,), batch_format="pyarrow")


def _pack_and_write(
    recipe: Recipe,
    tok: _Tokens,
    train: ReadSplit,
    sel: npt.NDArray[np.int64],
    tmp: Path,
    work: Path,
    drops: Drops,
    report: Any,
) -> dict[str, Any]:
    """``_prep_sft`` from the per-row results: replay the rows in the local engine's
    order (repeats included), pack, and write the shards in parallel."""
    import ray

    data = recipe.data
    # drops, in the order the local engine records them: per CHUNK_ROWS chunk of the
    # selection, template errors first (they come out of one batch call), then the rest
    hits = [p for p, g in enumerate(sel.tolist()) if g in tok.drops]
    hits.sort(key=lambda p: (p // CHUNK_ROWS, tok.drops[int(sel[p])][0] != "template_error", p))
    if hits:
        locs = train.locate(sel[hits])
        for p, loc in zip(hits, locs, strict=True):
            reason, msg, k = tok.drops[int(sel[p])]
            drops.add(reason, f"{loc}{msg}", k)
    over_sum = tok.over[sel].sum(axis=0) if len(sel) else np.zeros(4, np.int64)
    over = Overlong(*(int(x) for x in over_sum))

    counts = tok.ndoc[sel]
    doc_rows = np.repeat(sel, counts)  # the row of each document, in document order
    first = np.repeat(tok.doc_start[sel], counts)
    within = np.arange(len(doc_rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    doc_idx = first + within
    lens = tok.lens[doc_idx]
    doc_off = tok.offset[doc_rows] + _within_row_offset(tok, doc_rows, doc_idx)
    doc_file = tok.file[doc_rows].astype(np.int64)
    doc_ds = train.ds_of(doc_rows)
    trained_total = int(tok.trained[doc_idx].sum())
    rows_out: dict[int, int] = {}
    for d, c in zip(*np.unique(train.ds_of(sel[counts > 0]), return_counts=True), strict=True):
        rows_out[int(d)] = int(c)

    total = int(lens.sum())
    bins = plan_bins(recipe, lens, report)
    shards: list[str] = []
    if total:
        task = ray.remote(_write_shard)
        per_shard = max(1, SHARD_TOKENS // data.max_length)
        refs = []
        files_ref = ray.put(tok.files)
        for s, a in enumerate(range(0, len(bins), per_shard)):
            part = bins[a : a + per_shard]
            docs = np.asarray(sorted({d for b in part for d in b}), dtype=np.int64)
            remap = {int(d): k for k, d in enumerate(docs)}
            name = f"train-{s:05d}.parquet"
            refs.append(
                task.remote(
                    str(work),
                    files_ref,
                    doc_file[docs],
                    doc_off[docs],
                    lens[docs],
                    [[remap[d] for d in b] for b in part],
                    str(tmp / name),
                )
            )
            shards.append(name)
        gather(refs, "write", report)
    mask_by_ds: dict[int, set[str]] = {}  # as the local engine: over every encoded row
    for g in np.unique(sel).tolist():
        if (how := tok.methods.get(g)) is not None:
            mask_by_ds.setdefault(int(train.ds_of(np.asarray([g]))[0]), set()).add(how)
    stats = packed_stats(
        data.max_length,
        lens,
        len(bins),
        trained_total,
        shards,
        doc_ds.tolist(),
        rows_out,
        mask_by_ds,
    )
    return {**stats, "over": vars(over)}


def _within_row_offset(
    tok: _Tokens, doc_rows: npt.NDArray[np.int64], doc_idx: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Token offset of each document inside its row's run in the token file."""
    csum = np.zeros(len(tok.lens) + 1, dtype=np.int64)
    np.cumsum(tok.lens, out=csum[1:])
    return csum[doc_idx] - csum[tok.doc_start[doc_rows]]


__all__ = ["Tokenize", "build"]
