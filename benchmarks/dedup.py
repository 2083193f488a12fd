"""Dedup benchmark: datasketch MinHash + MinHashLSH versus Ladle, same corpus, one run.

The corpus is deterministic, in two kinds (``--corpus``, both by default, real first):
windows of natural text found on the machine (``corpus.plain_texts``: Python docstrings,
man pages, /usr/share/doc) and, as the second row, random Zipf-distributed made-up
"words"; each with a known 5% of exact copies (verbatim, upper-cased, re-spaced) and 5%
of near copies (1-3 words changed, inserted or removed). On real text "precision"
also counts pairs the source text itself nearly repeats (a man page and its twin), so
it can sit a little under 1 without a wrong merge. Both sides see the same shingles (word 5-grams of the
normalised text). datasketch gets the best-case setup: texts already normalised by
Ladle (normalisation not timed for it), permutations computed once and shared;
Ladle's time includes normalisation, exact + near dedup, Jaccard verification and
clustering. Recall is scored on injected pairs whose true Jaccard is >= 0.85 and on
all exact/case/whitespace copies; the harder pairs (< 0.85) are reported separately.

Threads: Ladle uses rayon with RAYON_NUM_THREADS (default: all cores), printed below;
datasketch is single-threaded Python. No torch is involved.

    python benchmarks/dedup.py                 # 100k rows
    python benchmarks/dedup.py --rows 20000    # quick
    python benchmarks/dedup.py --ds-rows 30000 # time datasketch on the first 30k rows
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import corpus
from ladle import _core
from ladle.dedup import deduplicate

NGRAM = 5
NUM_PERM = 128
THRESHOLD = 0.8


@dataclass
class Corpus:
    texts: list[str]
    group: np.ndarray  # ground-truth group (index of the source row's base doc)
    kind: list[str]  # "base", "exact", "near"
    source: np.ndarray  # row index of the source a copy was made from (-1 for base)


def make_corpus(rows: int, seed: int = 0, kind: str = "real") -> Corpus:
    """Base documents (``real``: windows of natural text, ``corpus.plain_texts``;
    ``synthetic``: Zipf words, ``corpus.zipf_texts``) with 5% exact and 5% near copies."""
    rng = np.random.default_rng(seed)
    n_exact = n_near = rows // 20
    n_base = rows - n_exact - n_near
    texts = corpus.plain_texts(n_base, seed) if kind == "real" else corpus.zipf_texts(n_base, seed)
    if kind == "real":

        def new_word() -> str:  # a word from another document: natural vocabulary
            words = texts[int(rng.integers(n_base))].split()
            return words[int(rng.integers(len(words)))]
    else:

        def new_word() -> str:
            return f"w{int(rng.integers(30_000))}"

    kind_of = ["base"] * n_base
    group = list(range(n_base))
    for k in range(n_exact):
        src = int(rng.integers(n_base))
        style = k % 3
        if style == 0:
            t = texts[src]
        elif style == 1:
            t = texts[src].upper()
        else:  # re-spaced: doubled spaces and line breaks
            words = texts[src].split()
            t = "".join(w + ("  " if i % 7 else "\n") for i, w in enumerate(words))
        texts.append(t)
        kind_of.append("exact")
        group.append(src)
    for _ in range(n_near):
        src = int(rng.integers(n_base))
        words = texts[src].split()
        for _ in range(int(rng.choice([1, 1, 2, 2, 3]))):
            op, at = int(rng.integers(3)), int(rng.integers(len(words)))
            w = new_word()
            if op == 0:
                words[at] = w
            elif op == 1:
                words.insert(at, w)
            elif len(words) > 1:
                del words[at]
        texts.append(" ".join(words))
        kind_of.append("near")
        group.append(src)
    order = rng.permutation(rows)
    inv = np.empty(rows, dtype=np.int64)
    inv[order] = np.arange(rows)
    texts = [texts[i] for i in order]
    kind_of = [kind_of[i] for i in order]
    group_arr = np.array(group)[order]
    # The source row of a copy: where its base doc landed after shuffling.
    source = np.where(np.array(kind_of) == "base", -1, inv[group_arr])
    return Corpus(texts, group_arr, kind_of, source)


def shingles(text: str) -> set[str]:
    w = text.split()
    if len(w) < NGRAM:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1)}


def find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def run_datasketch(norm: list[str]) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    perms = MinHash(num_perm=NUM_PERM).permutations
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    parent = list(range(len(norm)))
    for i, text in enumerate(norm):
        m = MinHash(num_perm=NUM_PERM, permutations=perms, scheme="affine32")
        m.update_batch([s.encode("utf-8") for s in shingles(text)])
        for j in lsh.query(m):
            a, b = find(parent, i), find(parent, j)
            if a != b:
                parent[max(a, b)] = min(a, b)
        lsh.insert(i, m)
    return np.array([find(parent, i) for i in range(len(norm))])


def score(c: Corpus, cluster: np.ndarray, norm: Sequence[str], n: int) -> dict[str, float]:
    """Recall on injected pairs (copy, source) by class; precision on removed rows."""
    hits: dict[str, list[bool]] = {"exact": [], "near>=0.85": [], "near<0.85": []}
    for i in range(n):
        src = int(c.source[i])
        if c.kind[i] == "base" or src >= n:
            continue
        same = bool(cluster[i] == cluster[src])
        if c.kind[i] == "exact":
            hits["exact"].append(same)
        else:
            a, b = shingles(norm[i]), shingles(norm[src])
            j = len(a & b) / max(1, len(a | b))
            hits["near>=0.85" if j >= 0.85 else "near<0.85"].append(same)
    # A removed row is correct when its cluster's kept row is from the same true group.
    kept_of = {}
    for i in range(n):
        kept_of.setdefault(int(cluster[i]), i)
    removed = [i for i in range(n) if kept_of[int(cluster[i])] != i]
    good = sum(c.group[i] == c.group[kept_of[int(cluster[i])]] for i in removed)
    out = {k: (float(np.mean(v)) if v else float("nan")) for k, v in hits.items()}
    out["n_near>=0.85"] = len(hits["near>=0.85"])
    out["n_near<0.85"] = len(hits["near<0.85"])
    out["precision"] = good / len(removed) if removed else 1.0
    out["removed"] = len(removed)
    return out


class Timer:
    """Wall and CPU seconds (CPU summed over all threads of this process)."""

    def __enter__(self) -> Timer:
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mib(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (Linux), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is Ladle's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class LazyNorm(Sequence[str]):
    """Normalised texts computed on demand (scoring needs only the injected pairs)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return _core.dedup_normalize([self.texts[i]])[0]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000, help="corpus rows (default 100k)")
    ap.add_argument(
        "--ds-rows",
        type=int,
        default=None,
        help="run datasketch on the first N rows only (Ladle is also timed on them "
        "for the ratio); default: all rows",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--ladle-only",
        action="store_true",
        help="only Ladle's run, for time and peak RSS at large --rows",
    )
    ap.add_argument(
        "--corpus",
        choices=["real", "synthetic", "both"],
        default="both",
        help="real: windows of natural text from the machine (benchmarks/corpus.py), "
        "reported first; synthetic: Zipf-distributed made-up words (default: both)",
    )
    args = ap.parse_args()
    threads = os.environ.get("RAYON_NUM_THREADS") or str(os.cpu_count())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {corpus.machine()}")
    print(
        f"rows={args.rows:,}  ngram={NGRAM}  num_perm={NUM_PERM}  threshold={THRESHOLD}  "
        f"Ladle threads (rayon)={threads}  datasketch: 1 thread"
    )
    for kind in ["real", "synthetic"] if args.corpus == "both" else [args.corpus]:
        print(f"\n## corpus: {kind}")
        bench(args, kind)
    print(f"\nload average at the end: {corpus.load_average()}")


