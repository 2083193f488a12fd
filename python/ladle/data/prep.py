"""``ladle prep``: load -> dedup -> tokenize + mask -> pack -> Parquet shards + manifest.

The output folder is content-addressed (``$LADLE_HOME/prep/<fingerprint>``): the
fingerprint covers the input bytes, the recipe's data section, the seed, the tokenizer
files and template, and Ladle's version, so a repeated prep is a lookup and any change
that could alter a token rebuilds. A hit only checks that ``manifest.json`` exists:
the manifest is written last, inside a temporary folder renamed into place
(``atomic_dir``), so its presence proves the entry is complete. File fingerprints are
remembered by (path, size, mtime_ns), so a hit never rereads a large corpus.

Memory stays bounded by the chunk size, not the corpus: rows are tokenized a chunk at
a time into flat int32 files on disk, packing needs only the lengths, and packed rows
are assembled shard by shard from those files through a memory map.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import ladle
from ladle import _core
from ladle.data.chat import mask_method_summary
from ladle.data.examples import Encoder, Overlong, encode_preference, encode_sft, text_encoder
from ladle.data.load import Drops, LoadedDataset, load_all, resolve_files
from ladle.data.packing import IGNORE_INDEX, assemble, pack
from ladle.data.prepared import write_eval, write_packed, write_preference
from ladle.errors import TokenizerError
from ladle.models import TOKENIZER_FILES
from ladle.paths import atomic_dir, atomic_write_text, ladle_home
from ladle.recipe.schema import Recipe

CHUNK_ROWS = 8192  # rows tokenized per call (bounds the Python objects alive at once)
SHARD_TOKENS = 1 << 24  # packed tokens per train shard (~16M tokens, ~200 MB in memory)
MANIFEST = "manifest.json"
Progress = Callable[[str, int, int], None]


@dataclass
class PrepResult:
    """Where the prepared data lives and what ``manifest.json`` says about it."""

    path: Path
    fingerprint: str
    cache_hit: bool
    manifest: dict[str, Any] = field(repr=False)
    seconds: float = 0.0

    @property
    def train_files(self) -> list[Path]:
        return [self.path / f for f in self.manifest["train"]["shards"]]

    @property
    def eval_files(self) -> list[Path]:
        return [self.path / f for f in self.manifest["eval"]["shards"]]


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


def fingerprint(recipe: Recipe, model_dir: Path) -> tuple[str, list[list[Path]]]:
    """The cache key of a recipe's prepared data, and each dataset's resolved files."""
    files = [resolve_files(ds) for ds in recipe.data.datasets]
    flat = [f for group in files for f in group]
    key = {
        "inputs": _file_fingerprints(flat),
        "tokenizer": _file_fingerprints(_tokenizer_files(model_dir, recipe.data.template)),
        "data": recipe.data.model_dump(mode="json"),
        "method": recipe.train.method,
        "seed": recipe.seed,
        "version": ladle.__version__,
    }
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return _core.fingerprint_bytes(text.encode())[:24], files


def prep_dir(fp: str) -> Path:
    return ladle_home() / "prep" / fp


# --------------------------------------------------------------------------- pipeline


def load_chat_tokenizer(model_dir: Path, template: str | None) -> Any:
    """The Rust chat tokenizer of the ``chat`` area (ladle.data.chat)."""
    try:
        from ladle.data.chat import ChatTokenizer
    except ImportError as e:  # the chat area is not part of this build
        raise TokenizerError(f"ladle.data.chat.ChatTokenizer is unavailable: {e}") from e
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
    manifest_path = out / MANIFEST
    if manifest_path.is_file() and not force:
        manifest = json.loads(manifest_path.read_text())
        return PrepResult(out, fp, True, manifest, time.perf_counter() - t0)
    chat = (
        tokenizer if tokenizer is not None else load_chat_tokenizer(model_dir, recipe.data.template)
    )
    report = progress or (lambda stage, done, total: None)
    clear_stale_temp()
    with atomic_dir(out, replace=True) as tmp:
        manifest = _build(recipe, model_dir, chat, files, tmp, report)
        manifest["fingerprint"] = fp
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return PrepResult(out, fp, False, manifest, time.perf_counter() - t0)


@dataclass
class _Rows:
    """Rows of one split with their dataset index and source location."""

    rows: list[str] = field(default_factory=list)  # normalised rows as JSON text
    ds: list[int] = field(default_factory=list)
    loc: list[str] = field(default_factory=list)

    def extend(self, d: LoadedDataset, idx: list[int] | None = None) -> None:
        idx = list(range(len(d.rows))) if idx is None else idx
        self.rows.extend(d.rows[i] for i in idx)
        self.ds.extend([d.index] * len(idx))
        self.loc.extend(d.locations[i] for i in idx)

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
) -> dict[str, Any]:
    data = recipe.data
    report("load", 0, len(data.datasets))
    loaded = load_all(data.datasets, strict=data.strict, as_json=True)
    report("load", len(data.datasets), len(data.datasets))
    drops = Drops()
    per_ds: list[dict[str, Any]] = []
    train, evals = _Rows(), _Rows()
    for d in loaded:
        drops.merge(d.drops)
        (evals if d.spec.split == "eval" else train).extend(d)
        per_ds.append(
            {
                "path": d.name,
                "format": d.spec.format,
                "split": d.spec.split,
                "files": [str(f) for f in d.files],
                "rows_in": d.rows_read,
                "rows_loaded": len(d.rows),
                "bad": d.drops.to_json(),
            }
        )
    del loaded
    rng = random.Random(recipe.seed)
    if not evals.rows and data.eval_fraction:
        order = list(range(len(train.rows)))
        rng.shuffle(order)
        n_eval = max(1, round(len(order) * data.eval_fraction)) if order else 0
        held = sorted(order[:n_eval])
        keep = sorted(order[n_eval:])
        evals, train = train.subset(held), train.subset(keep)

    dedup_report: dict[str, Any] | None = None
    if data.dedup.enabled and train.rows:
        train, evals, dedup_report = _dedup(recipe, train, evals, drops)

    train = _apply_weights(recipe, train, rng)
    is_dpo = recipe.train.method == "dpo" or any(
        d.format == "preference" for d in data.datasets if d.split == "train"
    )
    enc_text, eos_id = text_encoder(chat, model_dir)
    enc = Encoder(
        chat, enc_text, eos_id, data.max_length, data.train_on, data.overlong, data.strict
    )
    over = Overlong()
    stats: dict[str, Any]
    if is_dpo:
        stats = _prep_preference(enc, train, tmp, drops, over, report)
    else:
        stats = _prep_sft(recipe, enc, train, tmp, drops, over, report)
    stats["overlong"] = vars(over)
    eval_rows = [json.loads(r) for r in evals.rows]
    eval_shards = write_eval(tmp, eval_rows, evals.ds) if eval_rows else []
    rows_out = stats.pop("rows_out_by_ds")
    tokens_by_ds = stats.pop("tokens_by_ds")
    mask_by_ds = stats.pop("mask_method_by_ds", {})
    for i, row in enumerate(per_ds):
        row["rows_out"] = rows_out.get(i, 0) if row["split"] == "train" else evals.ds.count(i)
        row["tokens"] = tokens_by_ds.get(i, 0)
        if i in mask_by_ds:  # chat datasets trained by SFT: which rule placed the masks
            row["mask_method"] = mask_by_ds[i]
    return {
        "ladle_version": ladle.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": str(model_dir),
        "method": "dpo" if is_dpo else "sft",
        "max_length": data.max_length,
        "packing": "none" if is_dpo else data.packing,
        "train_on": data.train_on,
        "seed": recipe.seed,
        "datasets": per_ds,
        "drops": drops.to_json(),
        "dedup": dedup_report,
        "train": stats,
        "eval": {"rows": len(evals.rows), "shards": eval_shards},
    }


def _dedup(
    recipe: Recipe, train: _Rows, evals: _Rows, drops: Drops
) -> tuple[_Rows, _Rows, dict[str, Any]]:
    """Integration point with the ``dedup`` area (``ladle.dedup.dedup_rows``)."""
    try:
        from ladle.dedup import dedup_rows  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        # The dedup area is not merged in this build: record it rather than pretend.
        return train, evals, {"skipped": "ladle.dedup is not available in this build"}
    cfg = recipe.data.dedup
    against = [json.loads(r) for r in evals.rows] if (cfg.decontaminate and evals.rows) else None
    rows = [json.loads(r) for r in train.rows]
    kept, rep = dedup_rows(
        rows,
        cfg,
        against_rows=against,
        locations=train.loc,
        against_locations=evals.loc if against is not None else None,
    )
    keep_ids = {id(r) for r in kept}
    idx = [i for i, r in enumerate(rows) if id(r) in keep_ids]
    rep = dict(rep) if not isinstance(rep, dict) else rep
    contaminated = {p.get("removed") for p in rep.get("contaminated_pairs", [])}
    for i, r in enumerate(rows):
        if id(r) not in keep_ids:
            reason = "contaminated" if train.loc[i] in contaminated else "duplicate"
            drops.add(reason, train.loc[i])
    return train.subset(idx), evals, json.loads(json.dumps(rep, default=str))


def _apply_weights(recipe: Recipe, train: _Rows, rng: random.Random) -> _Rows:
    """``weight: 2`` repeats a dataset's rows twice, ``0.5`` keeps a seeded half."""
    specs = recipe.data.datasets
    if all(s.weight == 1.0 for s in specs):
        return train
    idx: list[int] = []
    by_ds: dict[int, list[int]] = {}
    for i, d in enumerate(train.ds):
        by_ds.setdefault(d, []).append(i)
    for d, rows in by_ds.items():
        w = specs[d].weight
        whole, frac = int(w), w - int(w)
        idx.extend(rows * whole)
        extra = round(len(rows) * frac)
        idx.extend(sorted(rng.sample(rows, extra)))
    return train.subset(idx)


