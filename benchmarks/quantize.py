"""NF4 pre-quantization: Ladle vs bitsandbytes/transformers, on the same checkpoints.

For each model, in one run on the same machine:

(a) ``bitsandbytes.functional.quantize_4bit`` (CPU) over every Linear weight, tensors
    already in memory (time of the quantize calls only); Ladle's ``quantize_nf4`` on the
    same tensors for an in-memory comparison;
(b) ``from_pretrained(..., BitsAndBytesConfig(load_in_4bit=True))`` then
    ``save_pretrained``: load and save times, peak RSS (subprocess);
(c) ``ladle quantize`` of the same folder: time and peak RSS (subprocess);
(d) a plain read+write copy of the same bytes (16 MiB buffers, fsync like (c)): the
    memory/disk bound;
(e) loading (c)'s pre-quantized output vs (b)'s quantize-on-load;
(f) one 256 MiB float32 tensor in memory, ``quantize_nf4`` vs ``quantize_4bit``: the
    kernel's own speed (parallel across the blocks of one tensor, no per-tensor
    overhead), printed beside this machine's measured memory-copy bandwidth.

Models: SmolLM2-135M (builtin, float32 on disk) and a synthetic Llama with random bf16
weights (``--big-params``, default 1.1B; use e.g. ``--big-params 2e8`` for a quick run).
Sources are read from the page cache (they were just written or read). Threads: torch
and Ladle (rayon) both get ``--threads`` (default: all cores), set explicitly below.

Run: ``nice -n 10 python benchmarks/quantize.py`` (add ``--big-params 2e8`` to be quick).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import corpus

CHILD_PRELUDE = """
import json, os, resource, sys, time
import torch
torch.set_num_threads({threads})
def _status(key):
    # VmHWM/VmRSS of this process image; getrusage's ru_maxrss survives fork+exec and would
    # report the parent's peak.
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
def rss_mb():
    return _status("VmHWM")
def cur_mb():
    return _status("VmRSS")
