"""``ladle quantize``: pre-quantize a checkpoint to bitsandbytes NF4, once, streaming."""

from __future__ import annotations

import argparse
from typing import Any

from ladle.commands.common import subparser
from ladle.ui import console, is_tty

DESCRIPTION = """\
Quantize every Linear weight of a Hugging Face checkpoint to 4-bit NF4 (bitsandbytes
format, byte for byte) and write a folder that AutoModelForCausalLM.from_pretrained loads
as a 4-bit model WITHOUT quantizing again. Embeddings, norms, biases, the output head and
tied weights stay in the model dtype; tokenizer, chat template and generation config are
copied.

Why: a QLoRA load normally re-quantizes the 16-bit weights every time and needs the whole
model in memory to do it. This reads the safetensors shards memory-mapped, one tensor at a
time, so memory stays near the largest tensor, and the result loads in a fraction of the
time. Use the output folder as model.base with train.adapter: qlora."""

EXAMPLE = """\
ladle quantize builtin:smollm2-135m-instruct ./smollm2-nf4
ladle quantize ./my-llama ./my-llama-nf4 --no-double-quant --blocksize 128 --skip lm_head,mlp.down_proj"""


def register(sub: Any) -> None:
    p = subparser(
        sub,
        "quantize",
        help="pre-quantize a checkpoint to NF4 (loads as a bitsandbytes 4-bit model)",
        description=DESCRIPTION,
        example=EXAMPLE,
    )
    p.add_argument("src", help="model folder with *.safetensors, a hub id, or builtin:NAME")
    p.add_argument("out", help="output folder (new or empty, unless --overwrite)")
    p.add_argument(
        "--double-quant",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also quantize the per-block scales to 8 bits (saves ~0.4 bit/weight; "
        "bnb_4bit_use_double_quant). Default: on",
    )
    p.add_argument(
        "--compute-dtype",
        default="bfloat16",
        choices=["bfloat16", "float16", "float32"],
        help="dtype the 4-bit layers compute in (bnb_4bit_compute_dtype). Default: bfloat16",
    )
    p.add_argument(
        "--blocksize",
        type=int,
        default=64,
        choices=[32, 64, 128, 256, 512, 1024, 2048, 4096],
        help="weights per absmax scale; smaller is more accurate and larger. Default: 64",
    )
    p.add_argument(
        "--skip",
        default=None,
        metavar="MOD,...",
        help="comma-separated module names or patterns to keep unquantized "
        "(llm_int8_skip_modules; replaces the default lm_head/tied-weight skips, so list "
        "lm_head too if you want it kept)",
    )
    p.add_argument(
        "--quant-type",
        default="nf4",
        choices=["nf4", "fp4"],
        help="4-bit data type: nf4 (QLoRA's, default) or fp4",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="cast weights to this model dtype first (default: as stored)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it exists (only a folder `ladle quantize` wrote: it holds "
        "ladle_quantized.json)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code shipped in SRC (needed for architectures transformers lacks)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from ladle.models import resolve_model
    from ladle.quant import quantize_checkpoint

    src = resolve_model(args.src)
    skip = [s.strip() for s in args.skip.split(",") if s.strip()] if args.skip else None
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not is_tty(),
        transient=True,
    ) as bar:
        task = bar.add_task("quantizing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        out = quantize_checkpoint(
            src,
            Path(args.out),
            double_quant=args.double_quant,
            compute_dtype=args.compute_dtype,
            blocksize=args.blocksize,
            skip=skip,
            quant_type=args.quant_type,
            dtype=args.dtype,
            overwrite=args.overwrite,
            trust_remote_code=args.trust_remote_code,
            progress=progress,
        )
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    console.print(
        f"wrote {out} ({size / 1e6:.1f} MB, {args.quant_type}, blocksize {args.blocksize})",
        markup=False,
    )
    return 0
