"""Prep on Ray vs one machine vs ``datasets.map``: one corpus, four ways, same cores.

    python benchmarks/prep_ray.py                      # the issue's size: 1M rows (long)
    python benchmarks/prep_ray.py --rows 50000 --hf-rows 20000   # a loaded 2-core box

The corpus is the prep benchmark's (benchmarks/prep.py: long-tailed chat rows, English
and code), max_length 2048, dedup off (as in prep.py, so every way does the same work):

(1) ``ladle prep`` with the local engine;
(2) the Ray engine on a one-node local cluster (``--cpus`` CPUs);
(3) the Ray engine on a two-node local cluster (both nodes on this machine, the CPUs
    split between them);
(4) HF ``datasets.map`` with ``num_proc=2`` (apply_chat_template, tokenize, assistant
    mask; prep.py's anchor, TRL packing included) on ``--hf-rows`` rows.

Each way runs in its own process. Reported: tokens/s, wall seconds, peak RSS of the
driver and of the largest Ray worker (sampled every 0.2 s), Ray's overhead over the local
engine on the same cores, and whether the Ray shards are byte-identical to the local
ones. Then dedup docs/s for both engines on ``--dedup-rows`` rows (kept rows compared).
Cluster start-up is reported apart: a real cluster is already running.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(ROOT / "benchmarks"))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


class WorkerRss:
    """Largest RSS of any Ray worker process (``ray::...``), sampled in a thread."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if cmd.startswith("ray::") and p.info["memory_info"] is not None:
                    self.peak = max(self.peak, p.info["memory_info"].rss / 2**20)
            self._stop.wait(0.2)

    def __enter__(self) -> WorkerRss:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def write_recipe(corpus: Path, model_dir: Path, engine: str) -> Path:
    path = OUT / f"ray-bench-{engine}.yaml"
    body = {
        "name": "bench",
        "seed": 0,
        "model": {"base": str(model_dir)},
        "data": {
            "datasets": [{"path": str(corpus)}],
            "max_length": 2048,
            "dedup": {"enabled": False},
            "engine": engine,
        },
        "evaluate": {"enabled": False},
    }
    path.write_text(json.dumps(body))
    return path


