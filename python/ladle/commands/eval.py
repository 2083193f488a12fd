"""``ladle eval`` (before/after evaluation with a CI gate) and ``ladle compare``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ladle.commands.common import add_recipe_args, subparser

EVAL_DESCRIPTION = """\
Is the fine-tuned model better than simply prompting a model, by how much, at what cost,
and is the difference real?

  baselines  evaluate.baseline (or the list evaluate.baselines): the recipe's base model,
             another model, or an OpenAI-compatible endpoint, each with its own system
             prompt + few-shot examples drawn by seed from the TRAIN rows (never eval)
  candidate  each --candidate (a run folder with adapter/ or model/, an adapter folder,
             or a model folder) with evaluate.candidate's prompt; a model or endpoint
             named in evaluate.candidate is one more

Every candidate is compared with each baseline: paired-bootstrap 95% intervals (McNemar's
test for binary metrics), per-request latency p50/p95 from a separate timing pass,
throughput, cost per 1,000 requests and the break-even volume; evaluate.suites are
regression sets with their own gate. evaluate.gate's conditions decide the exit code.
Reports go to --output (default RUN_DIR/eval): report.json, report.md (also appended to
$GITHUB_STEP_SUMMARY), junit.xml, examples.jsonl, chart.png."""

EVAL_EXAMPLE = """\
ladle eval recipes/quickstart.yaml --candidate runs/quickstart-20260101-120000
ladle eval recipes/quickstart.yaml --candidate runs/a --candidate runs/b --output out/eval
ladle eval recipes/quickstart.yaml --candidate runs/a evaluate.limit=50 evaluate.bootstrap=2000
ladle eval recipes/quickstart.yaml --plan      # power of the eval set, before any training
ladle eval recipes/vs-endpoint.yaml -c runs/a  # against a served model (OpenAI-compatible)

exit codes: 0 gate passed, 1 gate failed (the failing conditions are printed),
2 usage or input error, 3 insufficient evidence (a `significant: true` condition whose
interval straddles its threshold: evaluate more rows)"""

COMPARE_EXAMPLE = """\
ladle compare runs/old/eval/report.json runs/new/eval/report.json
ladle compare runs/old/eval runs/new/eval          # folders holding report.json"""


def register(sub: Any) -> None:
    p = subparser(
        sub,
        "eval",
        help="fine-tuned model vs the prompted base model, with the recipe's gate",
        description=EVAL_DESCRIPTION,
        example=EVAL_EXAMPLE,
    )
    add_recipe_args(p)
    p.add_argument(
        "--candidate",
        "-c",
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="fine-tuned run folder, adapter folder or model folder (repeat for several); "
        "optional when evaluate.candidate names a model or endpoint",
    )
    p.add_argument(
        "--output", "-o", metavar="DIR", help="report folder (default RUN_DIR/eval, else eval/)"
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="print, per gated metric, the smallest difference the eval set can detect at "
        "80%% power (and warn when min_gain is below it), then exit without generating",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="ask endpoints again instead of reusing cached responses",
    )
    p.set_defaults(func=run)

    c = subparser(
        sub,
        "compare",
        help="diff two eval reports (track a recipe across commits)",
        description="Show how every measure moved between two `ladle eval` reports: "
        "baseline and candidate values of each, and the candidate's change. Candidates are "
        "paired in order.",
        example=COMPARE_EXAMPLE,
    )
    c.add_argument("report_a", metavar="REPORT_A", help="earlier report.json (or its folder)")
    c.add_argument("report_b", metavar="REPORT_B", help="later report.json (or its folder)")
    c.set_defaults(func=run_compare)


def load_rows(
    recipe: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    """(eval rows, train rows for few-shot, decontamination info) for a recipe.

    The eval rows are those of ``ladle prep`` (deduplicated, and decontaminated against
    the train set), read from its cache; a cache hit takes well under a second.
    """
    from ladle.data import prep
    from ladle.pipeline import eval_inputs

    return eval_inputs(recipe, prep(recipe))


def run(args: argparse.Namespace) -> int:
    from ladle.errors import EvalError
    from ladle.evaluate import check_output_dir, evaluate, write_reports
    from ladle.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if not recipe.evaluate.enabled:
        raise EvalError(f"{args.recipe}: evaluate.enabled is false")
    if args.plan:
        from ladle.evaluate.runner import power_plan

        eval_rows, _, _ = load_rows(recipe)
        lines = power_plan(recipe, eval_rows)
        for line in lines:
            print(f"power: {line.text()}")
        if not lines:
            print(
                "power: no gate condition asks for a gain, significance or non-inferiority "
                "on a [0, 1] quality metric; nothing to plan"
            )
        return 0
    candidates = [Path(c) for c in args.candidate]
    cand = recipe.evaluate.candidate
    if not candidates and cand.model is None and cand.endpoint is None:
        raise EvalError(
            "no candidate: pass --candidate RUN_DIR, or give evaluate.candidate a `model` "
            "or `endpoint`"
        )
    if args.output:
        output = Path(args.output)
    elif candidates:
        output = candidates[0] / "eval"
    else:
        output = Path(recipe.output.dir) / f"{recipe.name}-eval"
    check_output_dir(output)  # before generating: a bad --output fails in a second
    eval_rows, train_rows, decon = load_rows(recipe)
    report = evaluate(
        recipe,
        eval_rows,
        train_rows,
        candidates,
        decontamination=decon,
        progress=lambda msg: print(f"ladle eval: {msg}", file=sys.stderr),
        use_cache=False if args.no_cache else None,
    )
    write_reports(report, output)
    print((output / "report.md").read_text(encoding="utf-8"))
    print(f"reports written to {output}/ ({', '.join(report.files)})")
    for g in report.gate_failures:
        label = "FAILED" if g.verdict == "fail" else "UNDECIDED"
        print(f"gate {label} [{g.candidate} vs {g.baseline}] {g.message}", file=sys.stderr)
    if report.verdict == "insufficient evidence":
        print(
            f"gate: insufficient evidence (exit {report.exit_code}); evaluate more rows",
            file=sys.stderr,
        )
    return report.exit_code


def run_compare(args: argparse.Namespace) -> int:
    from ladle.evaluate import compare_reports, load_report

    print(compare_reports(load_report(Path(args.report_a)), load_report(Path(args.report_b))))
    return 0
