"""``ladle prep``: load -> dedup -> tokenize + mask -> pack -> Parquet shards + manifest.

The output folder is content-addressed (``$LADLE_HOME/prep/<fingerprint>``): the
fingerprint covers the input bytes, the recipe's data section, the seed, the tokenizer
files and template, and the code that prepares (the built extension and the data
engine's Python sources, not a version string that stays put while the code changes),
so a repeated prep is a lookup and any change that could alter a token rebuilds. A hit only checks that ``manifest.json`` exists:
the manifest is written last, inside a temporary folder renamed into place
(``atomic_dir``), so its presence proves the entry is complete. File fingerprints are
remembered by (path, size, mtime_ns), so a hit never rereads a large corpus.

Memory stays bounded by the chunk size, not the corpus: the loaded rows are spooled to
a file a block at a time (``ladle.data.spool``) and read back a chunk at a time, rows
are tokenized into flat int32 files on disk, packing needs only the lengths, and packed
rows are assembled shard by shard from those files, read document by document.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import ladle
from ladle import _core
from ladle._core import IGNORE_INDEX
from ladle.data.chat import mask_method_summary
from ladle.data.examples import (
    Encoder,
    Overlong,
    encode_labelled,
    encode_preference,
    encode_sft_flat,
    text_encoder,
)
from ladle.data.load import Drops, load_dataset, resolve_files
from ladle.data.packing import assemble_files, pack
from ladle.data.prepared import (
    MANIFEST,
    DatasetStats,
    EvalStats,
    PrepManifest,
    TrainStats,
    eval_record,
    write_eval,
    write_labelled,
    write_packed,
    write_preference,
)
from ladle.data.spool import Rows, RowSpool
from ladle.errors import DataError
from ladle.models import TOKENIZER_FILES
from ladle.paths import atomic_dir, atomic_write_text, ladle_home
from ladle.recipe.schema import PREFERENCE_METHODS, DatasetSpec, Recipe

CHUNK_ROWS = 8192  # rows tokenized per call (bounds the Python objects alive at once)
SHARD_TOKENS = 1 << 24  # packed tokens per train shard (~16M tokens, ~200 MB in memory)
WRITE_THREADS = max(1, min(2, os.cpu_count() or 1))  # shards assembled and written at once
LOCK = ".lock"  # held (flock) by the prep filling a temporary folder
Progress = Callable[[str, int, int], None]


class Stages:
    """Wall-clock seconds per prep stage (``with stages("encode"): ...``; a stage entered
    twice adds up), recorded in the manifest and printed by ``ladle prep --verbose`` so
    a slow prep shows where its time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@dataclass
class PrepResult:
    """Where the prepared data lives and what ``manifest.json`` says about it."""

    path: Path
    fingerprint: str
    cache_hit: bool
    manifest: PrepManifest = field(repr=False)
    seconds: float = 0.0

    @property
    def train_files(self) -> list[Path]:
        return [self.path / f for f in self.manifest.train.shards]

    @property
    def eval_files(self) -> list[Path]:
        return [self.path / f for f in self.manifest.eval.shards]


# --------------------------------------------------------------------------- cache key


def _file_fingerprints(paths: list[Path]) -> list[str]:
    """xxh3 of each file, remembered by (path, size, mtime_ns) so a hit reads no bytes."""
    memo_path = ladle_home() / "prep" / "file-fingerprints.json"
    try:
        memo: dict[str, str] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    out, changed = [], False
    for p in paths:
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        fp = memo.get(key)
        if fp is None:
            fp = _core.fingerprint_files([str(p)])
            memo[key] = fp
            changed = True
        out.append(fp)
    if changed:
        atomic_write_text(memo_path, json.dumps(memo))
    return out


def _tokenizer_files(model_dir: Path, template: str | None) -> list[Path]:
    files = [model_dir / n for n in TOKENIZER_FILES if (model_dir / n).is_file()]
    if template and "\n" not in template and Path(template).is_file():
        files.append(Path(template))
    return files