def shard_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.glob("train-*.parquet")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def one(way: str, corpus: Path, model_dir: Path, cpus: int) -> dict[str, Any]:
    """Run one way in this (fresh) process."""
    os.environ["LADLE_HOME"] = str(OUT / f"ray-bench-home-{way}")
    from ladle.data import prep
    from ladle.recipe import load_recipe

    if way == "hf":
        from prep import run_hf  # benchmarks/prep.py

        t0 = time.perf_counter()
        res = run_hf(corpus, model_dir)  # num_proc=2, as in prep.py
        wall = time.perf_counter() - t0
        return {
            "way": way,
            "seconds": wall,
            "tokens": res["tokens"],
            "driver_mib": peak_mib(),
            "worker_mib": children_peak_mib(),
        }
    cluster = None
    start = 0.0
    if way.startswith("ray"):
        import ray
        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        if way == "ray1":
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
        else:
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus // 2})
            cluster.add_node(num_cpus=cpus - cpus // 2)
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        cluster.wait_for_nodes()
        start = time.perf_counter() - t0
    engine = "local" if way == "local" else "ray"
    recipe = load_recipe(write_recipe(corpus, model_dir, engine))
    with WorkerRss() as rss:
        t0 = time.perf_counter()
        res = prep(recipe, force=True)
        wall = time.perf_counter() - t0
    if cluster is not None:
        import ray

        ray.shutdown()
        cluster.shutdown()
    return {
        "way": way,
        "seconds": wall,
        "cluster_start": start,
        "tokens": res.manifest.train.tokens,
        "driver_mib": peak_mib(),
        "worker_mib": rss.peak,
        "digest": shard_digest(res.path),
    }


def dedup_way(corpus: Path, rows: int, cpus: int) -> dict[str, Any]:
    """Dedup docs/s: local ``dedup_rows`` vs ``dedup_rows_ray`` (one-node cluster)."""
    import ray
    from ray.cluster_utils import Cluster

    from ladle.data.ray_dedup import dedup_rows_ray
    from ladle.dedup import dedup_rows

    with open(corpus) as f:
        data = [json.loads(line) for _, line in zip(range(rows), f, strict=False)]
    t0 = time.perf_counter()
    local = dedup_rows(data, {"threshold": 0.8})
    t_local = time.perf_counter() - t0
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    t0 = time.perf_counter()
    on_ray = dedup_rows_ray(data, {"threshold": 0.8})
    t_ray = time.perf_counter() - t0
    ray.shutdown()
    cluster.shutdown()
    return {
        "rows": len(data),
        "local_docs_s": len(data) / t_local,
        "ray_docs_s": len(data) / t_ray,
        "same_kept": bool((on_ray.keep == local.keep).all()),
        "removed": len(data) - int(local.keep.sum()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000, help="corpus rows (default 1M)")
    ap.add_argument("--hf-rows", type=int, default=None, help="rows for datasets.map (default all)")
    ap.add_argument("--dedup-rows", type=int, default=100_000, help="rows for dedup docs/s")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs for every way")
    ap.add_argument("--skip", nargs="*", default=[], help="ways to skip: local ray1 ray2 hf dedup")
    ap.add_argument(
        "--one", nargs=4, metavar=("WAY", "CORPUS", "MODEL", "CPUS"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.one:
        way, corpus, model, cpus = args.one
        if way == "dedup":
            res = dedup_way(Path(corpus), int(model), int(cpus))
        else:
            res = one(way, Path(corpus), Path(model), int(cpus))
        print("RESULT " + json.dumps(res))
        return 0

    from ladle.models import resolve_model
    from prep import write_corpus

    model_dir = resolve_model("builtin:smollm2-135m-instruct")
    corpus = write_corpus(args.rows)
    hf_corpus = corpus
    if args.hf_rows and args.hf_rows < args.rows:
        hf_corpus = OUT / f"corpus-head-{args.hf_rows}.jsonl"
        with open(corpus) as f, open(hf_corpus, "w") as g:
            for _, line in zip(range(args.hf_rows), f, strict=False):
                g.write(line)
    print(f"corpus: {args.rows:,} rows; {args.cpus} CPUs per way; load {os.getloadavg()[0]:.1f}")
    results: dict[str, dict[str, Any]] = {}
    for way in ("local", "ray1", "ray2", "hf", "dedup"):
        if way in args.skip:
            continue
        src = hf_corpus if way == "hf" else corpus
        extra = str(args.dedup_rows) if way == "dedup" else str(model_dir)
        out = subprocess.run(
            [sys.executable, __file__, "--one", way, str(src), extra, str(args.cpus)],
            capture_output=True,
            text=True,
        )
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            print(f"{way}: failed\n{out.stderr[-3000:]}")
            continue
        results[way] = json.loads(line[0][7:])
        print(f"{way}: {json.dumps(results[way])}  (load {os.getloadavg()[0]:.1f})")

    print("\n| way | wall s | tokens/s | driver peak RSS MiB | largest worker RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for way, r in results.items():
        if way == "dedup":
            continue
        print(
            f"| {way} | {r['seconds']:.1f} | {r['tokens'] / r['seconds']:,.0f} | "
            f"{r['driver_mib']:,.0f} | {r['worker_mib']:,.0f} |"
        )
    loc = results.get("local")
    for way in ("ray1", "ray2"):
        if loc and way in results:
            r = results[way]
            print(
                f"{way}: Ray overhead {r['seconds'] / loc['seconds'] - 1:+.0%} over local "
                f"(cluster start {r['cluster_start']:.1f} s not counted); shards "
                f"{'byte-identical' if r['digest'] == loc['digest'] else 'DIFFER'}"
            )
    if loc and "hf" in results:
        hf = results["hf"]
        print(
            f"local vs datasets.map tokens/s: {loc['tokens'] / loc['seconds'] / (hf['tokens'] / hf['seconds']):.1f}x"
        )
    if "dedup" in results:
        d = results["dedup"]
        print(
            f"dedup {d['rows']:,} rows: local {d['local_docs_s']:,.0f} docs/s, ray "
            f"{d['ray_docs_s']:,.0f} docs/s, same kept rows: {d['same_kept']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
