"""``ladle train`` and ``ladle export``: run a recipe's training, merge a run's adapter."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ladle.commands.common import add_recipe_args, subparser
from ladle.errors import TrainError
from ladle.gguf_types import QUANTS as GGUF_QUANTS

TRAIN_EXAMPLE = """\
ladle train recipes/support.yaml
ladle train recipes/support.yaml train.lr=1e-4 train.max_steps=200 --output runs/try1
ladle train recipes/support.yaml --output runs/try1 --resume      # after a crash or kill -9
ladle train recipes/dpo.yaml train.method=kto     # preference data: dpo | orpo | kto
torchrun --nproc_per_node 2 -m ladle.cli train recipes/support.yaml   # DDP (gloo on CPU)

The run folder holds adapter/ (or model/), manifest.json, metrics.jsonl, loss_curve.png,
tensorboard/ and checkpoints/. An existing folder is never overwritten unless the recipe
says output.overwrite: true.
"""

EXPORT_EXAMPLE = """\
ladle export runs/support-20250101-120000 --merge merged/
ladle export runs/support-20250101-120000 adapter-copy/     # adapter + tokenizer, no merge
ladle export runs/support-20250101-120000 --gguf support.q8_0.gguf --quant q8_0 --ollama
ollama create support -f Modelfile    # --ollama wrote Modelfile next to the GGUF
"""


def register(sub: Any) -> None:
    p = subparser(
        sub,
        "train",
        help="fine-tune a model as a recipe says (SFT, DPO, ORPO, KTO or GRPO; LoRA, QLoRA, "
        "DoRA, full)",
        description="Train on the recipe's prepared data and write one run folder. Packed SFT "
        "rows train padding-free (per-document position_ids, no KV cache, so documents never "
        "see each other); checkpoints are atomic and --resume continues exactly where a "
        "killed run stopped. train.method: sft, dpo or orpo (preference pairs), kto "
        "(completions labelled desirable/undesirable: {prompt, completion, label}; pairs "
        "count as one of each) or grpo (rewards from the recipe's metrics).",
        example=TRAIN_EXAMPLE,
    )
    add_recipe_args(p)
    p.add_argument("--output", type=Path, help="run folder (default: output.dir/NAME-TIMESTAMP)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output (default: this recipe's newest unfinished run)",
    )
    p.add_argument(
        "--data",
        type=Path,
        help="prepared train rows (folder or Parquet from `ladle prep`); default: prepare "
        "them now from the recipe",
    )
    p.add_argument("--eval-data", type=Path, help="prepared eval rows (optional)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

    e = subparser(
        sub,
        "export",
        help="write a standalone model from a finished run (merged weights + tokenizer)",
        description="Merge a run's LoRA/DoRA adapter into its base weights (loaded unquantized, "
        "also for QLoRA) and save safetensors with the tokenizer and the chat template used in "
        "training. Without --merge, copy the adapter with the tokenizer.",
        example=EXPORT_EXAMPLE,
    )
    e.add_argument("run_dir", type=Path, help="a finished run folder (has manifest.json)")
    e.add_argument("out", nargs="?", type=Path, help="output folder (or give it to --merge)")
    e.add_argument("--merge", type=Path, metavar="OUT", help="merge the adapter; write to OUT")
    e.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="weight dtype of the export (auto: the recipe's model.dtype)",
    )
    e.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it exists (only a folder `ladle export` wrote: it holds "
        "ladle_export.json)",
    )
    e.add_argument(
        "--gguf",
        type=Path,
        metavar="OUT.gguf",
        help="merge and write one GGUF file for llama.cpp / Ollama (Llama architecture)",
    )
    e.add_argument(
        "--quant",
        choices=GGUF_QUANTS,
        default="f16",
        help="GGUF tensor type (norms stay f32; with q4_0 the token embedding is q8_0; "
        "q4_k_m mixes Q4_K/Q6_K exactly as llama-quantize does)",
    )
    e.add_argument(
        "--ollama", action="store_true", help="with --gguf: also write a Modelfile next to it"
    )
    e.set_defaults(func=run_export)


def _newest_unfinished(recipe: Any) -> Path | None:
    root = Path(recipe.output.dir)
    pattern = recipe.output.run_name or f"{recipe.name}-*"
    runs = [
        p
        for p in root.glob(pattern)
        if (p / "run.json").is_file() and not (p / "manifest.json").is_file()
    ]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _prepared(recipe: Any, d: Any) -> tuple[Any, Any]:
    """Train rows from ``ladle prep`` (cached: a second run with the same inputs is instant).
    Under torchrun, rank 0 prepares and the other ranks then read its cache entry.
    Its eval split holds conversations for generation-based evaluation, not token rows, so
    no eval loss is computed here; pass --eval-data for one."""
    from ladle import data
    from ladle.train.distributed import main_first

    return main_first(d, lambda: data.prep(recipe)), None


def run(args: argparse.Namespace) -> int:
    from ladle.device import pick_device
    from ladle.recipe import load_recipe
    from ladle.train import default_run_dir, distributed, train

    recipe = load_recipe(args.recipe, args.overrides)
    output = args.output
    if output is None and args.resume:
        output = _newest_unfinished(recipe)
        if output is None:
            raise TrainError(f"no unfinished run of {recipe.name!r} under {recipe.output.dir}")
    output = output or default_run_dir(recipe)
    # Join the launcher's process group before preparing, so ranks can take turns; train()
    # reuses the group and this command tears it down.
    d = distributed.init(pick_device())
    try:
        if args.data is not None:
            train_rows, eval_rows = args.data, args.eval_data
        else:
            train_rows, eval_rows = _prepared(recipe, d)
        res = train(
            recipe,
            train_rows,
            eval_rows,
            output_dir=output,
            resume=args.resume,
            progress=False if args.no_progress else None,
        )
    finally:
        d.close()
    if res.manifest:  # rank 0 prints
        loss = f"{res.final_loss:.4f}" if res.final_loss is not None else "-"
        print(
            f"{res.run_dir}: {res.steps} steps, final loss {loss}, "
            f"{res.tokens_per_s:,.0f} tokens/s -> {res.output}"
        )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ladle.train import export_run

    if args.gguf is not None:
        if args.merge is not None or args.out is not None:
            raise TrainError("--gguf writes one file; give it alone, without --merge or OUT")
        from ladle.gguf import export_gguf

        gguf = export_gguf(
            args.run_dir, args.gguf, quant=args.quant, ollama=args.ollama, overwrite=args.overwrite
        )
        size = gguf.stat().st_size / 2**20
        extra = f" and {gguf.with_name('Modelfile')}" if args.ollama else ""
        print(f"wrote {gguf} ({size:.1f} MiB, {args.quant}){extra}")
        return 0
    if args.ollama:
        raise TrainError("--ollama needs --gguf OUT.gguf (Ollama reads GGUF)")
    out = args.merge or args.out
    if out is None:
        raise TrainError("give an output folder: ladle export RUN --merge OUT (or RUN OUT)")
    path = export_run(
        args.run_dir, out, merge=args.merge is not None, dtype=args.dtype, overwrite=args.overwrite
    )
    print(f"wrote {path}")
    return 0