def code_files() -> list[Path]:
    """The code whose change can change prepared data: the built Rust extension (every
    kernel: loading, templates, tokenizing, dedup, packing) and the data engine's Python."""
    import ladle.dedup

    here = Path(__file__).parent
    return [
        Path(_core.__file__ or ""),
        Path(ladle.dedup.__file__ or ""),
        *sorted(here.glob("*.py")),
    ]


def fingerprint(recipe: Recipe, model_dir: Path) -> tuple[str, list[list[Path]]]:
    """The cache key of a recipe's prepared data, and each dataset's resolved files."""
    files = [resolve_files(ds) for ds in recipe.data.datasets]
    flat = [f for group in files for f in group]
    key = {
        "inputs": _file_fingerprints(flat),
        "tokenizer": _file_fingerprints(_tokenizer_files(model_dir, recipe.data.template)),
        # the engine changes where the work runs, never a byte of its output
        "data": recipe.data.model_dump(mode="json", exclude={"engine"}),
        "method": recipe.train.method,
        "seed": recipe.seed,
        "code": _file_fingerprints(code_files()),
    }
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return _core.fingerprint_bytes(text.encode())[:24], files


def prep_dir(fp: str) -> Path:
    return ladle_home() / "prep" / fp


# --------------------------------------------------------------------------- pipeline


def load_chat_tokenizer(model_dir: Path, template: str | None) -> Any:
    """The Rust chat tokenizer (ladle.data.chat)."""
    from ladle.data.chat import ChatTokenizer

    return ChatTokenizer.from_pretrained(str(model_dir), template=template)


def prep(
    recipe: Recipe,
    *,
    force: bool = False,
    tokenizer: Any = None,
    progress: Progress | None = None,
) -> PrepResult:
    """Prepare a recipe's data (or find it in the cache) and return where it is.

    ``tokenizer`` overrides the chat tokenizer (anything with ``ChatTokenizer``'s
    ``encode``/``encode_batch``); ``progress(stage, done, total)`` is called as work
    advances (the CLI draws a bar with it).
    """
    from ladle.demo import ensure_generated
    from ladle.models import resolve_model

    t0 = time.perf_counter()
    ensure_generated(recipe)  # builtin generators write their file once, then it is data
    model_dir = Path(resolve_model(recipe.model.base))
    fp, files = fingerprint(recipe, model_dir)
    out = prep_dir(fp)
    if (out / MANIFEST).is_file() and not force:
        with contextlib.suppress(DataError):  # unreadable or older layout: rebuild it
            manifest = PrepManifest.read(out)
            return PrepResult(out, fp, True, manifest, time.perf_counter() - t0)
    t_build = time.perf_counter()
    chat: Any = tokenizer
    if chat is None:
        # The tokenizer (tokenizer.json, the template, the pre-tokenizer's class table: a
        # few tenths of a second, GIL released) loads on a thread while the data is read;
        # the build waits for it where it first needs it (its "tokenizer" stage).
        pool = ThreadPoolExecutor(1)
        chat = pool.submit(load_chat_tokenizer, model_dir, recipe.data.template)
        pool.shutdown(wait=False)
    report = progress or (lambda stage, done, total: None)
    clear_stale_temp()
    lock: int | None = None
    try:
        with atomic_dir(out, replace=True) as tmp:
            # Held until the folder is renamed into place: a prep that finds this folder
            # unlocked knows its owner died (SIGKILL) and removes it at once.
            lock = _lock(tmp / LOCK)
            if recipe.data.engine == "ray":
                from ladle.data.ray_engine import build

                t_tok = time.perf_counter()
                chat = _ready(chat)
                t_tok = time.perf_counter() - t_tok
                manifest = build(recipe, model_dir, chat, files, tmp, report)
                manifest.stages = {"tokenizer": t_tok, **manifest.stages}
            else:
                manifest = _build(recipe, model_dir, chat, files, tmp, report)
            manifest.fingerprint = fp
            manifest.stages = {**manifest.stages, "total": time.perf_counter() - t_build}
            manifest.write(tmp)
    finally:
        if lock is not None:
            os.close(lock)
    return PrepResult(out, fp, False, manifest, time.perf_counter() - t0)


