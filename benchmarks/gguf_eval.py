"""What a GGUF export keeps of a trained run: the run's eval set answered by the merged
model (transformers, Ladle's greedy ``generate``, fp32) and by Ladle's q8_0 and q4_k_m
exports, each scored with the run's own metrics, with token agreement to the merged
model's answers.

The exports run in llama.cpp (``--runtime llama.cpp``, default: llama-cpp-python built
from its PyPI source, cached by ``tests/_llama_cpp.py``; prompts tokenized by llama.cpp
from the GGUF's own vocabulary, and the report counts those whose ids differ from the
Hugging Face tokenizer's) or in transformers (``--runtime transformers``: its GGUF
loader dequantizes the file, then the same ``generate`` as the merged model). Every
prompt is rendered by Ladle's renderer (the recipe's candidate prompt, as ``ladle eval``
asks it) and decoded greedily until an end-of-turn token or ``max_new_tokens``.

    python benchmarks/gguf_eval.py RUN_DIR [--limit N] [--threads N] [--runtime R]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def llama_answers(
    llama_cpp: Any,
    path: Path,
    prompts: list[str],
    hf_ids: list[list[int]],
    stops: list[int],
    max_new: int,
    threads: int,
) -> tuple[list[list[int]], int]:
    """Greedy completions (token ids, stop token cut) and the count of prompts whose
    llama.cpp tokenization differs from the Hugging Face one."""
    llm = llama_cpp.Llama(str(path), n_ctx=2048, n_threads=threads, verbose=False, seed=0)
    out, mismatched = [], 0
    for text, ids in zip(prompts, hf_ids, strict=True):
        mine = llm.tokenize(text.encode(), add_bos=False, special=True)
        mismatched += mine != ids
        toks: list[int] = []
        for t in llm.generate(
            mine, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True
        ):
            if t in stops or len(toks) >= max_new:
                break
            toks.append(int(t))
        out.append(toks)
    return out, mismatched


def agreement(a: list[list[int]], b: list[list[int]]) -> tuple[float, float]:
    """Share of answers that are token-identical, and of tokens equal position by position
    up to the first difference (over the reference's tokens)."""
    same = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    prefix = 0
    for x, y in zip(a, b, strict=True):
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        prefix += n
    return same, prefix / max(1, sum(len(x) for x in a))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="eval rows (0: the recipe's limit)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runtime", choices=["llama.cpp", "transformers"], default="llama.cpp")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO / "tests"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import _llama_cpp
    from ladle.evaluate.generate import generate, prompt_renderer, stop_token_ids, trained_recipe
    from ladle.evaluate.metrics import score_samples
    from ladle.evaluate.prompts import build_conversation, read_split, split_row
    from ladle.gguf import write_gguf
    from ladle.train import export_run

    recipe = trained_recipe(args.run_dir)
    if recipe is None:
        raise SystemExit(f"{args.run_dir}: no run.json / manifest.json with the recipe")
    ev = recipe.evaluate
    limit = args.limit or ev.limit or None
    examples = [split_row(r) for r in read_split(recipe, "eval")][:limit]
    refs = [e.reference for e in examples]
    llama_cpp = _llama_cpp.load() if args.runtime == "llama.cpp" else None
    load = os.getloadavg()
    print(
        f"{args.run_dir}: {len(examples)} eval rows; threads {args.threads} (torch, llama.cpp); "
        f"load average {load[0]:.1f} {load[1]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        merged = export_run(args.run_dir, Path(tmp) / "merged", dtype="float32")
        render = prompt_renderer(merged, recipe.data.template)
        prompts = [render(build_conversation(e, ev.candidate, [])) for e in examples]
        tok = AutoTokenizer.from_pretrained(merged)
        hf_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        stops = stop_token_ids(tok)
        max_new = ev.generation.max_new_tokens
        model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
        t = time.perf_counter()
        gen = generate(model, tok, prompts, ev.generation, seed=recipe.seed, precision="fp32")
        runs: dict[str, tuple[list[str], float]] = {
            "merged (transformers fp32)": (
                [o[0] for o in gen.outputs],
                time.perf_counter() - t,
            )
        }
        ref_ids = [tok(o[0], add_special_tokens=False)["input_ids"] for o in gen.outputs]
        del model
        for quant in ("q8_0", "q4_k_m"):
            path = write_gguf(merged, Path(tmp) / f"m.{quant}.gguf", quant=quant)
            name = f"{quant} GGUF ({path.stat().st_size / 2**20:.1f} MiB, {args.runtime})"
            t = time.perf_counter()
            if llama_cpp is not None:
                ids, bad = llama_answers(
                    llama_cpp, path, prompts, hf_ids, stops, max_new, args.threads
                )
                outputs = [tok.decode(i, skip_special_tokens=True) for i in ids]
                print(f"{name}: {bad} of {len(prompts)} prompts tokenized differently from HF")
            else:
                model = AutoModelForCausalLM.from_pretrained(
                    path.parent, gguf_file=path.name, dtype=torch.float32
                ).eval()
                g = generate(model, tok, prompts, ev.generation, seed=recipe.seed, precision="fp32")
                outputs = [o[0] for o in g.outputs]
                del model
            runs[name] = (outputs, time.perf_counter() - t)
    base: dict[str, float] | None = None
    for name, (outputs, secs) in runs.items():
        scores = score_samples(ev.metrics, [[o] for o in outputs], refs)
        vals = {k: s.value() for k, s in scores.items()}
        base = base or vals
        cells = ", ".join(
            f"{k} {v:.3f}" + (f" ({v - base[k]:+.3f})" if vals is not base else "")
            for k, v in vals.items()
        )
        extra = ""
        if vals is not base:
            same, prefix = agreement(
                [tok(o, add_special_tokens=False)["input_ids"] for o in runs[name][0]], ref_ids
            )
            extra = f"; answers identical to merged {same:.2f}, token prefix agreement {prefix:.2f}"
        print(f"{name}: {cells}; {secs:.0f} s{extra}")


if __name__ == "__main__":
    main()
