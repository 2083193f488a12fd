"""``ladle run``: every stage of a recipe, in the one direction data flows.

recipe -> data (generate, dedup, decontaminate, render, tokenize, pack; cached) ->
model (resolve; pre-quantize for QLoRA) -> train -> evaluate against the prompted base
model -> reports and gate. Each stage is its own module; this one only threads their
outputs together and tells the user what is happening.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladle.data.prepared import PrepManifest
from ladle.recipe import Recipe, load_recipe


@dataclass
class RunOutcome:
    run_dir: Path
    gate_passed: bool | None  # None: evaluation disabled
    report_dir: Path | None
    seconds: float


def _say(msg: str) -> None:
    print(f"ladle run: {msg}", file=sys.stderr, flush=True)


def eval_inputs(
    recipe: Recipe, prepared: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    """(eval rows, train conversations for few-shot, decontamination info).

    Eval rows come from the prepared data, so they are exactly the rows that dedup and
    decontamination saw; few-shot examples are train conversations (never eval rows).
    """
    from ladle.data import load_prepared
    from ladle.evaluate.prompts import read_split

    _, eval_raw, manifest = load_prepared(prepared)
    eval_rows = [
        {"messages": json.loads(m) if isinstance(m, str) else m}
        for m in (r["messages"] for r in eval_raw)
    ]
    train_rows = read_split(recipe, "train") if recipe.evaluate.baseline.few_shot else []
    return eval_rows, train_rows, decontamination_info(manifest)


def decontamination_info(manifest: PrepManifest) -> dict[str, Any] | None:
    dedup = manifest.dedup or {}
    if not dedup.get("enabled"):
        return {"decontaminated": False}
    return {
        "decontaminated": bool(dedup.get("config", {}).get("decontaminate")),
        "removed": dedup.get("decontaminated", 0),
        "exact_dups_removed": dedup.get("exact_removed", 0),
        "near_dups_removed": dedup.get("near_removed", 0),
    }


def run_recipe(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    output: str | Path | None = None,
    resume: bool = False,
) -> RunOutcome:
    from ladle.commands.common import console
    from ladle.commands.prep import summary_table
    from ladle.data import prep
    from ladle.train import default_run_dir, train

    t0 = time.perf_counter()
    recipe = load_recipe(path, overrides)
    _say(
        f"recipe {recipe.name!r}: {recipe.train.method}/{recipe.train.adapter} on {recipe.model.base}"
    )

    _say("1/3 data: generate, dedup, decontaminate, render, tokenize, pack (cached)")
    prepared = prep(recipe)
    console.print(summary_table(prepared))

    run_dir = Path(output) if output else default_run_dir(recipe)
    _say(f"2/3 train -> {run_dir}")
    result = train(recipe, prepared, output_dir=run_dir, resume=resume)  # reads its shards
    if result.final_loss is not None:
        _say(
            f"trained {result.steps} steps, final loss {result.final_loss:.4f}, "
            f"{result.tokens_per_s:,.0f} tokens/s"
        )

    if not recipe.evaluate.enabled:
        _say("evaluate.enabled is false: no before/after comparison, no gate")
        return RunOutcome(result.run_dir, None, None, time.perf_counter() - t0)

    from ladle.evaluate import evaluate

    _say("3/3 evaluate: prompted base model vs fine-tuned model")
    eval_rows, train_rows, decon = eval_inputs(recipe, prepared)
    report_dir = result.run_dir / "eval"
    report = evaluate(
        recipe,
        eval_rows,
        train_rows,
        [result.run_dir],
        report_dir,
        decontamination=decon,
        progress=_say,
    )
    print((report_dir / "report.md").read_text(encoding="utf-8"))
    seconds = time.perf_counter() - t0
    _say(f"reports in {report_dir}/ ({seconds / 60:.1f} min in all)")
    if report.gate_passed:
        _say("gate PASSED")
    else:
        for g in report.gate_failures:
            _say(f"gate FAILED: {g.message}")
    return RunOutcome(result.run_dir, report.gate_passed, report_dir, seconds)
