"""Tokenization micro-benchmark (named tokenizer.py, not tokenize.py: a script's folder
goes first on sys.path and would shadow the stdlib ``tokenize`` module).

Ladle's encoder vs the `tokenizers` crate's default path.

Same rendered strings for both, in one run:
  (a) tokenizers.Tokenizer.encode_batch_fast (Rust crate, all cores, no offsets)
  (b) Ladle ChatTokenizer.tokenize_batch (byte-level BPE fast path, all cores)
  (c) Ladle tokenize_batch through the crate (fast=False), for reference
  (d) Ladle encode_arrays: render + tokenize + loss mask from the messages
and checks that (a), (b), (c) produce identical ids on the whole corpus.

    python benchmarks/tokenizer.py --rows 20000
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from typing import Any

import numpy as np

WORDS = (  # noqa: SIM905 - one readable string of vocabulary
    "the model learns to answer questions about data pipelines training loss tokens "
    "packing gradient memory batch sequence attention layer weights python rust fast "
    "slow correct because however therefore example result value function return error "
    "file path json parquet shard cache fingerprint prep render template assistant user"
).split()
CODE = [
    "def f(x):\n    return x * 2\n",
    "for i in range(10):\n    print(i)\n",
    'fn main() {\n    println!("hi");\n}\n',
    "SELECT id, name FROM users WHERE age > 30;\n",
    "const xs = [1, 2, 3].map((x) => x ** 2);\n",
]


def sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice([".", "?", "!", ":"])


def text(rng: random.Random, mean_words: float) -> str:
    # Long-tailed lengths: lognormal number of sentences, code blocks now and then.
    n = max(1, int(rng.lognormvariate(math.log(mean_words / 12), 0.9)))
    parts = []
    for _ in range(n):
        if rng.random() < 0.15:
            parts.append("```\n" + rng.choice(CODE) + "```")
        else:
            parts.append(sentence(rng, rng.randint(4, 20)))
    return rng.choice([" ", "\n", "\n\n"]).join(parts)


def corpus(rows: int, seed: int = 0) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        conv: list[dict[str, Any]] = []
        if rng.random() < 0.5:
            conv.append({"role": "system", "content": sentence(rng, 8)})
        for _ in range(rng.choice([1, 1, 2, 3])):
            conv.append({"role": "user", "content": text(rng, 30)})
            conv.append({"role": "assistant", "content": text(rng, 120)})
        out.append(conv)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    args = ap.parse_args()

    from tokenizers import Tokenizer

    from ladle.data import ChatTokenizer

    tok = ChatTokenizer.from_pretrained(args.model)
    slow = ChatTokenizer.from_pretrained(args.model, fast=False)
    crate = Tokenizer.from_file(str(tok.tokenizer_path))
    cores = os.cpu_count()
    print(
        f"rows={args.rows} cores={cores} (rayon and the tokenizers crate use all cores; no torch)"
    )

    convs = corpus(args.rows)
    t0 = time.perf_counter()
    rendered = tok.render_batch(convs)
    t_render = time.perf_counter() - t0

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    encs = crate.encode_batch_fast(rendered, add_special_tokens=False)
    timings["(a) tokenizers encode_batch_fast"] = time.perf_counter() - t0
    want = [e.ids for e in encs]

    t0 = time.perf_counter()
    ids, _ = tok.tokenize_batch(rendered)
    timings["(b) ladle tokenize_batch (fast path)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ids_slow, _ = slow.tokenize_batch(rendered)
    timings["(c) ladle tokenize_batch (crate path)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    batch = tok.encode_arrays(convs)
    timings["(d) ladle encode_arrays (render+tokenize+mask)"] = time.perf_counter() - t0

    flat_want = np.fromiter((i for row in want for i in row), dtype=np.int32)
    assert np.array_equal(ids, flat_want), "fast path ids differ from the crate"
    assert np.array_equal(ids_slow, flat_want), "crate path ids differ"
    assert np.array_equal(batch.input_ids, flat_want), "encode_arrays ids differ"
    assert all(e is None for e in batch.errors)
    n_tokens = len(flat_want)
    print(
        f"ids identical on all {args.rows} rows ({n_tokens} tokens); render alone {t_render:.2f}s"
    )
    base = timings["(a) tokenizers encode_batch_fast"]
    print(f"{'path':50s} {'seconds':>8s} {'Mtok/s':>8s} {'vs (a)':>7s}")
    for name, t in timings.items():
        print(f"{name:50s} {t:8.2f} {n_tokens / t / 1e6:8.2f} {base / t:6.2f}x")


if __name__ == "__main__":
    main()
