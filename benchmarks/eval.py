"""Evaluation generation: a plain per-example ``model.generate`` loop, Ladle's batched
path, and Ladle's batched path with the prompts' shared token prefix prefilled once.

Prompt sets (``--prompts``):

- ``quickstart`` (default): the prompts ``ladle run recipes/quickstart.yaml`` evaluates,
  built the same way (prep's eval rows, few-shot drawn from its deduplicated train split):
  100 tickets asked of the **baseline** (system prompt + 3 few-shot turns + the ticket;
  most of each prompt is shared) and of the **candidate** (the ticket alone). The
  candidate prompts run on ``--candidate RUN`` (a trained run folder, its adapter merged
  as the eval merges it), else on the base model (which rambles to the token limit, so
  its times are not the fine-tuned model's).
- ``synthetic``: 64 made-up tickets, every other one with two few-shot turns.

Same model (SmolLM2-135M-Instruct), greedy, same stop token. For each prompt set and
precision it prints seconds, examples/s, the ratio to the loop and to the batched path,
and how many greedy outputs equal the batched path's (mismatches listed, not hidden).
``--latency N`` adds the eval's latency pass: N requests (the eval's seeded sample) at
batch size 1, prompts prefilled in full vs with the shared prefix cached.

    nice -n 10 python benchmarks/eval.py --candidate runs/quickstart-...   # everything
    python benchmarks/eval.py --variants batched,prefix --precision bf16   # no loop
    python benchmarks/eval.py --prompts synthetic --rows 8 --precision fp32  # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import corpus

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"

PRODUCTS = ["router", "smartwatch", "laptop", "headphones", "mobile app", "subscription"]
ISSUES = [
    "was charged twice this month",
    "keeps disconnecting every few minutes",
    "has not arrived after two weeks",
    "cannot log in after the password reset",
    "battery drains in an hour",
    "wants a refund for the annual plan",
    "shows a black screen on start",
    "got the wrong colour in the package",
]
TONES = ["", " This is really frustrating!", " Thanks in advance.", " Please help ASAP!!"]
SYSTEM = (
    "You turn support tickets into JSON with keys category (billing, technical, shipping, "
    "account, refund), priority (low, medium, high, urgent), product and sentiment "
    "(positive, neutral, negative). Answer with the JSON object only."
)
SHOTS = [
    (
        "My laptop fan is very loud since the update.",
        {
            "category": "technical",
            "priority": "medium",
            "product": "laptop",
            "sentiment": "negative",
        },
    ),
    (
        "Where is my smartwatch order? Ordered 10 days ago.",
        {
            "category": "shipping",
            "priority": "medium",
            "product": "smartwatch",
            "sentiment": "neutral",
        },
    ),
]


def conversations(n: int) -> list[list[dict[str, str]]]:
    """``n`` ticket prompts; every other one carries two few-shot examples (as the baseline
    does), so prompt lengths vary and padding is exercised."""
    out = []
    for i in range(n):
        product = PRODUCTS[i % len(PRODUCTS)]
        issue = ISSUES[(i * 5) % len(ISSUES)]
        text = f"Ticket #{1000 + i}: my {product} {issue}.{TONES[i % len(TONES)]}"
        msgs = [{"role": "system", "content": SYSTEM}]
        if i % 2:
            for q, a in SHOTS:
                msgs += [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": json.dumps(a)},
                ]
        out.append([*msgs, {"role": "user", "content": text}])
    return out


def quickstart_prompts(rows: int) -> tuple[Any, list[str], list[str]]:
    """(recipe, baseline prompts, candidate prompts) of the quickstart, as ``ladle run``
    renders them: prep's eval rows (the tickets are generated on first use), few-shot
    examples drawn by the recipe's seed from the deduplicated train split."""
    from ladle.data import prep
    from ladle.evaluate.generate import prompt_renderer
    from ladle.evaluate.prompts import build_conversation, select_few_shot, split_row
    from ladle.models import resolve_model
    from ladle.pipeline import eval_inputs
    from ladle.recipe import load_recipe

    recipe = load_recipe(QUICKSTART)
    eval_rows, train_rows, _ = eval_inputs(recipe, prep(recipe))
    ev = recipe.evaluate
    examples = [split_row(r) for r in eval_rows[: min(rows, ev.limit or rows)]]
    shots = select_few_shot([split_row(r) for r in train_rows], ev.few_shot_needed, recipe.seed)
    render = prompt_renderer(resolve_model(recipe.model.base), recipe.data.template)
    base = ev.named_baselines()[0][1]
    baseline = [render(build_conversation(e, base, shots[: base.few_shot])) for e in examples]
    candidate = [render(build_conversation(e, ev.candidate, [])) for e in examples]
    return recipe, baseline, candidate


