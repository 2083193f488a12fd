"""Data prep benchmark: the usual Python pipeline vs the tokenizers crate vs `ladle prep`.

    python benchmarks/prep.py --rows 100000      # the README figure (minutes on 2 cores)
    python benchmarks/prep.py --rows 2000        # a quick check

One run, one corpus (deterministic, written to benchmarks/out/corpus.jsonl, the file
recipes/large-corpus-prep.yaml reads), the real SmolLM2 tokenizer and template:

(a) the usual pipeline: ``datasets.map`` (num_proc=2) with ``apply_chat_template``,
    tokenization and an assistant-only mask by prefix rendering, then TRL's
    ``pack_dataset(strategy="bfd")`` at 2048;
(b) the ``tokenizers`` crate alone: ``Tokenizer.encode_batch_fast`` on the pre-rendered
    strings, all cores (what tokenization alone costs on the default path);
(c) ``ladle prep`` cold (empty cache) and warm (cache hit, in-process and as a CLI run).

Prints rows/s, tokens/s, the ratios, packing efficiency of TRL and Ladle, and whether
Ladle's token ids (and masks) equal (a)'s, example by example, over the whole corpus.
Dedup is off in (c) so both sides do the same work. torch is not used; its thread count
is set to the core count anyway so nothing differs from the other benchmarks.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ladle._core import IGNORE_INDEX

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
MAX_LENGTH = 2048

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "from",
    "at",
    "or",
    "an",
    "have",
    "not",
    "but",
    "they",
    "which",
    "one",
    "you",
    "all",
    "were",
    "her",
    "she",
    "there",
    "would",
    "their",
    "we",
    "him",
    "been",
    "has",
    "when",
    "who",
    "will",
    "more",
    "no",
    "if",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "data",
    "model",
    "training",
    "system",
    "memory",
    "value",
    "error",
    "function",
    "result",
    "number",
    "example",
    "question",
    "answer",
    "customer",
    "order",
    "service",
    "network",
    "server",
    "request",
    "response",
    "performance",
    "latency",
    "throughput",
    "database",
    "query",
    "index",
    "table",
    "column",
    "schema",
    "migration",
    "version",
    "release",
    "feature",
    "bug",
    "report",
]
IDENTS = [
    "user",
    "order",
    "item",
    "config",
    "result",
    "value",
    "data",
    "count",
    "total",
    "index",
    "name",
    "path",
    "key",
    "node",
    "cache",
]
SYSTEMS = [
    "You are a helpful assistant.",
    "You are a senior software engineer. Answer with working code and a short explanation.",
    "You are a concise support agent. Keep answers under five sentences.",
    "Tu es un assistant serviable. Réponds en français quand on te parle français.",
]


def sentence(rng: random.Random) -> str:
    n = max(3, int(rng.lognormvariate(2.4, 0.45)))
    words = [rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.15:
        words.insert(rng.randrange(n), str(rng.randint(0, 10_000)))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".....?!")


def paragraph(rng: random.Random, scale: float) -> str:
    n = max(1, int(rng.lognormvariate(1.3, 0.8) * scale))
    return " ".join(sentence(rng) for _ in range(n))


def code(rng: random.Random) -> str:
    lines = []
    for _ in range(max(1, int(rng.lognormvariate(0.8, 0.7)))):
        fn, a, b = rng.choice(IDENTS), rng.choice(IDENTS), rng.choice(IDENTS)
        lines += [
            f"def {fn}_{rng.randint(0, 99)}({a}, {b}={rng.randint(0, 9)}):",
            f'    """{sentence(rng)}"""',
            f"    if {a} is None:",
            f'        raise ValueError(f"missing {a}: {{{b}!r}}")',
            f"    for i in range(len({a})):",
            f"        {b} += {a}[i] * {rng.randint(2, 64)}",
            f"    return {{'{fn}': {b}, 'n': len({a})}}",
            "",
        ]
    return "```python\n" + "\n".join(lines) + "```"


def make_row(rng: random.Random) -> dict[str, Any]:
    msgs: list[dict[str, str]] = []
    if rng.random() < 0.6:
        msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
    for _ in range(1 + int(rng.random() < 0.35) + int(rng.random() < 0.15)):
        msgs.append({"role": "user", "content": paragraph(rng, 0.6)})
        reply = paragraph(rng, 1.4)
        if rng.random() < 0.3:
            reply = f"{sentence(rng)}\n\n{code(rng)}\n\n{sentence(rng)}"
        if rng.random() < 0.02:
            reply = "  " + reply  # replies that start with spaces exist in real data
        msgs.append({"role": "assistant", "content": reply})
    return {"messages": msgs}


def write_corpus(rows: int, seed: int = 0) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "corpus.jsonl"
    meta = OUT / "corpus.meta.json"
    want = {"rows": rows, "seed": seed, "generator": 1}
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == want:
        return path
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for _ in range(rows):
            f.write(json.dumps(make_row(rng), ensure_ascii=False) + "\n")
    tmp.replace(path)
    meta.write_text(json.dumps(want))
    return path


# ----------------------------------------------------------------------------- (a)

_TOK: Any = None


def _hf_encode(batch: dict[str, list[Any]], model_dir: str) -> dict[str, list[Any]]:
    """apply_chat_template + tokenize + assistant mask by prefix rendering (the usual way
    for templates without generation markers, like SmolLM2's)."""
    global _TOK
    if _TOK is None:
        from transformers import AutoTokenizer

        _TOK = AutoTokenizer.from_pretrained(model_dir)
    tok = _TOK
    texts, spans = [], []
    for msgs in batch["messages"]:
        text = tok.apply_chat_template(msgs, tokenize=False)
        sp = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            start = len(
                tok.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
            )
            end = len(tok.apply_chat_template(msgs[: i + 1], tokenize=False))
            sp.append((start, end))
        texts.append(text)
        spans.append(sp)
    enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for ids, offs, sp in zip(enc["input_ids"], enc["offset_mapping"], spans, strict=True):
        lab = [IGNORE_INDEX] * len(ids)
        for t, (a, b) in enumerate(offs):
            if any(s < b and a < e for s, e in sp):  # token overlaps a trained span
                lab[t] = ids[t]
        labels.append(lab)
    return {"input_ids": enc["input_ids"], "labels": labels}


def run_hf(corpus: Path, model_dir: Path) -> dict[str, Any]:
    import datasets
    from trl.data_utils import pack_dataset

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(corpus), split="train")
    t0 = time.perf_counter()
    enc = ds.map(
        _hf_encode,
        batched=True,
        batch_size=256,
        num_proc=2,
        remove_columns=ds.column_names,
        fn_kwargs={"model_dir": str(model_dir)},
        load_from_cache_file=False,
    )
    t_map = time.perf_counter() - t0
    t0 = time.perf_counter()
    packed = pack_dataset(
        enc, MAX_LENGTH, strategy="bfd", map_kwargs={"load_from_cache_file": False}
    )
    t_pack = time.perf_counter() - t0
    lens = np.asarray([len(x) for x in enc["input_ids"]])
    packed_tokens = int(sum(len(x) for x in packed["input_ids"]))
    return {
        "enc": enc,
        "t_map": t_map,
        "t_pack": t_pack,
        "tokens": int(lens.sum()),
        "rows": len(packed),
        "efficiency": packed_tokens / (len(packed) * MAX_LENGTH),
        "lower": -(-packed_tokens // MAX_LENGTH),
    }


# ----------------------------------------------------------------------------- (b)


def run_tokenizers(corpus: Path, model_dir: Path) -> dict[str, Any]:
    """(b) in a fresh process: the (a) process holds its datasets and has
    TOKENIZERS_PARALLELISM=false left behind by datasets.map(num_proc>1), either of
    which would understate what the crate alone can do."""
    out = subprocess.run(
        [sys.executable, __file__, "--only-tokenizers", str(corpus), str(model_dir)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "true"},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _tokenizers_only(corpus: Path, model_dir: Path) -> None:
    from tokenizers import Tokenizer

    from ladle.data import ChatTokenizer

    with open(corpus) as f:
        convs = [json.loads(line)["messages"] for line in f]
    # Not timed. Ladle's renderer is byte-identical to apply_chat_template (the chat
    # tests prove it; equal token totals of (a) and (b) below confirm it here) and
    # saves minutes of Jinja in Python.
    texts = ChatTokenizer.from_pretrained(model_dir).render_batch(convs)
    del convs
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    t0 = time.perf_counter()
    encs = tok.encode_batch_fast(texts, add_special_tokens=False)
    t = time.perf_counter() - t0
    print(json.dumps({"t": t, "tokens": sum(len(e.ids) for e in encs)}))


# ----------------------------------------------------------------------------- (c)


def run_ladle(corpus: Path, model_dir: Path) -> dict[str, Any]:
    home = OUT / "ladle-home"
    shutil.rmtree(home / "prep", ignore_errors=True)
    os.environ["LADLE_HOME"] = str(home)
    recipe_path = OUT / "bench-recipe.yaml"
    recipe_path.write_text(
        json.dumps(
            {
                "name": "bench",
                "seed": 0,
                "model": {"base": str(model_dir)},
                "data": {
                    "datasets": [{"path": str(corpus)}],
                    "max_length": MAX_LENGTH,
                    "dedup": {"enabled": False},
                },
                "evaluate": {"enabled": False},
            }
        )
    )
    from ladle.data import prep
    from ladle.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    t0 = time.perf_counter()
    cold = prep(recipe, force=True)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = prep(load_recipe(recipe_path))
    t_warm = time.perf_counter() - t0
    assert warm.cache_hit
    t0 = time.perf_counter()
    cli = subprocess.run(
        [sys.executable, "-m", "ladle.cli", "prep", str(recipe_path), "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "LADLE_HOME": str(home)},
    )
    t_cli = time.perf_counter() - t0
    return {
        "result": cold,
        "t_cold": t_cold,
        "t_warm": t_warm,
        "t_cli": t_cli if cli.returncode == 0 and "cache hit" in cli.stdout else float("nan"),
    }


def _digest(ids: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    h = hashlib.blake2b(np.ascontiguousarray(ids, np.int32).tobytes(), digest_size=16)
    if labels is not None:
        h.update(np.ascontiguousarray(labels, np.int32).tobytes())
    return h.digest()


def compare(hf: dict[str, Any], ladle_res: Any) -> dict[str, int]:
    """Example-by-example: same ids? same mask (with the document-start label ignored)?"""
    import pyarrow.compute as pc

    from ladle.data import load_prepared

    ref_ids: collections.Counter[bytes] = collections.Counter()
    ref_both: collections.Counter[bytes] = collections.Counter()
    n_ref = 0
    for batch in hf["enc"].with_format("arrow").iter(batch_size=4096):
        for ids, lab in zip(
            batch["input_ids"].to_numpy(zero_copy_only=False),
            batch["labels"].to_numpy(zero_copy_only=False),
            strict=True,
        ):
            if len(ids) > MAX_LENGTH:
                continue  # Ladle drops over-long chat rows (TRL truncates them)
            lab = np.array(lab, np.int32)
            lab[0] = IGNORE_INDEX
            ref_ids[_digest(ids)] += 1
            ref_both[_digest(ids, lab)] += 1
            n_ref += 1
    train, _, _ = load_prepared(ladle_res)
    ours_ids: collections.Counter[bytes] = collections.Counter()
    ours_both: collections.Counter[bytes] = collections.Counter()
    for batch in train.to_batches(4096):
        flat_ids = pc.list_flatten(batch["input_ids"]).to_numpy()
        flat_lab = pc.list_flatten(batch["labels"]).to_numpy()
        seqs = pc.list_flatten(batch["seq_lengths"]).to_numpy()
        starts = np.concatenate([[0], np.cumsum(seqs)])
        for a, b in itertools.pairwise(starts):
            ours_ids[_digest(flat_ids[a:b])] += 1
            ours_both[_digest(flat_ids[a:b], flat_lab[a:b])] += 1
    return {
        "examples": n_ref,
        "ids_equal": sum((ref_ids & ours_ids).values()),
        "masks_equal": sum((ref_both & ours_both).values()),
        "ladle_docs": sum(ours_ids.values()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000, help="corpus rows (default 100000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--only-tokenizers", nargs=2, metavar=("CORPUS", "MODEL"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.only_tokenizers:
        _tokenizers_only(Path(args.only_tokenizers[0]), Path(args.only_tokenizers[1]))
        return 0
    cores = os.cpu_count() or 1
    try:
        import torch

        torch.set_num_threads(cores)
    except ImportError:
        pass
    print(f"torch threads: {cores} (unused here); rayon and tokenizers: all {cores} cores")

    from ladle.models import resolve_model

    model_dir = Path(resolve_model("builtin:smollm2-135m-instruct"))
    t0 = time.perf_counter()
    corpus = write_corpus(args.rows, args.seed)
    print(
        f"corpus: {corpus} ({args.rows:,} rows, {corpus.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - t0:.1f}s)"
    )

    print(
        "(a) datasets.map + apply_chat_template + mask (num_proc=2) + trl pack_dataset bfd ...",
        flush=True,
    )
    hf = run_hf(corpus, model_dir)
    print("(b) tokenizers encode_batch_fast on pre-rendered text ...", flush=True)
    tk = run_tokenizers(corpus, model_dir)
    print("(c) ladle prep cold / warm ...", flush=True)
    la = run_ladle(corpus, model_dir)
    cmp = compare(hf, la["result"])

    m = la["result"].manifest.train.model_dump()
    n = args.rows
    t_a = hf["t_map"] + hf["t_pack"]
    rows = [
        ("(a) datasets.map + TRL bfd", t_a, hf["tokens"]),
        ("    of which TRL pack_dataset", hf["t_pack"], hf["tokens"]),
        ("(b) tokenizers encode_batch_fast", tk["t"], tk["tokens"]),
        ("(c) ladle prep, cold", la["t_cold"], m["tokens"]),
        ("(c) ladle prep, warm (in-process)", la["t_warm"], m["tokens"]),
        ("(c) ladle prep, warm (CLI, with startup)", la["t_cli"], m["tokens"]),
    ]
    print()
    print("| step | seconds | rows/s | tokens/s | (a) / this |")
    print("|---|---:|---:|---:|---:|")
    for name, t, tokens in rows:
        print(f"| {name} | {t:.2f} | {n / t:,.0f} | {tokens / t:,.0f} | {t_a / t:.1f}x |")
    print()
    print(
        f"(b) / ladle cold: {tk['t'] / la['t_cold']:.2f}x   (ladle prep does render + tokenize + mask + pack + write)"
    )
    print(
        f"packing at {MAX_LENGTH}: TRL bfd (per 1000-row batch) {hf['efficiency']:.2%} in {hf['rows']:,} rows "
        f"(lower bound {hf['lower']:,}); ladle bfd (whole dataset) {m['efficiency']:.2%} in {m['rows']:,} rows "
        f"(lower bound {m['lower_bound_rows']:,})"
    )
    print(
        f"tokens: (a) {hf['tokens']:,}  (b) {tk['tokens']:,}  ladle {m['tokens']:,} "
        f"(ladle drops {m['overlong']['dropped']} over-long rows; TRL truncates)"
    )
    print(
        f"id equality ladle vs (a): {cmp['ids_equal']:,} / {cmp['examples']:,} examples "
        f"(ladle documents {cmp['ladle_docs']:,}); masks equal: {cmp['masks_equal']:,}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
