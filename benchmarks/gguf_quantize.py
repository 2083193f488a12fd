"""GGUF quantization benchmark: Ladle against the two references its bytes equal, on the
same tensors and cores in one run.

1. ``q4_k_m``: Ladle's whole export (``write_gguf``: read safetensors, permute, quantize
   in Rust, write) against llama.cpp's own quantizer (``llama_model_quantize``, what
   ``llama-quantize IN.gguf OUT.gguf Q4_K_M`` runs) going from Ladle's float32 GGUF to
   Q4_K_M. llama.cpp comes from llama-cpp-python built from its PyPI source (cached,
   ``tests/_llama_cpp.py``; the first run builds it). Both sides get the same thread
   count; the two output files are checked tensor-identical.
2. k-quant blocks: Ladle's Rust Q4_K / Q6_K / Q5_0 against llama.cpp's own
   ``quantize_row_*_ref`` (the C code ``llama-quantize`` runs per row, compiled from the
   same pinned source with Release flags by ``tests/_llama_cpp.py``, seconds), one
   thread for the C code, the benchmark's thread count for Ladle, float32 input already
   in memory, outputs checked identical first. ``llama-quantize`` splits rows over its
   threads, so its rate is at most the C rate times the thread count.
3. ``q8_0`` / ``q4_0`` blocks: Ladle's Rust against ``gguf.quants.quantize`` (the numpy
   reference llama.cpp's Python converter uses; single-threaded), float32 input already
   in memory, outputs checked identical first.

The tensors are SmolLM2-135M-Instruct's (the builtin model, dequantized from Q4_1, float32),
so the value distribution is a real one.

    python benchmarks/gguf_quantize.py                 # threads: all cores
    python benchmarks/gguf_quantize.py --threads 1     # one core each
    python benchmarks/gguf_quantize.py --skip-llama    # sections 2 and 3 (no full build)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gguf
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def tensors(path: Path) -> dict[str, tuple[int, bytes]]:
    return {t.name: (int(t.tensor_type), t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


def bench_llama(folder: Path, threads: int, n_values: int) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import _llama_cpp
    from ladle.gguf import write_gguf

    llama_cpp = _llama_cpp.load()
    with tempfile.TemporaryDirectory() as tmp:
        f32 = write_gguf(folder, Path(tmp) / "m.f32.gguf", quant="f32")
        theirs, ours = Path(tmp) / "llama.q4_k_m.gguf", Path(tmp) / "ladle.q4_k_m.gguf"
        t = time.perf_counter()
        _llama_cpp.quantize_file(llama_cpp, f32, theirs, threads=threads)
        ref = time.perf_counter() - t
        t = time.perf_counter()
        write_gguf(folder, ours, quant="q4_k_m")
        mine = time.perf_counter() - t
        same = tensors(ours) == tensors(theirs)
        size = ours.stat().st_size / 2**20
    print(
        f"q4_k_m file ({size:.1f} MiB, tensors identical: {same}): "
        f"llama_model_quantize from f32 GGUF {ref:.2f} s ({n_values / ref / 1e9:.3f}B params/s), "
        f"Ladle export from safetensors {mine:.2f} s ({n_values / mine / 1e9:.3f}B params/s), "
        f"ratio {ref / mine:.2f}x"
    )
    assert same, "Ladle's q4_k_m file differs from llama.cpp's"


def bench_c_rows(mats: list[np.ndarray], n: int, threads: int) -> None:
    import ctypes

    sys.path.insert(0, str(REPO / "tests"))
    import _llama_cpp
    from ladle._core import gguf_quantize

    lib = _llama_cpp.ggml_quants()
    k_mats = [np.ascontiguousarray(m).reshape(-1) for m in mats if m.shape[-1] % 256 == 0]
    k_n = sum(m.size for m in k_mats)
    for name, fn, block, size in (
        ("q4_k", "quantize_row_q4_K_ref", 256, 144),
        ("q6_k", "quantize_row_q6_K_ref", 256, 210),
        ("q5_0", "quantize_row_q5_0_ref", 32, 22),
    ):
        flats = k_mats if block == 256 else [np.ascontiguousarray(m).reshape(-1) for m in mats]
        count = k_n if block == 256 else n
        row = getattr(lib, fn)
        outs = [np.zeros(f.size // block * size, np.uint8) for f in flats]

        def c_side(
            flats: list[np.ndarray] = flats, outs: list[np.ndarray] = outs, row: Any = row
        ) -> None:
            for f, o in zip(flats, outs, strict=True):
                row(ctypes.c_void_p(f.ctypes.data), ctypes.c_void_p(o.ctypes.data), f.size)

        c_side()
        assert all(
            gguf_quantize(f, name).tobytes() == o.tobytes()
            for f, o in zip(flats[:3], outs[:3], strict=True)
        ), "outputs differ"
        t = time.perf_counter()
        c_side()
        ref = time.perf_counter() - t
        t = time.perf_counter()
        for f in flats:
            gguf_quantize(f, name)
        ours = time.perf_counter() - t
        print(
            f"{name} blocks ({count / 1e6:.1f}M values): llama.cpp C ref, 1 thread {ref:.2f} s "
            f"({count / ref / 1e6:.0f}M values/s), Ladle, {threads} threads {ours:.2f} s "
            f"({count / ours / 1e6:.0f}M values/s), ratio {ref / ours:.1f}x"
        )


def bench_numpy(mats: list[np.ndarray], n: int) -> None:
    from ladle._core import gguf_quantize

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
            f"{name} blocks: gguf.quants {ref:.2f} s ({n / ref / 1e6:.0f}M values/s), "
            f"Ladle {ours:.2f} s ({n / ours / 1e6:.0f}M values/s), ratio {ref / ours:.1f}x"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-llama", action="store_true", help="only the numpy comparison")
    args = ap.parse_args()
    # Before the first rayon call: Ladle's pool gets the same count llama.cpp gets.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    import torch  # safetensors' reader; no compute, but pinned like every benchmark

    torch.set_num_threads(args.threads)

    from safetensors.numpy import load_file

    from ladle.models import resolve_model

    folder = resolve_model("builtin:smollm2-135m-instruct")
    weights = load_file(folder / "model.safetensors")
    mats = [w.astype(np.float32) for w in weights.values() if w.ndim == 2]
    n = sum(m.size for m in mats)
    load = os.getloadavg()
    print(
        f"{len(mats)} SmolLM2 matrices, {n / 1e6:.1f}M values; threads: {args.threads} "
        f"(Ladle rayon, llama.cpp nthread, torch); load average {load[0]:.1f} {load[1]:.1f}"
    )
    if not args.skip_llama:
        bench_llama(folder, args.threads, n)
    bench_c_rows(mats, n, args.threads)
    bench_numpy(mats, n)


if __name__ == "__main__":
    main()
