"""Data prep benchmark: the usual Python pipeline vs the tokenizers crate vs `ladle prep`.

    python benchmarks/prep.py --rows 100000      # the README figures (minutes on 2 cores)
    python benchmarks/prep.py --rows 20000 --corpus real   # a quicker check

Two corpora, real text first (``benchmarks/corpus.py``: Python docstrings and source,
man pages in several languages, /usr/share/doc; written to benchmarks/out/corpus.jsonl,
the file recipes/large-corpus-prep.yaml reads), then the older synthetic one
(~200-word vocabulary, benchmarks/out/corpus-synthetic.jsonl); each deterministic for a
seed. The real SmolLM2 tokenizer and template, for each corpus:

(a) the usual pipeline: ``datasets.map`` (num_proc=2) with ``apply_chat_template``,
    tokenization and an assistant-only mask by prefix rendering, then TRL's
    ``pack_dataset(strategy="bfd")`` at 2048;
(b) the ``tokenizers`` crate alone: ``Tokenizer.encode_batch_fast`` on the pre-rendered
    strings, all cores (what tokenization alone costs on the default path);
(c) ``ladle prep`` cold (empty cache; in-process, and as a CLI run with its peak RSS and
    ``--verbose`` per-stage seconds) and warm (cache hit, in-process and as a CLI run).

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
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import corpus
from ladle._core import IGNORE_INDEX

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
MAX_LENGTH = 2048


def write_corpus(rows: int, seed: int = 0, kind: str = "real") -> tuple[Path, str]:
    """The chat corpus of ``kind`` as JSONL (cached by rows/seed/kind/generator version):
    its path and a line describing it."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / ("corpus.jsonl" if kind == "real" else f"corpus-{kind}.jsonl")
    meta = path.with_suffix(".meta.json")
    want = {"rows": rows, "seed": seed, "kind": kind, "generator": corpus.GENERATOR_VERSION}
    if path.is_file() and meta.is_file():
        got = json.loads(meta.read_text())
        if {k: got.get(k) for k in want} == want:
            return path, str(got.get("about", kind))
    convs, about = corpus.conversations(kind, rows, seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for row in convs:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    meta.write_text(json.dumps({**want, "about": about}))
    return path, about


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


_CLI_WITH_PEAK = """
import sys
from ladle.cli import main
rc = main()
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("peak-rss-kib", line.split()[1])
sys.exit(rc)
"""


def run_cli_cold(recipe_path: Path, home: Path) -> tuple[float, float, str]:
    """A cold ``ladle prep --force`` as its own process: (seconds, peak RSS in GB, the
    ``--verbose`` stage line). What a user runs, interpreter start-up included. The peak
    is the child's own VmHWM: getrusage's ru_maxrss would count this (large) process,
    whose pages a forked child shares until it execs."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _CLI_WITH_PEAK,
            "prep",
            str(recipe_path),
            "--force",
            "--quiet",
            "-v",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "LADLE_HOME": str(home), "COLUMNS": "300"},
    )
    t = time.perf_counter() - t0
    if out.returncode != 0:
        print(out.stdout, out.stderr)
        raise SystemExit("ladle prep failed")
    lines = out.stdout.splitlines()
    stages = next((ln for ln in lines if ln.startswith("stages")), "")
    peak = next((int(ln.split()[1]) for ln in lines if ln.startswith("peak-rss-kib")), 0)
    return t, peak * 1024 / 1e9, stages


def bench(kind: str, rows_n: int, seed: int, model_dir: Path) -> None:
    t0 = time.perf_counter()
    corpus_path, about = write_corpus(rows_n, seed, kind)
    print(
        f"\n## corpus: {kind} ({rows_n:,} rows, {corpus_path.stat().st_size / 1e6:.0f} MB, "
        f"{time.perf_counter() - t0:.1f}s to build)\n{about}",
        flush=True,
    )
    print(
        "(a) datasets.map + apply_chat_template + mask (num_proc=2) + trl pack_dataset bfd ...",
        flush=True,
    )
    hf = run_hf(corpus_path, model_dir)
    print("(b) tokenizers encode_batch_fast on pre-rendered text ...", flush=True)
    tk = run_tokenizers(corpus_path, model_dir)
    print("(c) ladle prep cold / warm ...", flush=True)
    la = run_ladle(corpus_path, model_dir)
    t_cli_cold, rss, stage_line = run_cli_cold(OUT / "bench-recipe.yaml", OUT / "ladle-home")
    cmp = compare(hf, la["result"])

    m = la["result"].manifest.train.model_dump()
    n = rows_n
    t_a = hf["t_map"] + hf["t_pack"]
    table = [
        ("(a) datasets.map + TRL bfd", t_a, hf["tokens"]),
        ("    of which TRL pack_dataset", hf["t_pack"], hf["tokens"]),
        ("(b) tokenizers encode_batch_fast", tk["t"], tk["tokens"]),
        ("(c) ladle prep, cold (in-process)", la["t_cold"], m["tokens"]),
        ("(c) ladle prep, cold (CLI, with startup)", t_cli_cold, m["tokens"]),
        ("(c) ladle prep, warm (in-process)", la["t_warm"], m["tokens"]),
        ("(c) ladle prep, warm (CLI, with startup)", la["t_cli"], m["tokens"]),
    ]
    print()
    print(f"| {kind} corpus | seconds | rows/s | tokens/s | (a) / this |")
    print("|---|---:|---:|---:|---:|")
    for name, t, tokens in table:
        print(f"| {name} | {t:.2f} | {n / t:,.0f} | {tokens / t:,.0f} | {t_a / t:.1f}x |")
    print()
    stages = la["result"].manifest.stages
    print("ladle prep cold, in-process, " + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()))
    print(f"ladle prep cold, CLI: peak RSS {rss:.2f} GB; {stage_line}")
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
    print(f"RATIO prep {kind}: (a) / ladle cold in-process = {t_a / la['t_cold']:.1f}x", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000, help="corpus rows (default 100000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--corpus",
        choices=["real", "synthetic", "both"],
        default="both",
        help="real: natural text from the machine (benchmarks/corpus.py), reported first; "
        "synthetic: the older ~200-word corpus (default: both)",
    )
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
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {corpus.machine()}")
    print(f"torch threads: {cores} (unused here); rayon and tokenizers: all {cores} cores")

    from ladle.models import resolve_model

    model_dir = Path(resolve_model("builtin:smollm2-135m-instruct"))
    kinds = ["real", "synthetic"] if args.corpus == "both" else [args.corpus]
    for kind in kinds:
        bench(kind, args.rows, args.seed, model_dir)
    print(f"\nload average at the end: {corpus.load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