def per_example_loop(model, tok, prompts, max_new_tokens, precision):  # type: ignore[no-untyped-def]
    """The anchor: the plain loop people write first."""
    import contextlib

    import torch
    from transformers import GenerationConfig

    from ladle.evaluate.generate import stop_token_ids

    stops = stop_token_ids(tok)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        top_k=None,
        temperature=None,
        top_p=None,
        eos_token_id=stops,
        pad_token_id=tok.pad_token_id,
        use_cache=True,
    )
    ctx = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    outs = []
    for p in prompts:
        enc = tok(p, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode(), ctx:
            ids = model.generate(**enc, generation_config=config)[0, enc["input_ids"].shape[1] :]
        toks = ids.tolist()
        cut = next((i for i, t in enumerate(toks) if t in stops), len(toks))
        outs.append(tok.decode(toks[:cut], skip_special_tokens=True))
    return outs


Row = tuple[str, str, str, float, int, list[str], str]
"""(precision, prompt set, method, seconds, examples, outputs, short name)."""


@contextlib.contextmanager
def weights_cast_every_step() -> Iterator[None]:
    """The path before weights were cast once: plain autocast, which casts every fp32
    linear weight to bf16 at every call."""
    from ladle.evaluate import casting

    saved = casting.bf16_linear_weights
    setattr(casting, "bf16_linear_weights", lambda _model: contextlib.nullcontext(0))  # noqa: B010
    try:
        yield
    finally:
        setattr(casting, "bf16_linear_weights", saved)  # noqa: B010


def bench_set(
    label: str,
    model: Any,
    tok: Any,
    prompts: list[str],
    latency_picks: list[int],
    args: argparse.Namespace,
    precision: str,
) -> list[Row]:
    from ladle.evaluate.generate import Generation, generate
    from ladle.recipe.schema import GenerationSpec

    spec = GenerationSpec(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    full = spec.model_copy(update={"prefix_cache": False})
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    print(
        f"[{precision}] {label}: {len(prompts)} prompts, {min(map(len, ids))}-"
        f"{max(map(len, ids))} tokens, load average {corpus.load_average()}",
        flush=True,
    )
    bf16 = precision == "bf16"
    every_step = weights_cast_every_step if bf16 else contextlib.nullcontext
    cast = ", bf16 weights cast every step" if bf16 else ""
    once = ", weights cast once" if bf16 else ""
    rows: list[Row] = []

    def run(s: GenerationSpec, ps: list[str]) -> tuple[float, Generation]:
        t0 = time.perf_counter()
        g = generate(model, tok, ps, s, precision=precision)
        return time.perf_counter() - t0, g

    def add(key: str, method: str, secs: float, outs: list[str]) -> None:
        rows.append((precision, label, method, secs, len(outs), outs, key))
        print(f"  {method}: {secs:.1f}s ({secs / len(outs):.2f} s/example)", flush=True)

    variants = args.variants.split(",")
    bs = f"bs {args.batch_size}"
    if "loop" in variants:
        t0 = time.perf_counter()
        outs = per_example_loop(model, tok, prompts, args.max_new_tokens, precision)
        add("loop", "per-example model.generate", time.perf_counter() - t0, outs)
    if "before" in variants:
        with every_step():
            secs, g = run(full, prompts)
        add("before", f"before: batched ({bs}), prompts prefilled in full{cast}", secs, first(g))
    if "cast" in variants and bf16:
        secs, g = run(full, prompts)
        add("cast", f"batched ({bs}), prompts prefilled in full{once}", secs, first(g))
    if "prefix" in variants:
        secs, g = run(spec, prompts)
        add(
            "prefix",
            f"now: batched ({bs}) + shared prefix of {g.prefix_tokens} tokens{once}",
            secs,
            first(g),
        )
    if latency_picks:
        one = spec.model_copy(update={"batch_size": 1})
        picked = [prompts[i] for i in latency_picks]
        with every_step():
            secs, g = run(one.model_copy(update={"prefix_cache": False}), picked)
        add(
            "latency before",
            f"latency pass before: bs 1, prompts prefilled in full{cast}",
            secs,
            first(g),
        )
        secs, g = run(one, picked)
        add(
            "latency now",
            f"latency pass now: bs 1, shared prefix of {g.prefix_tokens} tokens{once}",
            secs,
            first(g),
        )
    return rows


def first(g: Any) -> list[str]:
    return [o[0] for o in g.outputs]


def print_table(rows: list[Row]) -> None:
    print()
    print(
        "| precision | prompts | method | seconds | examples/s | vs loop | vs before "
        "| greedy outputs equal to before |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    groups: dict[tuple[str, str, bool], list[Row]] = {}
    for r in rows:
        groups.setdefault((r[0], r[1], r[2].startswith("latency")), []).append(r)
    for (prec, label, _latency), group in groups.items():
        loop = next((r for r in group if r[2].startswith("per-example")), None)
        ref = next((r for r in group if "before" in r[2]), None)
        for r in group:
            method, secs, n, outs = r[2], r[3], r[4], r[5]
            same = "-"
            if ref is not None and r is not ref:
                bad = [i for i, (a, b) in enumerate(zip(ref[5], outs, strict=True)) if a != b]
                same = f"{n - len(bad)}/{n}"
                for i in bad[:3]:
                    print(
                        f"  mismatch [{prec} {label}] {method} #{i}: {ref[5][i]!r} vs {outs[i]!r}"
                    )
            print(
                f"| {prec} | {label} | {method} | {secs:.1f} | {n / secs:.2f} "
                f"| {f'{loop[3] / secs:.2f}x' if loop else '-'} "
                f"| {f'{ref[3] / secs:.2f}x' if ref else '-'} | {same} |"
            )
        for r in group:
            if ref is not None and r is not ref:
                print(f"RATIO eval {prec} {label}: {r[6]} vs {ref[6]} = {ref[3] / r[3]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prompts", choices=["quickstart", "synthetic"], default="quickstart")
    ap.add_argument("--rows", type=int, help="prompts (default: quickstart 100, synthetic 64)")
    ap.add_argument("--candidate", type=Path, help="a trained quickstart run folder")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument(
        "--variants",
        default="loop,before,cast,prefix",
        help="comma-separated: loop (per-example anchor), before (batched, prompts prefilled "
        "in full, autocast casting the weights at every step: the path before the shared "
        "prefix), cast (the same with the weights cast once; bf16 only), prefix (today's "
        "path) (default all)",
    )
    ap.add_argument(
        "--latency", type=int, default=0, help="also time N requests at batch size 1 (eval: 32)"
    )
    args = ap.parse_args()

    import torch

    from ladle.evaluate.contestants import latency_indices
    from ladle.evaluate.generate import (
        ModelSource,
        candidate_source,
        generate,
        load_model,
        prompt_renderer,
    )
    from ladle.models import resolve_model
    from ladle.recipe.schema import GenerationSpec

    torch.set_num_threads(args.threads)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {corpus.machine()}")
    print(f"torch threads: {torch.get_num_threads()} (set by --threads)", flush=True)
    folder = resolve_model("builtin:smollm2-135m-instruct")
    model, tok = load_model(ModelSource(folder))
    sets: list[tuple[str, Any, Any, list[str]]]
    seed = 0
    if args.prompts == "quickstart":
        recipe, baseline, candidate = quickstart_prompts(args.rows or 100)
        seed = recipe.seed
        if args.candidate is not None:
            src = candidate_source(args.candidate, folder, recipe)
            cmodel, ctok = load_model(src)
            cand_label = f"candidate ({src.describe()})"
        else:
            cmodel, ctok, cand_label = model, tok, "candidate prompts on the BASE model"
        sets = [("baseline", model, tok, baseline), (cand_label, cmodel, ctok, candidate)]
    else:
        render = prompt_renderer(folder)
        sets = [("synthetic", model, tok, [render(c) for c in conversations(args.rows or 64)])]
    print(
        f"max_new_tokens {args.max_new_tokens}, batch size {args.batch_size}, "
        f"latency pass {args.latency or 'off'}"
    )

    rows: list[Row] = []
    for precision in ["fp32", "bf16"] if args.precision == "both" else [args.precision]:
        for label, m, t, prompts in sets:
            # warm-up: first calls pay for one-off kernel selection
            generate(m, t, prompts[:2], GenerationSpec(max_new_tokens=4), precision=precision)
            picks = latency_indices(len(prompts), args.latency, seed) if args.latency else []
            rows += bench_set(label, m, t, prompts, picks, args, precision)
    print_table(rows)
    print(f"\nload average at the end: {corpus.load_average()}")


if __name__ == "__main__":
    main()