def bench(args: argparse.Namespace, kind: str) -> None:
    t0 = time.perf_counter()
    c = make_corpus(args.rows, args.seed, kind)
    norm: Sequence[str] = LazyNorm(c.texts) if args.ladle_only else _core.dedup_normalize(c.texts)
    print(f"corpus built in {time.perf_counter() - t0:.1f}s; RSS {status_mib('VmRSS'):.0f} MiB")
    rss_base = status_mib("VmRSS")
    peak_reset = reset_peak_rss()

    n = args.rows
    with Timer() as t_ladle:
        res = deduplicate(c.texts, threshold=THRESHOLD, ngram=NGRAM, num_perm=NUM_PERM)
    rss_ladle = status_mib("VmHWM") if peak_reset else rss_mib()
    ladle_score = score(c, res.cluster, norm, n)
    if args.ladle_only:
        print(
            f"Ladle {n:,} rows: {t_ladle.wall:.2f}s wall, {t_ladle.cpu:.2f}s CPU, "
            f"{n / t_ladle.wall:,.0f} docs/s; recall exact {ladle_score['exact']:.4f}, "
            f"J>=0.85 {ladle_score['near>=0.85']:.4f}, precision {ladle_score['precision']:.4f}; "
            f"peak RSS during Ladle {rss_ladle:.0f} MiB, of which the corpus (Python strings) "
            f"{rss_base:.0f} MiB: Ladle's own peak {rss_ladle - rss_base:.0f} MiB"
        )
        return
    with Timer() as t_ladle_ds:
        res_ds_scheme = deduplicate(c.texts, threshold=THRESHOLD, scheme="datasketch")
    with Timer() as t_ladle_exact:
        exact_only = deduplicate(c.texts, near=False)
    with Timer() as t_ladle_exact_pre:
        deduplicate(norm, near=False, normalize=False)

    m = args.ds_rows or n
    with Timer() as t_ladle_sub:
        res_sub = deduplicate(c.texts[:m], threshold=THRESHOLD, ngram=NGRAM, num_perm=NUM_PERM)
    with Timer() as t_ds:
        ds_cluster = run_datasketch(norm[:m])
    ds_score = score(c, ds_cluster, norm, m)
    ladle_sub_score = score(c, res_sub.cluster, norm, m) if m != n else ladle_score

    with Timer() as t_md5:
        seen: set[bytes] = set()
        for t in norm:
            seen.add(hashlib.md5(t.encode("utf-8")).digest())
    md5_keep = len(seen)

    line = "-" * 96
    print()
    print(
        f"{'system':<46}{'rows':>9}{'wall s':>8}{'CPU s':>8}{'docs/s':>11}{'ratio':>7}"
        f"{'ratio CPU':>10}"
    )

    def row(name: str, rows: int, t: Timer, ref: Timer, ref_rows: int) -> None:
        ratio = (rows / t.wall) / (ref_rows / ref.wall)
        ratio_cpu = (rows / t.cpu) / (ref_rows / ref.cpu)
        print(
            f"{name:<46}{rows:>9,}{t.wall:>8.2f}{t.cpu:>8.2f}{rows / t.wall:>11,.0f}"
            f"{ratio:>6.1f}x{ratio_cpu:>9.1f}x"
        )

    print(line)
    row("datasketch MinHash+LSH (1 thread)", m, t_ds, t_ds, m)
    row("Ladle exact+near, fast scheme", m, t_ladle_sub, t_ds, m)
    if m != n:
        row("Ladle exact+near, fast scheme (all rows)", n, t_ladle, t_ds, m)
    row("Ladle exact+near, datasketch scheme (SHA-1)", n, t_ladle_ds, t_ds, m)
    print(line)
    row("md5 exact dedup (Python, pre-normalised)", n, t_md5, t_md5, n)
    row("Ladle exact dedup (incl. normalisation)", n, t_ladle_exact, t_md5, n)
    row("Ladle exact dedup (pre-normalised)", n, t_ladle_exact_pre, t_md5, n)
    print()
    print(
        f"quality on {m:,} rows      recall exact/case/ws   recall J>=0.85   recall J<0.85"
        f"   precision   removed"
    )
    for name, sc in (("datasketch", ds_score), ("Ladle", ladle_sub_score)):
        print(
            f"{name:<22}{sc['exact']:>22.4f}{sc['near>=0.85']:>17.4f}{sc['near<0.85']:>16.4f}"
            f"{sc['precision']:>12.4f}{sc['removed']:>10,}"
        )
    print(
        f"(near pairs: {ladle_sub_score['n_near>=0.85']:,} with J>=0.85, "
        f"{ladle_sub_score['n_near<0.85']:,} below)"
    )
    if m != n:
        sc = ladle_score
        print(
            f"Ladle on all {n:,} rows: recall exact {sc['exact']:.4f}, J>=0.85 "
            f"{sc['near>=0.85']:.4f}, J<0.85 {sc['near<0.85']:.4f}, precision {sc['precision']:.4f}"
        )
    print(
        f"Ladle: {res.stats.exact_removed:,} exact + {res.stats.near_removed:,} near removed, "
        f"{res.stats.near_clusters:,} near clusters, bands x rows = {res.stats.bands} x {res.stats.rows_per_band}, "
        f"candidates {res.stats.candidate_pairs:,} -> verified {res.stats.verified_pairs:,}; "
        f"exact-only kept {exact_only.stats.rows_out:,} (md5 kept {md5_keep:,}); "
        f"datasketch-scheme run kept {res_ds_scheme.stats.rows_out:,}"
    )
    print(
        f"RSS: {rss_base:.0f} MiB after building the corpus; peak during Ladle's run "
        f"{rss_ladle:.0f} MiB (Ladle's own: {rss_ladle - rss_base:.0f} MiB)"
    )
    print(
        f"RATIO dedup {kind}: Ladle / datasketch = "
        f"{(m / t_ladle_sub.wall) / (m / t_ds.wall):.1f}x on {m:,} rows",
        flush=True,
    )


if __name__ == "__main__":
    main()
