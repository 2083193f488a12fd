"""Packed-row attention on CPU: transformers' sdpa with its block-diagonal mask (the
anchor) against Ladle's per-document kernel (``ladle.train.attention``), forward and
backward, on the same tensors in one run.

Shapes are SmolLM2-135M's (9 query and 3 key/value heads of 64); each of ``--rows`` rows
of ``--length`` tokens is cut into documents of 40-220 tokens (seeded), as packing leaves
them. Prints milliseconds per layer for each, the ratio, and the largest fp32 difference.

Run: ``python benchmarks/attention.py --threads 2``
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import corpus
from ladle.train import attention


class Layer(torch.nn.Module):
    """What the attention functions read off a layer."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def packed_positions(rows: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rows):
        pos: list[int] = []
        while len(pos) < length:
            n = min(int(torch.randint(40, 221, (1,), generator=g)), length - len(pos))
            pos += range(n)
        out.append(pos)
    return torch.tensor(out)


def block_diagonal_mask(pos: torch.Tensor) -> torch.Tensor:
    doc = (pos == 0).cumsum(1)
    length = pos.shape[1]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
    return (doc[:, None, :, None] == doc[:, None, None, :]) & causal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    heads, kv, dim = 9, 3, 64
    layer = Layer(heads // kv)
    pos = packed_positions(args.rows, args.length, 0)
    mask = block_diagonal_mask(pos)

    def run(kind: str, dtype: torch.dtype) -> tuple[float, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        shape = (args.rows, heads, args.length, dim)
        q = torch.randn(shape, generator=g).to(dtype).requires_grad_()
        k = torch.randn((args.rows, kv, args.length, dim), generator=g).to(dtype).requires_grad_()
        v = torch.randn((args.rows, kv, args.length, dim), generator=g).to(dtype).requires_grad_()
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            if kind == "mask":
                out, _ = sdpa_attention_forward(layer, q, k, v, mask)
            else:
                out, _ = attention.packed_sdpa_forward(layer, q, k, v, None, position_ids=pos)
            out.float().sum().backward()
        return (time.perf_counter() - t0) / args.repeats, out.detach()

    times: dict[str, list[float]] = {"mask": [], "doc": []}
    for _ in range(2):  # alternate, keep the best of each
        for kind in times:
            times[kind].append(run(kind, torch.bfloat16)[0])
    diff = (run("mask", torch.float32)[1] - run("doc", torch.float32)[1]).abs().max().item()
    best = {k: min(v) for k, v in times.items()}
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {corpus.machine()}")
    print(
        f"{args.rows} rows x {args.length} tokens, documents of 40-220 tokens, bf16, "
        f"forward + backward, torch threads {args.threads}"
    )
    print("| kernel | ms per layer |\n|---|---|")
    print(f"| sdpa, block-diagonal mask | {best['mask'] * 1e3:.0f} |")
    print(f"| ladle_packed, per document | {best['doc'] * 1e3:.0f} |")
    print(f"largest fp32 output difference: {diff:.2e}")
    print(f"RATIO attention: mask / per-document = {best['mask'] / best['doc']:.2f}x")


if __name__ == "__main__":
    main()