"""

CHILD_BNB = """
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
base = cur_mb()
t0 = time.perf_counter()
cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                         bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
model = AutoModelForCausalLM.from_pretrained({src!r}, quantization_config=cfg)
t1 = time.perf_counter()
model.save_pretrained({out!r})
t2 = time.perf_counter()
print(json.dumps({{"load": t1 - t0, "save": t2 - t1, "peak_mb": rss_mb(), "base_mb": base}}))
"""

CHILD_LADLE = """
from ladle.quant import quantize_checkpoint, linear_plan, _reduction_params
linear_plan({src!r}, None); _reduction_params()  # imports + meta model: the constant part
base = cur_mb()
t0 = time.perf_counter()
quantize_checkpoint({src!r}, {out!r}, double_quant=True)
t1 = time.perf_counter()
print(json.dumps({{"time": t1 - t0, "peak_mb": rss_mb(), "base_mb": base}}))
"""

CHILD_LOAD = """
from transformers import AutoModelForCausalLM
t0 = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained({src!r})
t1 = time.perf_counter()
assert model.is_loaded_in_4bit
print(json.dumps({{"load": t1 - t0, "peak_mb": rss_mb()}}))
"""


def child(code: str, threads: int, **kw: str) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    src = CHILD_PRELUDE.format(threads=threads) + code.format(**kw)
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_synthetic_llama(out: Path, params: float, tokenizer_src: Path) -> Path:
    """A Llama with random bf16 weights, TinyLlama-shaped, layers scaled to ``params``."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    h, inter, vocab, kv = 2048, 5632, 32000, 4
    per_layer = 2 * h * h + 2 * h * (h // 32 * kv) + 3 * h * inter + 2 * h
    layers = max(1, round((params - 2 * vocab * h) / per_layer))
    cfg = LlamaConfig(
        hidden_size=h,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    out.mkdir(parents=True)
    cfg.save_pretrained(out)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (h // 32 * kv, h),
            p + "self_attn.v_proj.weight": (h // 32 * kv, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    shapes |= {"model.norm.weight": (h,), "lm_head.weight": (vocab, h)}
    # ~1 GB shards, written one at a time so generation never holds the whole model.
    gen = torch.Generator().manual_seed(0)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        if size and size + 2 * n > 1 << 30:
            shards.append({})
            size = 0
        shards[-1][name] = shape  # type: ignore[assignment]
        size += 2 * n
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard.items():
            if len(shape) == 1:  # type: ignore[arg-type]
                tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
            else:
                tensors[name] = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
            weight_map[name] = fname
            total += tensors[name].numel() * 2
        save_file(tensors, out / fname, metadata={"format": "pt"})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_src / f).exists():
            shutil.copy(tokenizer_src / f, out / f)
    return out


def linear_tensors(src: Path) -> list[str]:
    from ladle.quant import linear_plan

    return linear_plan(src, None)[0]


def bench_in_memory(src: Path, threads: int) -> dict:
    """(a): quantize_4bit over every Linear weight, and Ladle's drop-in on the same.

    Each library runs its own loop over a shard's tensors, as each is used to quantize a
    checkpoint. Alternating them per tensor made Ladle's small tensors (SmolLM2's are 1.3
    to 3.5 MB, under a millisecond each) start while torch's OpenMP workers from the
    bitsandbytes call just before were still spinning on both cores.
    """
    import bitsandbytes.functional as F
    import torch
    from safetensors import safe_open

    from ladle.quant import quantize_nf4, source_shards

    torch.set_num_threads(threads)
    wanted = set(linear_tensors(src))
    t_bnb = t_ladle = 0.0
    nbytes = 0
    largest = 0
    for shard in source_shards(src):
        with safe_open(shard, "pt") as f:
            tensors = []
            for k in f.keys():  # noqa: SIM118
                t = f.get_tensor(k)
                largest = max(largest, t.numel() * t.element_size())
                if k in wanted:
                    tensors.append(t)
                    nbytes += t.numel() * t.element_size()
        t0 = time.perf_counter()
        for t in tensors:
            F.quantize_4bit(t, blocksize=64, quant_type="nf4", compress_statistics=True)
        t1 = time.perf_counter()
        time.sleep(0.5)  # let torch's worker threads go idle
        t2 = time.perf_counter()
        for t in tensors:
            quantize_nf4(t, blocksize=64, double_quant=True)
        t3 = time.perf_counter()
        t_bnb += t1 - t0
        t_ladle += t3 - t2
        del tensors
    return {"bytes": nbytes, "bnb": t_bnb, "ladle": t_ladle, "largest": largest}


def copy_bandwidth(threads: int, mb: int = 256) -> float:
    """In-memory copy speed (bytes copied per second; numpy's memcpy of ``mb`` MiB, best
    of 5, ``threads`` slices copied in parallel): the bound an in-memory quantizer that
    reads every byte once is held against."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    src = np.ones(mb << 18, dtype=np.float32)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(len(src)), threads)
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts if len(p)]

    def part(ab: tuple[int, int]) -> None:
        np.copyto(dst[ab[0] : ab[1]], src[ab[0] : ab[1]])  # releases the GIL

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            t0 = time.perf_counter()
            list(pool.map(part, bounds))
            best = min(best, time.perf_counter() - t0)
    return src.nbytes / best


def big_tensor(threads: int, mb: int = 256) -> dict[str, float]:
    """One large tensor, in memory: the kernel's own speed (parallel across the blocks of
    one tensor), with no per-tensor overhead. Bytes of input per second, best of 3."""
    import bitsandbytes.functional as F
    import torch

    from ladle.quant import quantize_nf4

    torch.set_num_threads(threads)
    t = torch.randn(mb << 18, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, fn in (
        ("ladle", lambda: quantize_nf4(t, blocksize=64, double_quant=True)),
        (
            "bnb",
            lambda: F.quantize_4bit(t, blocksize=64, quant_type="nf4", compress_statistics=True),
        ),
    ):
        best = float("inf")
        for _ in range(3 if name == "ladle" else 1):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = t.numel() * 4 / best
    return out


def plain_copy(src: Path, dst: Path) -> float:
    """(d): read + write the checkpoint's bytes, 16 MiB at a time, fsync per file."""
    dst.mkdir()
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    t0 = time.perf_counter()
    for p in sorted(src.glob("*.safetensors")):
        with open(p, "rb", buffering=0) as fi, open(dst / p.name, "wb", buffering=0) as fo:
            while n := fi.readinto(buf):
                fo.write(view[:n])
            os.fsync(fo.fileno())
    return time.perf_counter() - t0


def warm(src: Path) -> int:
    """Read every shard once so all runs start from the page cache; returns bytes."""
    total = 0
    for p in src.glob("*.safetensors"):
        with open(p, "rb") as f:
            while chunk := f.read(64 << 20):
                total += len(chunk)
    return total


def run_model(name: str, src: Path, work: Path, threads: int) -> dict:
    print(f"== {name}: {src}", flush=True)
    total = warm(src)
    a = bench_in_memory(src, threads)
    print(f"   (a) done: bnb {a['bnb']:.2f}s, ladle in-memory {a['ladle']:.2f}s", flush=True)
    b = child(CHILD_BNB, threads, src=str(src), out=str(work / f"{name}-bnb"))
    print(f"   (b) done: load {b['load']:.2f}s save {b['save']:.2f}s", flush=True)
    warm(src)
    c = child(CHILD_LADLE, threads, src=str(src), out=str(work / f"{name}-ladle"))
    print(f"   (c) done: {c['time']:.2f}s", flush=True)
    warm(src)
    d = plain_copy(src, work / f"{name}-copy")
    e = child(CHILD_LOAD, threads, src=str(work / f"{name}-ladle"))
    for sub in ("bnb", "ladle", "copy"):
        shutil.rmtree(work / f"{name}-{sub}", ignore_errors=True)
    return {"name": name, "total": total, "a": a, "b": b, "c": c, "d": d, "e": e}


def report(results: list[dict], threads: int, copy_bw: float) -> str:
    gb = 1e9
    lines = [
        f"threads: torch.set_num_threads({threads}), RAYON_NUM_THREADS={threads}; "
        "sources in page cache; double quant, blocksize 64",
        f"in-memory copy bandwidth on this machine ({threads} threads): "
        f"{copy_bw / gb:.1f} GB/s copied",
        "",
        "| model | input | (a) bnb quantize_4bit | (a') ladle quantize_nf4 | (b) bnb load+save "
        "| (c) ladle quantize | (d) read+write copy | c/a | c/d | a'/a | a' / memory copy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a, b, c = r["a"], r["b"], r["c"]
        ga = a["bytes"] / a["bnb"] / gb
        ga2 = a["bytes"] / a["ladle"] / gb
        gbb = r["total"] / (b["load"] + b["save"]) / gb
        gc = r["total"] / c["time"] / gb
        gd = r["total"] / r["d"] / gb
        lines.append(
            f"| {r['name']} | {r['total'] / gb:.2f} GB | {ga:.3f} GB/s ({a['bnb']:.1f} s) "
            f"| {ga2:.2f} GB/s ({a['ladle']:.1f} s) | {gbb:.3f} GB/s ({b['load'] + b['save']:.1f} s) "
            f"| {gc:.2f} GB/s ({c['time']:.1f} s) | {gd:.2f} GB/s ({r['d']:.1f} s) "
            f"| {gc / ga:.1f}x | {gc / gd:.0%} | {ga2 / ga:.1f}x | {ga2 * gb / copy_bw:.0%} |"
        )
    lines += [
        "",
        "| model | largest tensor | (b) peak RSS | (c) peak RSS | (c) RSS after imports "
        "| (c) peak - imports | load: (b) quantize-on-load | load: (c) pre-quantized | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b, c, e = r["b"], r["c"], r["e"]
        largest = r["a"]["largest"] / 1e6
        lines.append(
            f"| {r['name']} | {largest:.0f} MB | {b['peak_mb']:.0f} MB | {c['peak_mb']:.0f} MB "
            f"| {c['base_mb']:.0f} MB | {c['peak_mb'] - c['base_mb']:.0f} MB "
            f"({(c['peak_mb'] - c['base_mb']) / largest:.2f}x largest) "
            f"| {b['load']:.2f} s | {e['load']:.2f} s | {b['load'] / e['load']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-params", type=float, default=1.1e9, help="synthetic Llama size")
    ap.add_argument("--models", default="smollm2,big", help="comma list: smollm2, big")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: tmp)")
    args = ap.parse_args()

    from ladle.models import resolve_model

    smol = resolve_model("builtin:smollm2-135m-instruct")
    work = Path(tempfile.mkdtemp(prefix="ladle-bench-quant-", dir=args.workdir))
    results = []
    try:
        models = args.models.split(",")
        if "smollm2" in models:
            results.append(run_model("SmolLM2-135M (f32)", smol, work, args.threads))
        if "big" in models:
            src = make_synthetic_llama(work / "synthetic", args.big_params, smol)
            n = sum(p.stat().st_size for p in src.glob("*.safetensors")) / 2
            label = f"synthetic Llama {n / 1e9:.2f}B (bf16)"
            results.append(run_model(label, src, work, args.threads))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    copy_bw = copy_bandwidth(args.threads)
    print()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {corpus.machine()}")
    print(report(results, args.threads, copy_bw))
    big = big_tensor(args.threads)
    print(
        f"one 256 MiB float32 tensor in memory: ladle quantize_nf4 {big['ladle'] / 1e9:.2f} GB/s, "
        f"bnb quantize_4bit {big['bnb'] / 1e9:.3f} GB/s ({big['ladle'] / big['bnb']:.1f}x); "
        f"{big['ladle'] / copy_bw:.0%} of the {copy_bw / 1e9:.1f} GB/s memory copy"
    )
    print(
        f"RATIO nf4 in-memory: ladle / bnb = {big['ladle'] / big['bnb']:.1f}x, "
        f"{big['ladle'] / copy_bw:.0%} of memory copy"
    )


if __name__ == "__main__":
    main()
