"""Tokenization micro-benchmark (named tokenizer.py, not tokenize.py: a script's folder
goes first on sys.path and would shadow the stdlib ``tokenize`` module).

Ladle's encoder vs the `tokenizers` crate's default path.

Two corpora (benchmarks/corpus.py): real text first (Python docstrings and source, man
pages in several languages, /usr/share/doc: a natural long-tailed vocabulary, where
word caches miss), then the older synthetic one (~200 words: every word a cache hit).
Same rendered strings for all paths, in one run:
  (a) tokenizers.Tokenizer.encode_batch_fast (Rust crate, all cores, no offsets)
  (b) Ladle ChatTokenizer.tokenize_batch (byte-level BPE fast path, all cores)
  (c) Ladle tokenize_batch through the crate (fast=False), for reference
  (d) Ladle encode_arrays: render + tokenize + loss mask from the messages
and checks that (a), (b), (c) produce identical ids on the whole corpus.

    python benchmarks/tokenizer.py --rows 100000   # the README figures
    python benchmarks/tokenizer.py --rows 20000    # quicker
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

import corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--corpus", choices=["real", "synthetic", "both"], default="both")
    args = ap.parse_args()

    from tokenizers import Tokenizer

    from ladle.data import ChatTokenizer

    tok = ChatTokenizer.from_pretrained(args.model)
    slow = ChatTokenizer.from_pretrained(args.model, fast=False)
    crate = Tokenizer.from_file(str(tok.tokenizer_path))
    cores = os.cpu_count()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {corpus.machine()}")
    print(
        f"rows={args.rows} cores={cores} (rayon and the tokenizers crate use all cores; no torch)"
    )
    kinds = ["real", "synthetic"] if args.corpus == "both" else [args.corpus]
    for kind in kinds:
        rows, about = corpus.conversations(kind, args.rows, args.seed)
        convs = [r["messages"] for r in rows]
        del rows
        print(f"\n## corpus: {kind}: {about}")
        run(tok, slow, crate, convs, kind)
    print(f"\nload average at the end: {corpus.load_average()}")


def run(tok: Any, slow: Any, crate: Any, convs: list[Any], kind: str) -> None:
    t0 = time.perf_counter()
    rendered = tok.render_batch(convs)
    t_render = time.perf_counter() - t0

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    encs = crate.encode_batch_fast(rendered, add_special_tokens=False)
    timings["(a) tokenizers encode_batch_fast"] = time.perf_counter() - t0
    flat_want = np.fromiter((i for e in encs for i in e.ids), dtype=np.int32)
    del encs

    t0 = time.perf_counter()
    ids, _ = tok.tokenize_batch(rendered)
    timings["(b) ladle tokenize_batch (fast path)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ids_slow, _ = slow.tokenize_batch(rendered)
    timings["(c) ladle tokenize_batch (crate path)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    batch = tok.encode_arrays(convs)
    timings["(d) ladle encode_arrays (render+tokenize+mask)"] = time.perf_counter() - t0

    assert np.array_equal(ids, flat_want), "fast path ids differ from the crate"
    assert np.array_equal(ids_slow, flat_want), "crate path ids differ"
    assert np.array_equal(batch.input_ids, flat_want), "encode_arrays ids differ"
    assert all(e is None for e in batch.errors)
    n_tokens = len(flat_want)
    print(
        f"ids identical on all {len(convs)} rows ({n_tokens} tokens); render alone {t_render:.2f}s"
    )
    base = timings["(a) tokenizers encode_batch_fast"]
    print(f"{'path (' + kind + ')':50s} {'seconds':>8s} {'Mtok/s':>8s} {'vs (a)':>7s}")
    for name, t in timings.items():
        print(f"{name:50s} {t:8.2f} {n_tokens / t / 1e6:8.2f} {base / t:6.2f}x")
    fast = timings["(b) ladle tokenize_batch (fast path)"]
    print(f"RATIO tokenizer {kind}: (a) / (b) = {base / fast:.1f}x", flush=True)


if __name__ == "__main__":
    main()