def _ready(chat: Any) -> Any:
    """The chat tokenizer, once its loading thread (if any) is done; its error, if any."""
    return chat.result() if isinstance(chat, Future) else chat


def _lock(path: Path, *, wait: bool = True) -> int | None:
    """An exclusive ``flock`` on ``path`` (its fd), or None when another process holds it."""
    import fcntl

    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@dataclass
class _Rows:
    """Eval rows in memory (an eval split is small; the train split stays spooled, as
    ``ladle.data.spool.Rows``): JSON text, dataset index and location of each."""

    rows: list[str] = field(default_factory=list)  # normalised rows as JSON text
    ds: list[int] = field(default_factory=list)
    loc: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, rows: Rows) -> _Rows:
        return cls(rows.texts(), rows.ds.tolist(), list(rows.locations()))

    def subset(self, idx: list[int]) -> _Rows:
        return _Rows(
            [self.rows[i] for i in idx], [self.ds[i] for i in idx], [self.loc[i] for i in idx]
        )


def _build(
    recipe: Recipe,
    model_dir: Path,
    chat: Any,
    files: list[list[Path]],
    tmp: Path,
    report: Progress,
) -> PrepManifest:
    work = tmp / ".work"  # the row spool and the token files; removed before returning
    work.mkdir()
    try:
        with RowSpool(work / "rows.jsonl") as spool:
            return _build_spooled(recipe, model_dir, chat, spool, tmp, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_spooled(
    recipe: Recipe,
    model_dir: Path,
    chat: Any,
    spool: RowSpool,
    tmp: Path,
    report: Progress,
) -> PrepManifest:
    data = recipe.data
    stages = Stages()
    report("load", 0, len(data.datasets))
    with stages("load"):
        loaded = [
            load_dataset(spec, i, strict=data.strict, sink=spool.sink(i))
            for i, spec in enumerate(data.datasets)
        ]
        spool.seal()
    report("load", len(data.datasets), len(data.datasets))
    drops = Drops()
    per_ds: list[DatasetStats] = []
    for d in loaded:
        per_ds.append(dataset_stats(d.name, d.spec, d.files, d.rows_read, d.kept, d.drops))
        drops.merge(d.drops)
    is_eval = np.asarray([s.split == "eval" for s in data.datasets], bool)
    in_eval = is_eval[spool.ds] if len(spool) else np.zeros(0, bool)
    train = Rows(spool, np.flatnonzero(~in_eval).astype(np.int64))
    evals = _Rows.of(Rows(spool, np.flatnonzero(in_eval).astype(np.int64)))
    rng = random.Random(recipe.seed)
    if not evals.rows and data.eval_fraction:
        held, keep = split_off_eval(len(train), data.eval_fraction, rng)
        evals, train = _Rows.of(train.subset(held)), train.subset(keep)

    dedup_report: dict[str, Any] | None = None
    if data.dedup.enabled and len(train):
        with stages("dedup"):
            train, evals, dedup_report = _dedup(recipe, train, evals, drops)
    evals = check_eval_split(recipe, evals, drops)

    weighted = _apply_weights(recipe, train.ds, rng)
    if weighted is not None:
        train = train.subset(weighted)
    is_dpo = is_preference(recipe)
    with stages("tokenizer"):
        chat = _ready(chat)
    enc_text, eos_id = text_encoder(chat, model_dir)
    enc = Encoder(
        chat, enc_text, eos_id, data.max_length, data.train_on, data.overlong, data.strict
    )
    over = Overlong()
    stats: dict[str, Any]
    if is_dpo:
        with stages("encode"):
            stats = _prep_preference(enc, train, tmp, drops, over, report, recipe.train.method)
    else:
        stats = _prep_sft(recipe, enc, train, tmp, drops, over, report, stages)
    stats["overlong"] = vars(over)
    with stages("eval"):
        manifest = finish(recipe, model_dir, tmp, per_ds, drops, dedup_report, stats, evals)
    manifest.stages = stages.seconds
    return manifest


def split_off_eval(n: int, fraction: float, rng: random.Random) -> tuple[list[int], list[int]]:
    """``eval_fraction``'s seeded split of ``n`` train rows: (held out, kept), sorted."""
    order = list(range(n))
    rng.shuffle(order)
    n_eval = max(1, round(n * fraction)) if order else 0
    return sorted(order[:n_eval]), sorted(order[n_eval:])


def is_preference(recipe: Recipe) -> bool:
    """Whether the train split is preference data (DPO/ORPO pairs, KTO labelled
    completions), not SFT documents."""
    return recipe.train.method in PREFERENCE_METHODS or any(
        d.format == "preference" for d in recipe.data.datasets if d.split == "train"
    )


def dataset_stats(
    name: str, spec: DatasetSpec, files: list[Path], rows_read: int, rows: int, drops: Drops
) -> DatasetStats:
    """A loaded dataset's manifest entry; a dataset with no usable rows is an error."""
    if not rows:
        cols = f", columns {spec.columns}" if spec.columns else ""
        raise DataError(
            f"dataset {name}: no usable rows ({rows_read} read; drops: "
            f"{_drop_summary(drops)}); check its `format` ({spec.format}){cols}"
        )
    return DatasetStats.model_validate(
        {
            "path": name,
            "format": spec.format,
            "split": spec.split,
            "files": [str(f) for f in files],
            "rows_in": rows_read,
            "rows_loaded": rows,
            "bad": drops.to_json(),
        }
    )


def check_eval_split(recipe: Recipe, evals: _Rows, drops: Drops) -> _Rows:
    """The eval rows the evaluator can score (``_check_eval_rows``); an empty eval split
    that the recipe evaluates on is an error."""
    evals = _check_eval_rows(evals, drops, recipe.data.strict)
    if not evals.rows and recipe.has_eval_split() and recipe.evaluate.enabled:
        raise DataError(
            "the eval split is empty after loading and dedup (drops: "
            f"{_drop_summary(drops)}); add eval rows, or set evaluate.enabled: false"
        )
    return evals


def finish(
    recipe: Recipe,
    model_dir: Path,
    tmp: Path,
    per_ds: list[DatasetStats],
    drops: Drops,
    dedup_report: dict[str, Any] | None,
    stats: dict[str, Any],
    evals: _Rows,
) -> PrepManifest:
    """After the train shards: check that examples are left, write the eval shard and
    assemble the manifest (``stats``: ``_prep_sft``/``_prep_preference``'s, with
    ``overlong``). Both engines end here."""
    data = recipe.data
    is_dpo = is_preference(recipe)
    if any(d.split == "train" for d in data.datasets) and not stats["examples"]:
        raise DataError(
            f"no training examples left (drops: {_drop_summary(drops)}); see the first "
            "locations with `data.strict: true` or `ladle render`"
        )
    eval_rows = [json.loads(r) for r in evals.rows]
    eval_shards = write_eval(tmp, eval_rows, evals.ds) if eval_rows else []
    rows_out = stats.pop("rows_out_by_ds")
    tokens_by_ds = stats.pop("tokens_by_ds")
    mask_by_ds = stats.pop("mask_method_by_ds", {})
    for i, row in enumerate(per_ds):
        row.rows_out = rows_out.get(i, 0) if row.split == "train" else evals.ds.count(i)
        row.tokens = tokens_by_ds.get(i, 0)
        if i in mask_by_ds:  # chat datasets trained by SFT: which rule placed the masks
            row.mask_method = mask_by_ds[i]
    return PrepManifest(
        ladle_version=ladle.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        model=str(model_dir),
        method=recipe.train.method if is_dpo else "sft",
        max_length=data.max_length,
        packing="none" if is_dpo else data.packing,
        train_on=data.train_on,
        seed=recipe.seed,
        datasets=per_ds,
        drops=drops.to_json(),
        dedup=dedup_report,
        train=TrainStats.model_validate(stats),
        eval=EvalStats(rows=len(evals.rows), shards=eval_shards),
    )


def _drop_summary(drops: Drops) -> str:
    if not drops.counts:
        return "none"
    return ", ".join(
        f"{r}: {n}" + (f" (first: {drops.first[r][0]})" if drops.first.get(r) else "")
        for r, n in sorted(drops.counts.items())
    )


def _check_eval_rows(evals: _Rows, drops: Drops, strict: bool) -> _Rows:
    """Eval rows the evaluator can score: a prompt and an assistant reply to compare
    against. Checked here, before training, not after it (a counted drop, or an error
    with ``data.strict``)."""
    keep: list[int] = []
    for i, raw in enumerate(evals.rows):
        row = json.loads(raw)
        rec = eval_record(row)
        if rec["text"] is None and rec["reference"] is None:
            why = "no assistant reply to use as the reference"
        elif rec["prompt"] is not None and not any(
            m["role"] != "system" for m in json.loads(rec["prompt"])
        ):
            why = "nothing before the reference reply but a system prompt"
        else:
            keep.append(i)
            continue
        if strict:
            raise DataError(f"{evals.loc[i]}: eval row has {why} (data.strict is on)")
        drops.add("eval_no_reference", f"{evals.loc[i]}: {why}")
    return evals if len(keep) == len(evals.rows) else evals.subset(keep)


def _dedup(
    recipe: Recipe, train: Rows, evals: _Rows, drops: Drops
) -> tuple[Rows, _Rows, dict[str, Any]]:
    """Exact/near dedup of the train rows and decontamination against the eval rows;
    every removed row is a counted drop (``duplicate`` or ``contaminated``).

    The rows are parsed a chunk at a time, but dedup compares every train row's text
    with every other's, so those texts (not the rows' JSON) are all in memory at once."""
    from ladle.dedup import dedup_rows

    cfg = recipe.data.dedup
    against = [json.loads(r) for r in evals.rows] if (cfg.decontaminate and evals.rows) else None
    locations = train.locations()
    res = dedup_rows(
        train.parsed(),
        cfg,
        against_rows=against,
        locations=locations,
        against_locations=evals.loc if against is not None else None,
    )
    for i, reason in res.removed().items():
        drops.add(reason, locations[i])
    return train.subset(np.asarray(res.kept_indices, np.int64)), evals, res.report


def _apply_weights(
    recipe: Recipe, ds: npt.NDArray[np.int64], rng: random.Random
) -> list[int] | None:
    """The positions of the train rows (of datasets ``ds``) after weighting, or None when
    every weight is 1: ``weight: 2`` repeats a dataset's rows twice, ``0.5`` keeps a
    seeded half. Both engines select their rows with it."""
    specs = recipe.data.datasets
    if all(s.weight == 1.0 for s in specs):
        return None
    idx: list[int] = []
    by_ds: dict[int, list[int]] = {}
    for i, d in enumerate(ds.tolist()):
        by_ds.setdefault(d, []).append(i)
    for d, rows in by_ds.items():
        w = specs[d].weight
        whole, frac = int(w), w - int(w)
        idx.extend(rows * whole)
        extra = round(len(rows) * frac)
        idx.extend(sorted(rng.sample(rows, extra)))
    return idx


def _prep_sft(
    recipe: Recipe,
    enc: Encoder,
    train: Rows,
    tmp: Path,
    drops: Drops,
    over: Overlong,
    report: Progress,
    stages: Stages | None = None,
) -> dict[str, Any]:
    stages = stages or Stages()
    data = recipe.data
    specs = data.datasets
    work = tmp / ".work"
    work.mkdir(exist_ok=True)
    lengths: list[np.ndarray] = []
    doc_ds: list[np.ndarray] = []
    trained_total = 0
    rows_out: dict[int, int] = {}
    mask_by_ds: dict[int, set[str]] = {}  # how each dataset's loss masks were located
    n = len(train)
    ds_all = train.ds
    is_text = np.asarray([s.format == "text" for s in specs], bool)
    with open(work / "ids.bin", "wb") as fi, open(work / "labels.bin", "wb") as fl:
        for a in range(0, n, CHUNK_ROWS):
            b = min(n, a + CHUNK_ROWS)
            kinds = ["text" if t else "chat" for t in is_text[ds_all[a:b]].tolist()]
            methods: dict[int, str] = {}
            with stages("encode"):
                rows = train.texts(a, b)  # this chunk's rows, read from the spool
                locs = train.locations(a, b)
                docs = encode_sft_flat(enc, rows, kinds, locs, drops, over, methods)
                del rows
            for i, m in methods.items():
                mask_by_ds.setdefault(int(ds_all[a + i]), set()).add(m)
            fi.write(docs.ids.tobytes())
            lab = docs.labels.copy()
            lab[docs.offsets[:-1]] = IGNORE_INDEX  # a packed document's first label
            trained_total += int(np.count_nonzero(lab != IGNORE_INDEX))
            fl.write(lab.tobytes())
            lengths.append(np.diff(docs.offsets))
            doc_ds.append(ds_all[a + docs.rows])
            kept_ds, counts = np.unique(ds_all[a + np.unique(docs.rows)], return_counts=True)
            for d, c in zip(kept_ds.tolist(), counts.tolist(), strict=True):
                rows_out[d] = rows_out.get(d, 0) + c
            report("tokenize", b, n)
    lens = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    total = int(offsets[-1])
    with stages("pack"):
        bins = plan_bins(recipe, lens, report)
    shards: list[str] = []
    if total:
        per_shard = max(1, SHARD_TOKENS // data.max_length)
        starts = list(range(0, len(bins), per_shard))
        shards = [f"train-{s:05d}.parquet" for s in range(len(starts))]

        def write_shard(s: int) -> None:
            # Read document by document (pread), not through a memory map: a shard's
            # documents are spread over the whole files, and the kernel maps the cached
            # pages around every fault, so each shard's mapping put nearly all of both
            # files in RSS (2.1 GB at 1M rows; 4.1 GB with two shards in flight, most of
            # a 5.2 GB peak). Memory is now bounded by the shards in flight.
            part = bins[starts[s] : starts[s] + per_shard]
            packed = assemble_files(work / "ids.bin", work / "labels.bin", offsets, part)
            write_packed(tmp / shards[s], packed)

        # Shards are independent and both steps release the GIL (Rust assembly, Arrow's
        # Parquet writer, one thread per file), so they overlap: two in flight hold
        # ~2 x 200 MB. Each shard is written whole, so the bytes do not depend on this.
        workers = min(WRITE_THREADS, len(starts))
        with stages("write"), ThreadPoolExecutor(workers) as pool:
            for s, _ in enumerate(pool.map(write_shard, range(len(starts)))):
                report("write", min(len(bins), starts[s] + per_shard), len(bins))
    for name in ("ids.bin", "labels.bin"):
        (work / name).unlink()
    return packed_stats(
        data.max_length,
        lens,
        len(bins),
        trained_total,
        shards,
        np.concatenate(doc_ds) if doc_ds else np.zeros(0, np.int64),
        rows_out,
        mask_by_ds,
    )


def plan_bins(
    recipe: Recipe, lens: np.ndarray, report: Callable[[str, int, int], None]
) -> list[list[int]]:
    """Documents per packed row, in row order (both engines): global BFD/FFD over every
    length, or one document a row; shuffled by the seed unless ``data.shuffle`` is off."""
    data = recipe.data
    if data.packing == "none":
        bins = [[i] for i in range(len(lens))]
        if data.shuffle:
            random.Random(recipe.seed).shuffle(bins)
        return bins
    report("pack", 0, 1)
    bins = pack(lens, data.max_length, data.packing, recipe.seed) if len(lens) else []
    if not data.shuffle:
        bins.sort(key=min)
    report("pack", 1, 1)
    return bins


def packed_stats(
    max_length: int,
    lens: np.ndarray,
    rows: int,
    trained_total: int,
    shards: list[str],
    doc_ds: Sequence[int] | np.ndarray,
    rows_out: dict[int, int],
    mask_by_ds: dict[int, set[str]],
) -> dict[str, Any]:
    """The train split's manifest numbers from its documents' lengths and datasets (both
    engines: the local one and ``ray_engine``)."""
    total = int(lens.sum())
    lower = -(-total // max_length) if total else 0
    edges = _edges(max_length)
    counts, _ = np.histogram(lens, bins=edges) if len(lens) else (np.zeros(len(edges) - 1), None)
    ds_arr = np.asarray(doc_ds, dtype=np.int64)
    if len(ds_arr) != len(lens):
        raise ValueError(f"{len(ds_arr)} dataset indices for {len(lens)} documents")
    tokens_by_ds = {int(d): int(lens[ds_arr == d].sum()) for d in np.unique(ds_arr)}
    return {
        "examples": len(lens),
        "rows": rows,
        "tokens": total,
        "trained_tokens": trained_total,
        "efficiency": total / (rows * max_length) if rows else 0.0,
        "lower_bound_rows": lower,
        "rows_over_lower_bound": rows - lower,
        "length_histogram": {"edges": edges, "counts": [int(c) for c in counts]},
        "shards": shards,
        "rows_out_by_ds": rows_out,
        "tokens_by_ds": tokens_by_ds,
        "mask_method_by_ds": {d: mask_method_summary(m) for d, m in mask_by_ds.items()},
    }


def _edges(max_length: int) -> list[int]:
    edges = [0]
    e = 16
    while e < max_length:
        edges.append(e)
        e *= 2
    edges.append(max_length)
    return [*edges, max_length * 1_000_000]


def _prep_preference(
    enc: Encoder,
    train: Rows,
    tmp: Path,
    drops: Drops,
    over: Overlong,
    report: Progress,
    method: str,
) -> dict[str, Any]:
    """Pairs for DPO/ORPO; for KTO, labelled examples (a pair gives two)."""
    kto = method == "kto"
    examples: list[tuple[Any, ...]] = []
    n = len(train)
    ds_all = train.ds.tolist()
    rows_out: dict[int, int] = {}
    for a in range(0, n, CHUNK_ROWS):
        b = min(n, a + CHUNK_ROWS)
        chunk = [json.loads(r) for r in train.texts(a, b)]
        encode = encode_labelled if kto else encode_preference
        for i, *example in encode(enc, chunk, train.locations(a, b), drops, over):
            examples.append(tuple(example))
            rows_out[ds_all[a + i]] = rows_out.get(ds_all[a + i], 0) + 1
        report("tokenize", b, n)
    if kto:
        shards = write_labelled(tmp, examples)
        trained = sum(len(e[1]) for e in examples)
    else:
        shards = write_preference(tmp, examples)
        trained = sum(len(e[1]) + len(e[2]) for e in examples)
    tokens = trained + sum(len(e[0]) for e in examples)
    return {
        "examples": len(examples),
        "rows": len(examples),
        "tokens": tokens,
        "trained_tokens": trained,
        "efficiency": None,
        "lower_bound_rows": None,
        "rows_over_lower_bound": None,
        "length_histogram": None,
        "shards": shards,
        "rows_out_by_ds": rows_out,
        "tokens_by_ds": {},
    }


def clear_stale_temp(home: Path | None = None) -> int:
    """Remove what killed preps left under the prep cache: ``.tmp-*`` folders whose
    prep is gone (its lock is free) and ``.old-*`` folders of replaced entries.

    ``atomic_dir`` removes its folder on any exception; only a hard kill (SIGKILL, power
    loss) leaves one behind, and a kill releases the lock at once. A folder without a
    lock (a crash between creating it and locking it) is removed after an hour.
    """
    root = (home or ladle_home()) / "prep"
    n = 0
    if not root.is_dir():
        return 0
    for p in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        if not p.is_dir():
            continue
        if p.name.startswith(".tmp-"):
            if (p / LOCK).is_file():
                fd = _lock(p / LOCK, wait=False)
                if fd is None:
                    continue  # a prep running right now
                os.close(fd)
            elif time.time() - p.stat().st_mtime < 3600:
                continue
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n


__all__ = ["PrepResult", "fingerprint", "prep", "prep_dir"]