def _prep_sft(
    recipe: Recipe,
    enc: Encoder,
    train: _Rows,
    tmp: Path,
    drops: Drops,
    over: Overlong,
    report: Progress,
) -> dict[str, Any]:
    data = recipe.data
    specs = data.datasets
    work = tmp / ".work"
    work.mkdir()
    lengths: list[int] = []
    doc_ds: list[int] = []
    trained_total = 0
    rows_out: dict[int, int] = {}
    mask_by_ds: dict[int, set[str]] = {}  # how each dataset's loss masks were located
    n = len(train.rows)
    with open(work / "ids.bin", "wb") as fi, open(work / "labels.bin", "wb") as fl:
        for a in range(0, n, CHUNK_ROWS):
            b = min(n, a + CHUNK_ROWS)
            kinds = ["text" if specs[d].format == "text" else "chat" for d in train.ds[a:b]]
            methods: dict[int, str] = {}
            docs = encode_sft(enc, train.rows[a:b], kinds, train.loc[a:b], drops, over, methods)
            for i, m in methods.items():
                mask_by_ds.setdefault(train.ds[a + i], set()).add(m)
            train.rows[a:b] = [""] * (b - a)  # free the conversations as we go
            seen = set()
            for i, ids, labels in docs:
                fi.write(ids.tobytes())
                lab = labels.copy()
                lab[0] = IGNORE_INDEX
                trained_total += int(np.count_nonzero(lab != IGNORE_INDEX))
                fl.write(lab.tobytes())
                lengths.append(len(ids))
                doc_ds.append(train.ds[a + i])
                if i not in seen:
                    seen.add(i)
                    rows_out[train.ds[a + i]] = rows_out.get(train.ds[a + i], 0) + 1
            report("tokenize", b, n)
    lens = np.asarray(lengths, dtype=np.int64)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    total = int(offsets[-1])
    if data.packing == "none":
        bins = [[i] for i in range(len(lens))]
        if data.shuffle:
            random.Random(recipe.seed).shuffle(bins)
    else:
        report("pack", 0, 1)
        bins = pack(lens, data.max_length, data.packing, recipe.seed) if len(lens) else []
        if not data.shuffle:
            bins.sort(key=min)
        report("pack", 1, 1)
    shards: list[str] = []
    if total:
        ids_mm = np.memmap(work / "ids.bin", dtype=np.int32, mode="r", shape=(total,))
        lab_mm = np.memmap(work / "labels.bin", dtype=np.int32, mode="r", shape=(total,))
        per_shard = max(1, SHARD_TOKENS // data.max_length)
        for s, a in enumerate(range(0, len(bins), per_shard)):
            packed = assemble(ids_mm, lab_mm, offsets, bins[a : a + per_shard])
            name = f"train-{s:05d}.parquet"
            write_packed(tmp / name, packed)
            shards.append(name)
            report("write", min(len(bins), a + per_shard), len(bins))
        del ids_mm, lab_mm
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    rows = len(bins)
    lower = -(-total // data.max_length) if total else 0
    edges = _edges(data.max_length)
    counts, _ = np.histogram(lens, bins=edges) if len(lens) else (np.zeros(len(edges) - 1), None)
    tokens_by_ds: dict[int, int] = {}
    for d, ln in zip(doc_ds, lengths, strict=True):
        tokens_by_ds[d] = tokens_by_ds.get(d, 0) + ln
    return {
        "examples": len(lens),
        "rows": rows,
        "tokens": total,
        "trained_tokens": trained_total,
        "efficiency": total / (rows * data.max_length) if rows else 0.0,
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
    enc: Encoder, train: _Rows, tmp: Path, drops: Drops, over: Overlong, report: Progress
) -> dict[str, Any]:
    triples = []
    n = len(train.rows)
    rows_out: dict[int, int] = {}
    for a in range(0, n, CHUNK_ROWS):
        b = min(n, a + CHUNK_ROWS)
        chunk = [json.loads(r) for r in train.rows[a:b]]
        for i, p, c, r in encode_preference(enc, chunk, train.loc[a:b], drops, over):
            triples.append((p, c, r))
            rows_out[train.ds[a + i]] = rows_out.get(train.ds[a + i], 0) + 1
        report("tokenize", b, n)
    shards = write_preference(tmp, triples)
    tokens = sum(len(p) + len(c) + len(r) for p, c, r in triples)
    trained = sum(len(c) + len(r) for _, c, r in triples)
    return {
        "examples": len(triples),
        "rows": len(triples),
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
    """Remove ``.tmp-*`` folders that killed runs left under the prep cache.

    ``atomic_dir`` removes its folder on any exception; only a hard kill (SIGKILL, power
    loss) leaves one behind. Folders younger than an hour may belong to a prep running
    right now in another process, so they stay.
    """
    root = (home or ladle_home()) / "prep"
    n = 0
    if root.is_dir():
        import shutil

        for p in root.glob(".tmp-*"):
            if p.is_dir() and time.time() - p.stat().st_mtime > 3600:
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


__all__ = ["PrepResult", "fingerprint", "prep", "prep_dir"]
