"""Training throughput: a plain PyTorch loop, TRL's SFTTrainer (bfd packing; padded
batches) and Ladle's loop.

Same model, same LoRA (all linear layers), same documents, one epoch each, bf16
autocast over fp32 weights on CPU, the same torch thread count (set and printed):

  (a) plain       the ceiling: no framework, a hand-written loop over the same packed
                  micro-batches (rows stacked [B, L], per-document position_ids, no
                  mask), full logits, F.cross_entropy, AdamW, linear schedule
  (b) trl-bfd     SFTTrainer, packing=True, packing_strategy="bfd" (padding-free rows)
  (c) trl-padded  SFTTrainer, packing=False: right-padded batches of `--batch` documents
  (d) ladle       ladle.train.train on the same bfd bins (TRL's pack_dataset), stacked
                  into micro-batches of at most `--batch x --max-length` tokens
  (e) ladle-gc    (d) with gradient checkpointing, which TRL's SFTConfig turns on by
                  default (so (b) and (c) run with it): the like-for-like memory row

Data (`--data tickets`, the default): the quickstart's support tickets (natural text,
varied phrasing and typos) rendered with SmolLM2's chat template, loss on the JSON reply
only: a task that learns, so the held-out loss says whether the same tokens taught the
same. `--data synthetic`: long-tailed arithmetic token runs (throughput only).

Each variant runs in a fresh subprocess, so peak RSS is its own. Reported: real
(non-pad) trained tokens per second, the ratio to Ladle, peak RSS, the mean train loss
over the last 20% of steps and the loss on held-out documents (computed by the same
function for all three) after the same number of tokens (one epoch).

    python benchmarks/train.py --model tiny --docs 600          # a minute
    nice -n 10 python benchmarks/train.py --model both --docs 240 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ladle._core import IGNORE_INDEX

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("plain", "trl-bfd", "trl-padded", "ladle", "ladle-gc")


def ticket_docs(
    n: int, max_len: int, seed: int, model_dir: str
) -> list[tuple[list[int], list[int]]]:
    """Support tickets as (input_ids, labels): the chat-rendered conversation, labels on
    the assistant's JSON reply (and its end-of-turn token) only."""
    from ladle.data.chat import ChatTokenizer
    from ladle.demo.tickets import generate

    tok = ChatTokenizer.from_pretrained(model_dir)
    rows = tok.encode_batch([r["messages"] for r in generate(n, seed)], train_on="assistant")
    return [(r["input_ids"][:max_len], r["labels"][:max_len]) for r in rows]


def make_docs(n: int, max_len: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Long-tailed lengths (log-normal, median ~60 tokens, clipped to max_len); learnable
    token runs; the first ~30% of each document is an untrained prompt."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(60), 0.9, size=n).astype(int), 8, max_len)
    docs = []
    for length in lengths.tolist():
        start, stride = int(rng.integers(100, 20000)), int(rng.integers(1, 7))
        ids = [(start + stride * k) % 40000 + 100 for k in range(length)]
        p = max(1, int(0.3 * length))
        docs.append((ids, [IGNORE_INDEX] * p + ids[p:]))
    return docs


def bfd_rows(docs: list[tuple[list[int], list[int]]], max_len: int) -> list[dict[str, Any]]:
    """TRL's own bfd bins, in Ladle's row contract (position_ids restart per document)."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    ds = Dataset.from_dict({"input_ids": [d[0] for d in docs], "labels": [d[1] for d in docs]})
    packed = pack_dataset(ds, seq_length=max_len, strategy="bfd")
    rows = []
    for r in packed:
        pos = [p for n in r["seq_lengths"] for p in range(n)]
        labels = [IGNORE_INDEX if p == 0 else lab for p, lab in zip(pos, r["labels"], strict=True)]
        rows.append(
            {
                "input_ids": r["input_ids"],
                "labels": labels,
                "position_ids": pos,
                "seq_lengths": r["seq_lengths"],
            }
        )
    return rows


def held_out_loss(model: Any, rows: list[dict[str, Any]]) -> float:
    import pyarrow as pa
    import torch

    from ladle.train.model import inference_mode
    from ladle.train.rows import sft_table
    from ladle.train.sft import PackedSFT

    obj = PackedSFT(sft_table(pa.Table.from_pylist(rows)))
    total = units = 0.0
    with inference_mode(model), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(len(rows)):
            loss, _ = obj.loss(model, model, obj.batch([i], torch.device("cpu")))
            total += float(loss)
            units += int(obj.units[i])
    return total / max(units, 1)


def plain_loop(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    lora: dict[str, Any],
    tick: Callable[[], Any] = lambda: None,
) -> tuple[Any, list[float], float]:
    """The ceiling: what a person writes by hand with transformers + peft and nothing else.
    Micro-batches are the same `--batch` bfd rows Ladle gets, stacked ``[B, L]`` (padded
    to the longest row with a dummy document), per-document position_ids and no attention
    mask, so sdpa keeps the documents apart; full logits; the loss is the mean over
    trained tokens of each micro-batch."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_scheduler

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(
        args.model_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    base.config.use_cache = False
    cfg = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, cfg)
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=len(batches))
    model.train()
    losses = []
    t0 = time.perf_counter()
    for group in batches:
        width = max(len(r["input_ids"]) for r in group)
        ids = torch.zeros(len(group), width, dtype=torch.long)
        pos = torch.zeros_like(ids)
        labels = torch.full((len(group), width), -100)
        for j, r in enumerate(group):
            n = len(r["input_ids"])
            ids[j, :n] = torch.tensor(r["input_ids"])
            pos[j, :n] = torch.tensor(r["position_ids"])
            labels[j, :n] = torch.tensor(r["labels"])
            pos[j, n:] = torch.arange(width - n)  # the padding: a document of its own
        target = torch.full_like(labels, -100)
        target[:, :-1] = labels[:, 1:]
        target[:, :-1][pos[:, 1:] == 0] = -100
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        tick()
    return model, losses, time.perf_counter() - t0


