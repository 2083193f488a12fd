"""``ladle run``: every stage of a recipe, in the one direction data flows.

recipe -> data (generate, dedup, decontaminate, render, tokenize, pack; cached) ->
model (resolve; pre-quantize for QLoRA) -> train -> evaluate against the prompted base
model -> reports and gate. Each stage is its own module; this one only threads their
outputs together and tells its :class:`~ladle.ui.Reporter` what is happening (the CLI
passes a console one; this module prints nothing itself and imports nothing from the CLI).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladle.data.prepared import PrepManifest
from ladle.recipe import Recipe, load_recipe
from ladle.ui import ConsoleReporter, Reporter


@dataclass
class RunOutcome:
    run_dir: Path
    gate_passed: bool | None  # None: evaluation disabled
    report_dir: Path | None
    seconds: float
    exit_code: int = 0  # the eval verdict's: 0 pass, 1 fail, 3 insufficient evidence


def eval_inputs(
    recipe: Recipe, prepared: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    """(eval rows, train conversations for few-shot, decontamination info).

    Eval rows come from the prepared data, so they are exactly the rows that dedup and
    decontamination saw, with every field the chat template reads (``tools``,
    ``documents``) as training rendered them. Few-shot examples come from the train split
    deduplicated and decontaminated against these eval prompts (``few_shot_pool``), each
    with its ``file:line`` id for the report.
    """
    from ladle.data import load_prepared
    from ladle.evaluate.prompts import TEMPLATE_FIELDS, few_shot_pool

    _, eval_raw, manifest = load_prepared(prepared)
    eval_rows = []
    for r in eval_raw:
        m = r.get("messages")
        row = {"messages": json.loads(m) if isinstance(m, str) else m}
        row.update({k: r[k] for k in TEMPLATE_FIELDS if r.get(k) is not None})
        eval_rows.append(row)
    decon = decontamination_info(manifest)
    train_rows: list[dict[str, Any]] = []
    if recipe.evaluate.few_shot_needed:
        train_rows, pool = few_shot_pool(recipe, eval_rows)
        decon = {**(decon or {}), "few_shot_pool": pool}
    return eval_rows, train_rows, decon


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
    reporter: Reporter | None = None,
) -> RunOutcome:
    """Run every stage of the recipe at ``path``; ``reporter`` hears about each step
    (default: the console, as ``ladle run`` shows it)."""
    from ladle.data import prep
    from ladle.train import default_run_dir, train

    ui = reporter if reporter is not None else ConsoleReporter()
    t0 = time.perf_counter()
    recipe = load_recipe(path, overrides)
    ui.stage(
        f"recipe {recipe.name!r}: {recipe.train.method}/{recipe.train.adapter} on {recipe.model.base}"
    )

    ui.stage("1/3 data: generate, dedup, decontaminate, render, tokenize, pack (cached)")
    prepared = prep(recipe)
    ui.prep_done(prepared)

    if recipe.evaluate.enabled and not prepared.manifest.eval.rows:
        from ladle.errors import EvalError

        # Said before training, not after an hour of it.
        raise EvalError(
            f"{path}: the eval split is empty after prep (no `split: eval` dataset, "
            "data.eval_fraction unset, or every eval row was dropped: see the prep "
            "manifest); add eval rows or set evaluate.enabled: false"
        )
    if recipe.evaluate.enabled:  # power before training: a too-small eval set shows now
        from ladle.evaluate.runner import power_plan

        eval_rows, train_rows, decon = eval_inputs(recipe, prepared)
        for line in power_plan(recipe, eval_rows):
            ui.stage(f"power: {line.text()}")

    run_dir = Path(output) if output else default_run_dir(recipe)
    ui.stage(f"2/3 train -> {run_dir}")
    result = train(recipe, prepared, output_dir=run_dir, resume=resume)  # reads its shards
    if result.final_loss is not None:
        ui.stage(
            f"trained {result.steps} steps, final loss {result.final_loss:.4f}, "
            f"{result.tokens_per_s:,.0f} tokens/s"
        )

    if not recipe.evaluate.enabled:
        ui.stage("evaluate.enabled is false: no before/after comparison, no gate")
        return RunOutcome(result.run_dir, None, None, time.perf_counter() - t0)

    from ladle.evaluate import evaluate, write_reports

    ui.stage("3/3 evaluate: prompted base model vs fine-tuned model")
    report_dir = result.run_dir / "eval"
    report = evaluate(
        recipe,
        eval_rows,
        train_rows,
        [result.run_dir],
        decontamination=decon,
        progress=ui.stage,
    )
    write_reports(report, report_dir)
    ui.eval_report((report_dir / "report.md").read_text(encoding="utf-8"))
    seconds = time.perf_counter() - t0
    ui.stage(f"reports in {report_dir}/ ({seconds / 60:.1f} min in all)")
    if report.gate_passed:
        ui.stage("gate PASSED")
    else:
        for g in report.gate_failures:
            ui.stage(f"gate {'FAILED' if g.verdict == 'fail' else 'UNDECIDED'}: {g.message}")
        if report.verdict == "insufficient evidence":
            ui.stage("gate: insufficient evidence (exit 3); evaluate more rows")
    return RunOutcome(
        result.run_dir, report.gate_passed, report_dir, seconds, exit_code=report.exit_code
    )
