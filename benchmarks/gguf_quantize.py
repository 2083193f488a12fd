"""GGUF quantization benchmark: Ladle's Rust Q8_0/Q4_0 versus ``gguf.quants.quantize``
(the numpy reference llama.cpp's Python converter uses), same tensors, one run.

The tensors are SmolLM2-135M-Instruct's matrices (the builtin model, float32), so the
value distribution is a real one. Both sides get float32 input already in memory; the
output bytes are checked identical before anything is timed. Ladle runs on rayon's
threads (RAYON_NUM_THREADS, default all cores, printed); numpy is single-threaded.

    python benchmarks/gguf_quantize.py              # every matrix of SmolLM2 (~135M values)
    python benchmarks/gguf_quantize.py --limit 20   # the first 20 matrices (quick)
"""

from __future__ import annotations

import argparse
import os
import time

import gguf
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N matrices (0: all)")
    args = ap.parse_args()

    from safetensors.numpy import load_file

    from ladle._core import gguf_quantize
    from ladle.models import resolve_model

    folder = resolve_model("builtin:smollm2-135m-instruct")
    weights = load_file(folder / "model.safetensors")
    mats = [w.astype(np.float32) for w in weights.values() if w.ndim == 2]
    mats = mats[: args.limit] if args.limit else mats
    n = sum(m.size for m in mats)
    threads = os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count()))
    print(f"{len(mats)} matrices, {n / 1e6:.1f}M values; Ladle threads: {threads}")
    for name, qtype in (
        ("q8_0", gguf.GGMLQuantizationType.Q8_0),
        ("q4_0", gguf.GGMLQuantizationType.Q4_0),
    ):
        flats = [np.ascontiguousarray(m).reshape(-1) for m in mats]
        assert all(
            gguf_quantize(f, name).tobytes() == gguf.quants.quantize(m, qtype).tobytes()
            for f, m in zip(flats[:3], mats[:3], strict=True)
        ), "outputs differ"
        t = time.perf_counter()
        for m in mats:
            gguf.quants.quantize(m, qtype)
        ref = time.perf_counter() - t
        t = time.perf_counter()
        for f in flats:
            gguf_quantize(f, name)
        ours = time.perf_counter() - t
        print(
            f"{name}: gguf.quants {ref:.2f} s ({n / ref / 1e6:.0f}M values/s), "
            f"Ladle {ours:.2f} s ({n / ours / 1e6:.0f}M values/s), ratio {ref / ours:.1f}x"
        )


if __name__ == "__main__":
    main()
