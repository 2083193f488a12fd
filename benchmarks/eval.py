"""Batched evaluation generation vs a plain per-example ``model.generate`` loop.

Same model (SmolLM2-135M-Instruct), same rendered prompts, same greedy settings and stop
token; the anchor generates one prompt at a time, Ladle generates length-sorted,
left-padded batches. Prints examples/s, the ratio, and whether the greedy outputs are
identical (mismatches are listed, not hidden).

    nice -n 10 python benchmarks/eval.py                 # 64 prompts, fp32 and bf16
    python benchmarks/eval.py --rows 8 --precision fp32  # quick check
"""

from __future__ import annotations

import argparse
import json
import time

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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=64, help="prompts (default 64)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    args = ap.parse_args()

    import torch

    from ladle.evaluate.generate import ModelSource, generate, load_model, prompt_renderer
    from ladle.models import resolve_model
    from ladle.recipe.schema import GenerationSpec

    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()} (set by --threads)", flush=True)
    folder = resolve_model("builtin:smollm2-135m-instruct")
    model, tok = load_model(ModelSource(folder))
    render = prompt_renderer(folder)
    prompts = [render(c) for c in conversations(args.rows)]
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    print(
        f"{len(prompts)} prompts, {min(lengths)}-{max(lengths)} tokens, "
        f"max_new_tokens {args.max_new_tokens}, batch size {args.batch_size}"
    )
    spec = GenerationSpec(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    rows = []
    mismatches: dict[str, list[int]] = {}
    for precision in ["fp32", "bf16"] if args.precision == "both" else [args.precision]:
        # warm-up: first calls pay for one-off kernel selection
        generate(
            model,
            tok,
            prompts[:2],
            spec.model_copy(update={"max_new_tokens": 4}),
            precision=precision,
        )
        t0 = time.perf_counter()
        anchor = per_example_loop(model, tok, prompts, args.max_new_tokens, precision)
        t_anchor = time.perf_counter() - t0
        print(f"[{precision}] per-example loop: {t_anchor:.1f}s", flush=True)
        t0 = time.perf_counter()
        gen = generate(model, tok, prompts, spec, precision=precision)
        t_ladle = time.perf_counter() - t0
        print(f"[{precision}] ladle batched: {t_ladle:.1f}s", flush=True)
        ours = [o[0] for o in gen.outputs]
        bad = [i for i, (a, b) in enumerate(zip(anchor, ours, strict=True)) if a != b]
        mismatches[precision] = bad
        same = f"{len(prompts) - len(bad)}/{len(prompts)}"
        n = len(prompts)
        rows.append((precision, "per-example model.generate", t_anchor, n / t_anchor, 1.0, same))
        rows.append(
            (
                precision,
                f"ladle batched (bs {args.batch_size})",
                t_ladle,
                n / t_ladle,
                t_anchor / t_ladle,
                same,
            )
        )
        for i in bad[:3]:
            print(f"[{precision}] mismatch #{i}:\n  loop:    {anchor[i]!r}\n  batched: {ours[i]!r}")

    print()
    print("| precision | method | seconds | examples/s | ratio | identical greedy outputs |")
    print("|---|---|---:|---:|---:|---:|")
    for prec, method, secs, eps, ratio, same in rows:
        print(f"| {prec} | {method} | {secs:.1f} | {eps:.2f} | {ratio:.2f}x | {same} |")


if __name__ == "__main__":
    main()