@contextlib.contextmanager
def profiled(steps: int) -> Iterator[tuple[Callable[[], Any], dict[str, str]]]:
    """torch.profiler over ``steps`` optimizer steps after two (model loading and the first
    step are left out); yields the per-step tick and, afterwards, the op table."""
    out: dict[str, str] = {}
    if steps <= 0:
        yield (lambda: None), out
        return
    from torch.profiler import ProfilerActivity, profile, schedule

    with profile(
        activities=[ProfilerActivity.CPU], schedule=schedule(wait=1, warmup=1, active=steps)
    ) as prof:
        yield prof.step, out
    out["table"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    if args.data == "tickets":
        docs = ticket_docs(args.docs, args.max_length, 0, args.model_dir)
        held_docs = ticket_docs(max(8, args.docs // 10), args.max_length, 1, args.model_dir)
    else:
        docs = make_docs(args.docs, args.max_length, seed=0)
        held_docs = make_docs(max(8, args.docs // 10), args.max_length, seed=1)
    held = bfd_rows(held_docs, args.max_length)
    tokens = sum(len(d[0]) for d in docs)
    lora = {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.0}
    prof = profiled(args.profile if args.one in ("plain", "ladle") else 0)
    if args.one == "plain":
        with prof as (tick, table):
            model, losses, train_s = plain_loop(args, bfd_rows(docs, args.max_length), lora, tick)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    elif args.one in ("ladle", "ladle-gc"):
        from ladle.recipe.schema import Recipe
        from ladle.train import train

        rows = bfd_rows(docs, args.max_length)
        recipe = Recipe.model_validate(
            {
                "name": "bench",
                "seed": 0,
                "model": {"base": args.model_dir},
                "data": {"datasets": [{"path": "x"}], "max_length": args.max_length},
                "train": {
                    "lr": args.lr,
                    "epochs": 1,
                    "scheduler": "linear",
                    "lora": lora,
                    "micro_batch_tokens": args.batch * args.max_length,
                    "save_every": 0,
                    "report_to": ["none"],
                    "threads": args.threads,
                    "precision": "bf16",
                    # TRL's SFTConfig turns it on by default: the memory comparison
                    "gradient_checkpointing": args.one == "ladle-gc",
                },
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            with prof as (tick, table):
                res = train(
                    recipe,
                    rows,
                    output_dir=Path(tmp) / "run",
                    progress=False,
                    on_step=lambda _info: tick(),
                )
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the reload
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(args.model_dir)
            model = PeftModel.from_pretrained(base, res.output)
            train_s = res.manifest["throughput"]["train_s"]
            losses = res.losses
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_dict({"input_ids": [d[0] for d in docs], "labels": [d[1] for d in docs]})
        packing = args.one == "trl-bfd"
        with tempfile.TemporaryDirectory() as tmp:
            cfg = SFTConfig(
                output_dir=tmp,
                per_device_train_batch_size=args.batch,
                max_length=args.max_length,
                packing=packing,
                packing_strategy="bfd",
                padding_free=packing,
                learning_rate=args.lr,
                num_train_epochs=1,
                lr_scheduler_type="linear",
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                use_cpu=True,
                bf16=True,
                seed=0,
                dataloader_num_workers=0,
                disable_tqdm=True,
            )
            base = AutoModelForCausalLM.from_pretrained(
                args.model_dir, dtype=torch.float32, attn_implementation="sdpa"
            )
            trainer = SFTTrainer(
                model=base,
                args=cfg,
                train_dataset=ds,
                processing_class=AutoTokenizer.from_pretrained(args.model_dir),
                peft_config=LoraConfig(
                    r=lora["r"],
                    lora_alpha=lora["alpha"],
                    lora_dropout=0.0,
                    target_modules="all-linear",
                    task_type="CAUSAL_LM",
                ),
            )
            t0 = time.perf_counter()
            out = trainer.train()
            train_s = out.metrics.get("train_runtime", time.perf_counter() - t0)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            model = trainer.model
        table = {}
    k = max(1, len(losses) // 5)
    return {
        "variant": args.one,
        "threads": torch.get_num_threads(),
        "tokens": tokens,
        "steps": len(losses),
        "train_s": train_s,
        "tokens_per_s": tokens / train_s,
        "peak_rss_mib": peak,  # after training, before the held-out evaluation
        "final_loss": float(np.mean(losses[-k:])),
        "held_out_loss": held_out_loss(model, held),
        "profile": table.get("table"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", choices=["tiny", "smollm2", "both"], default="tiny")
    ap.add_argument("--docs", type=int, default=600, help="documents (one epoch)")
    ap.add_argument("--max-length", type=int, default=256, help="packed row length")
    ap.add_argument(
        "--batch", type=int, default=8, help="rows (bfd) or documents (padded) per step"
    )
    ap.add_argument("--data", choices=["tickets", "synthetic"], default="tickets")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        help="torch.profiler over this many steps of plain and ladle (after two), op table "
        "printed; profiling slows them, so take tokens/s from a run without it",
    )
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args)))
        return

    from ladle.models import resolve_model

    smollm2 = resolve_model("builtin:smollm2-135m-instruct")
    models: dict[str, Path] = {}
    if args.model in ("tiny", "both"):
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import build_tiny_llama

        tiny = Path(tempfile.mkdtemp(prefix="ladle-bench-tiny-"))
        models["tiny-llama"] = build_tiny_llama(tiny, smollm2)
    if args.model in ("smollm2", "both"):
        models["smollm2-135m"] = smollm2
    print(
        f"torch threads: {args.threads} (torch.set_num_threads in every variant); "
        f"{args.docs} {args.data} docs, rows of {args.max_length} tokens, {args.batch} "
        f"rows/docs per step, LoRA r={args.lora_r}, bf16 autocast, 1 epoch; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    for name, path in models.items():
        results = []
        for v in args.variants.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                v,
                "--model-dir",
                str(path),
                "--docs",
                str(args.docs),
                "--max-length",
                str(args.max_length),
                "--batch",
                str(args.batch),
                "--lora-r",
                str(args.lora_r),
                "--data",
                args.data,
                "--lr",
                str(args.lr),
                "--threads",
                str(args.threads),
                "--profile",
                str(args.profile),
            ]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{name} {v} failed:\n{proc.stderr[-3000:]}")
                continue
            results.append(json.loads(line[0][7:]))
        ladle = next((r for r in results if r["variant"] == "ladle"), None)
        print(f"\n{name} (load average {os.getloadavg()[0]:.1f} at the end)")
        print(
            "| variant | steps | tokens | tokens/s | ladle / variant | peak RSS MiB "
            "| train loss (last 20%) | held-out loss |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            ratio = f"{ladle['tokens_per_s'] / r['tokens_per_s']:.2f}x" if ladle else "-"
            print(
                f"| {r['variant']} | {r['steps']} | {r['tokens']} | {r['tokens_per_s']:.0f} "
                f"| {ratio} | {r['peak_rss_mib']:.0f} | {r['final_loss']:.4f} "
                f"| {r['held_out_loss']:.4f} |"
            )
        for r in results:
            if r.get("profile"):
                print(f"\n{name} {r['variant']}: where {args.profile} steps' time went\n")
                print(r["profile"])


if __name__ == "__main__":
    main()
