"""What the CI integrations (``action.yml``, ``examples/ci/``) do after a gate ran.

``python -m ladle.ci --report-dir DIR --exit-code N`` turns a finished ``ladle run`` or
``ladle eval`` into the three things a CI system shows: a verdict (``pass``, ``fail``,
``insufficient-evidence`` or ``error``), the step outputs, and one pull-request comment
body. It reads the report the command wrote; it never re-runs anything, and writing the
summary is left to the report writer (it appends ``report.md`` to
``$GITHUB_STEP_SUMMARY`` itself). Kept in the package, not in shell, so it is tested.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VERDICTS = ("pass", "fail", "insufficient-evidence", "error")

# Exit codes of `ladle run`/`ladle eval` (see `ladle --help`): 2 is a usage/input error.
_BY_EXIT_CODE = {0: "pass", 1: "fail", 3: "insufficient-evidence"}

COMMENT_MARKER = "<!-- ladle-gate:{recipe} -->"


def verdict(report: dict[str, Any] | None, exit_code: int) -> str:
    """The gate's verdict: the report's own when it states one, else the exit code's.

    A missing report is an ``error`` whatever the exit code said: a gate that wrote no
    report has not shown anything, and CI must not read that as a pass."""
    if report is None:
        return "error"
    stated = report.get("verdict")
    if isinstance(stated, str):
        stated = stated.replace("_", "-")
        if stated in VERDICTS:
            return stated
    if exit_code in _BY_EXIT_CODE:
        return _BY_EXIT_CODE[exit_code]
    return "error"


def read_report(report_dir: Path) -> dict[str, Any] | None:
    path = report_dir / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def comment_body(
    recipe: str, verdict_: str, report_md: str, change_vs_main: str | None = None
) -> str:
    """One PR comment: a marker line (to find and update it), the verdict, the report."""
    icon = {"pass": "✅", "fail": "❌", "insufficient-evidence": "⚠️", "error": "❌"}[verdict_]
    parts = [
        COMMENT_MARKER.format(recipe=recipe),
        f"### {icon} Ladle gate: {verdict_} (`{recipe}`)",
        "",
        report_md.strip() or "_No report was written; see the job log._",
    ]
    if change_vs_main:
        parts += ["", "<details><summary>Change against the default branch</summary>", ""]
        parts += ["```", change_vs_main.strip(), "```", "</details>"]
    return "\n".join(parts) + "\n"


def _append(path_var: str, text: str) -> None:
    path = os.environ.get(path_var)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ladle.ci", description=__doc__)
    p.add_argument("--report-dir", required=True, type=Path)
    p.add_argument("--exit-code", required=True, type=int)
    p.add_argument("--recipe", required=True)
    p.add_argument("--comment-file", type=Path)
    p.add_argument("--against", type=Path, help="report.json of the default branch's last run")
    args = p.parse_args(argv)

    report = read_report(args.report_dir)
    v = verdict(report, args.exit_code)
    change = None
    if args.against is not None and report is not None:
        from ladle.errors import LadleError
        from ladle.evaluate import compare_reports, load_report

        try:
            change = compare_reports(load_report(args.against), report)
        except (LadleError, OSError, ValueError, KeyError) as e:
            change = f"(could not compare with {args.against}: {e})"
        _append(
            "GITHUB_STEP_SUMMARY",
            f"\n### Change against the default branch\n\n```\n{change}\n```\n",
        )
    md_path = args.report_dir / "report.md"
    report_md = md_path.read_text(encoding="utf-8") if md_path.is_file() else ""
    _append(
        "GITHUB_OUTPUT", f"verdict={v}\nreport-dir={args.report_dir}\nexit-code={args.exit_code}\n"
    )
    if args.comment_file is not None:
        args.comment_file.parent.mkdir(parents=True, exist_ok=True)
        args.comment_file.write_text(
            comment_body(args.recipe, v, report_md, change), encoding="utf-8"
        )
        _append("GITHUB_OUTPUT", f"comment-file={args.comment_file}\n")
    print(f"ladle gate verdict: {v}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
