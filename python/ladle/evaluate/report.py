"""Report files: report.json, report.md, junit.xml, examples.jsonl and chart.png.

The folder is written through :func:`ladle.paths.atomic_dir`, so it is either the
complete report of one evaluation or absent: CI never reads a half-written report.json
next to last run's junit.xml. report.md is also appended to ``$GITHUB_STEP_SUMMARY``
when that is set (the job summary of a GitHub Actions step).
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ladle.errors import EvalError
from ladle.evaluate.chart import bar_chart
from ladle.evaluate.result import OPERATIONAL, Contestant, EvalReport
from ladle.paths import atomic_dir

if TYPE_CHECKING:
    from ladle.evaluate.stats import Comparison

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 2 added ``baselines``, ``verdict`` and comparisons per baseline; ``compare``
reads both (it uses the first baseline and ``values`` only)."""


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def fmt(key: str, x: float | None) -> str:
    """A value as a person reads it: tokens as counts, seconds with ms, rates with 3 digits."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if key in ("prompt_tokens", "completion_tokens", "tokens_per_s") or key.startswith("length"):
        return f"{x:.1f}"
    if key.startswith("latency"):
        return f"{x * 1000:.0f} ms"
    if key == "cost":
        return f"{x:.6f}"
    return f"{x:.3f}"


def fmt_diff(key: str, c: Comparison) -> str:
    scale, unit = (1000, " ms") if key.startswith("latency") else (1, "")
    if key == "cost":
        return f"{c.diff:+.6f} [{c.low:+.6f}, {c.high:+.6f}]"
    return f"{c.diff * scale:+.3g}{unit} [{c.low * scale:+.3g}, {c.high * scale:+.3g}]"


def fmt_p(c: Comparison, resamples: int) -> str:
    """A bootstrap p of 0 only says "below the resolution of the resamples"."""
    if not math.isfinite(c.p_value):
        return "n/a"
    if c.test == "bootstrap" and c.p_value == 0:
        return f"<{1 / resamples:.2g}"
    return f"{c.p_value:.3g}"


# ----------------------------------------------------------------------- report.json


def _contestant(c: Contestant) -> dict[str, Any]:
    return {
        "name": c.name,
        "kind": c.kind,
        "source": c.source,
        "loaded_as": c.loaded_as,
        "prompt": c.prompt_spec.model_dump(),
        "values": {k: _num(v) for k, v in c.values().items()},
        "ci95": {k: [_num(lo), _num(hi)] for k, (lo, hi) in c.ci.items()},
        "precision": c.generation.precision,
        "generate_s": c.generation.total_s,
        "load_s": c.load_s,
        "operations": c.operations,
    }


def _comparison(c: Comparison) -> dict[str, Any]:
    out: dict[str, Any] = {
        "baseline": _num(c.baseline),
        "candidate": _num(c.candidate),
        "diff": _num(c.diff),
        "ci95": [_num(c.low), _num(c.high)],
        "p_value": _num(c.p_value),
        "test": c.test,
        "better": c.better,
        "significant": c.significant,
    }
    if c.mcnemar_b is not None:
        out["mcnemar"] = {"baseline_only": c.mcnemar_b, "candidate_only": c.mcnemar_c}
    return out


def _clean(x: Any) -> Any:
    """JSON has no NaN or infinity: non-finite numbers become null, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def to_dict(report: EvalReport) -> dict[str, Any]:
    return _clean(_body(report) | {"suites": [_body(s) for s in report.suites]})


def _body(report: EvalReport) -> dict[str, Any]:
    return {
        "ladle_eval": SCHEMA_VERSION,
        "recipe": report.recipe,
        "n_examples": report.n_examples,
        "settings": report.settings,
        "decontamination": report.decontamination,
        "few_shot": [
            {"id": e.id, "prompt": e.prompt, "reference": e.reference} for e in report.few_shot
        ],
        "baseline": _contestant(report.baseline),
        "baselines": [_contestant(b) for b in report.baselines],
        "candidates": [_contestant(c) for c in report.candidates],
        "comparisons": {
            cand: {base: {k: _comparison(c) for k, c in cmps.items()} for base, cmps in per.items()}
            for cand, per in report.comparisons.items()
        },
        "power": report.power,
        "break_even": report.break_even,
        "gate": [g.to_dict() for g in report.gate],
        "gate_passed": report.gate_passed,
        "verdict": report.verdict,
        "exit_code": report.exit_code,
    }


# ----------------------------------------------------------------------- report.md


def decontamination_line(info: dict[str, Any] | None) -> str:
    if not info:
        return "Decontamination: not checked (no data-engine report passed to the evaluation)."
    counts = ", ".join(f"{k}: {v}" for k, v in info.items() if k != "decontaminated")
    if info.get("decontaminated"):
        return "Decontamination: train rows overlapping eval prompts were removed" + (
            f" ({counts})." if counts else "."
        )
    return "Decontamination: OFF, eval prompts may have been trained on" + (
        f" ({counts})." if counts else "."
    )


def _describe(c: Contestant) -> str:
    shots = c.prompt_spec.few_shot
    what = "endpoint" if c.kind == "endpoint" else "model"
    return f"{what} `{c.source}`, {shots}-shot prompt"


def _ms(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 1000:.0f} ms"


def _money(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"${x:.4g}"


def operations_md(report: EvalReport) -> list[str]:
    """Latency, throughput, cost and break-even: how each contestant would run in service."""
    lines = [
        "## Operations",
        "",
        "| contestant | latency p50 [95% CI] | latency p95 [95% CI] | timed how | "
        "throughput | cost / 1k requests | requests |",
        "|---|---|---|---|---|---:|---|",
    ]
    for c in [*report.baselines, *report.candidates]:
        lat = {
            k: (c.unpaired.get(k), c.ci.get(k, (None, None)))
            for k in ("latency_p50", "latency_p95")
        }
        cells = [
            f"{_ms(v)} [{_ms(lo)}, {_ms(hi)}]" if v is not None else "n/a"
            for v, (lo, hi) in lat.values()
        ]
        tp = c.operations.get("throughput", {})
        at = (
            f"concurrency {tp['concurrency']}"
            if "concurrency" in tp
            else f"batch {tp.get('batch_size')}"
        )
        if tp.get("prefix_cached_tokens"):
            at += f", shared {tp['prefix_cached_tokens']}-token prefix cached"
        throughput = (
            f"{tp.get('examples_per_s', math.nan):.2f} ex/s, "
            f"{tp.get('tokens_per_s', math.nan):.1f} tok/s ({at}"
            + (", cached answers at their recorded times" if tp.get("estimated_from_cache") else "")
            + ")"
        )
        req = c.operations.get("requests")
        requests = (
            f"{req['failed']} failed of {req['total']}, {req['retried_responses']} retried, "
            f"{req['cache_hits']} cached"
            if req
            else "local"
        )
        ttft = c.operations.get("ttft_p50_s")
        how = c.operations.get("latency_method", "")
        if ttft is not None:
            how += f"; TTFT p50 {_ms(ttft)}"
        lines.append(
            f"| {c.name} | {cells[0]} | {cells[1]} | {how} | {throughput} | "
            f"{_money(c.operations.get('cost_per_1k_requests'))} | {requests} |"
        )
    notes = [
        f"- `{c.name}` prompt tokens: {c.operations['prompt_tokens_source']}."
        for c in [*report.baselines, *report.candidates]
        if "ESTIMATE" in str(c.operations.get("prompt_tokens_source", ""))
    ]
    for be in report.break_even:
        head = f"- Break-even, `{be['candidate']}` vs `{be['baseline']}`: "
        if be.get("requests") is not None:
            notes.append(
                head + f"training cost {_money(be['training_cost'])} ({be['train_s']:.0f} s at "
                f"${be['training_price_per_hour']:g}/h) is paid back after "
                f"**{be['requests']:,} requests** ({_money(be['baseline_cost_per_1k'])} vs "
                f"{_money(be['candidate_cost_per_1k'])} per 1k)."
            )
        else:
            notes.append(head + f"n/a ({be.get('note')}).")
    return [*lines, "", *notes, *([""] if notes else [])]


def judge_md(report: EvalReport) -> list[str]:
    lines = []
    for j in report.judges:
        if j["mode"] == "pairwise":
            agree = j["agreement_rate"]
            agree_s = "n/a" if agree is None or not math.isfinite(agree) else f"{agree:.2f}"
            lines.append(
                f"- Judge `{j['metric']}` ({j['judge']}, pairwise, both orders): "
                f"`{j['candidate']}` win rate {j['win_rate']:.3f} vs `{j['baseline']}` "
                f"(ties and order flips count 0.5); agreement rate {agree_s}; "
                f"{j['unreadable']} unreadable replies."
            )
        else:
            unread = ", ".join(f"{k}: {v}" for k, v in j["unreadable"].items())
            lines.append(
                f"- Judge `{j['metric']}` ({j['judge']}, scores 1..N scaled to 0..1); "
                f"unreadable replies (left out): {unread}."
            )
    return [*lines, ""] if lines else []


def power_md(report: EvalReport) -> list[str]:
    if not report.power:
        return []
    return ["## Power (planned before the run)", "", *(f"- {p['text']}" for p in report.power), ""]


VERDICT_LINE = {
    "pass": "**Gate passed.**",
    "fail": "**Gate FAILED.**",
    "insufficient evidence": "**Insufficient evidence**: no condition failed, but at least one "
    "interval is too wide to decide; evaluate more rows (see the power lines).",
}


def _tables(report: EvalReport, level: str = "##") -> list[str]:
    lines: list[str] = []
    for cand in report.candidates:
        for base in report.baselines:
            cmps = report.comparisons[cand.name][base.name]
            lines += [
                f"{level} `{base.name}` ({_describe(base)}) vs `{cand.name}` ({_describe(cand)})",
                "",
                *([f"Candidate evaluated as: {cand.loaded_as}.", ""] if cand.loaded_as else []),
                "| metric | baseline | candidate | diff [95% CI] | p |",
                "|---|---:|---:|---|---:|",
            ]
            quality = [k for k in cmps if k not in OPERATIONAL]
            ops = [k for k in OPERATIONAL if k in cmps]
            for key in quality + ops:
                c = cmps[key]
                p = fmt_p(c, report.settings.get("bootstrap", 1000))
                mark = " *" if c.significant and key in quality else ""
                lines.append(
                    f"| {key} | {fmt(key, c.baseline)} | {fmt(key, c.candidate)} | "
                    f"{fmt_diff(key, c)}{mark} | {p} |"
                )
            lines.append("")
    return lines


def markdown(report: EvalReport) -> str:
    lines = [f"# Ladle eval: `{report.recipe}` ({report.n_examples} examples)", ""]
    lines += _tables(report)
    for suite in report.suites:
        lines += [
            f"## Regression suite `{suite.recipe}` ({suite.n_examples} rows, each row's own "
            "prompt)",
            "",
            *_tables(suite, "###"),
        ]
    lines += [
        "`*`: the 95% paired-bootstrap interval excludes 0. p: McNemar's test for binary "
        "metrics (exact binomial below 50 discordant pairs), bootstrap otherwise. Latency "
        "quantiles come from separate per-request timings, so their interval is an unpaired "
        "bootstrap and they get no p-value; tokens_per_s is throughput, not latency.",
        "",
        *judge_md(report),
        *operations_md(report),
        *power_md(report),
        "## Gate",
        "",
    ]
    if not report.all_gate:
        lines.append("No gate conditions in the recipe.")
    else:
        icons = {"pass": "✅", "fail": "❌", "insufficient evidence": "❔"}
        lines += ["| | candidate | baseline | condition | result |", "|---|---|---|---|---|"]
        for g in report.all_gate:
            lines.append(
                f"| {icons[g.verdict]} | {g.candidate} | {g.baseline} | {g.name} | {g.message} |"
            )
        lines += ["", VERDICT_LINE[report.verdict] + f" (exit code {report.exit_code})"]
    lines += ["", decontamination_line(report.decontamination), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------- junit.xml


def junit_xml(report: EvalReport) -> str:
    """One test case per gate condition and candidate, as CI systems render JUnit."""
    gate = report.all_gate
    failures = sum(g.verdict == "fail" for g in gate)
    undecided = sum(g.verdict == "insufficient evidence" for g in gate)
    suite = ET.Element(
        "testsuite",
        name=f"ladle-eval.{report.recipe}",
        tests=str(len(gate)),
        failures=str(failures),
        errors=str(undecided),
        skipped="0",
    )
    for g in gate:
        case = ET.SubElement(
            suite, "testcase", classname=f"ladle.gate.{g.candidate}.vs.{g.baseline}", name=g.name
        )
        if g.verdict == "fail":
            fail = ET.SubElement(case, "failure", message=g.message, type="GateFailed")
            fail.text = g.message
        elif g.verdict == "insufficient evidence":
            err = ET.SubElement(case, "error", message=g.message, type="InsufficientEvidence")
            err.text = g.message
        else:
            ET.SubElement(case, "system-out").text = g.message
    root = ET.Element(
        "testsuites", tests=str(len(gate)), failures=str(failures), errors=str(undecided)
    )
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ----------------------------------------------------------------------- examples.jsonl


def _side(c: Contestant, i: int) -> dict[str, Any]:
    g = c.generation
    out: dict[str, Any] = {
        "output": g.outputs[i][0] if g.outputs[i] else "",
        "scores": {
            k: _num(float(s.values[i])) for k, s in c.scores.items() if k not in OPERATIONAL
        },
        "prompt_tokens": _num(float(g.prompt_tokens[i])),
        "completion_tokens": _num(float(g.completion_tokens[i])),
    }
    if c.kind == "endpoint":  # a real per-request time; a local batch's share is not one
        out["latency_s"] = _num(float(g.latency_s[i]))
    if len(g.outputs[i]) > 1:
        out["samples"] = g.outputs[i]
    return out


def examples_jsonl(report: EvalReport) -> str:
    lines = []
    for i, e in enumerate(report.examples):
        row = {
            "index": i,
            "prompt": e.prompt,
            "reference": e.reference,
            "baseline": _side(report.baseline, i),
            "baselines": {b.name: _side(b, i) for b in report.baselines},
            "candidates": {c.name: _side(c, i) for c in report.candidates},
        }
        lines.append(json.dumps(row, ensure_ascii=False))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- writing


def check_output_dir(out_dir: Path) -> Path:
    """The report folder replaces an earlier report, never a folder holding anything else."""
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "report.json").exists())
    ):
        raise EvalError(
            f"{out_dir} exists and is not an eval report folder; choose another --output"
        )
    return out_dir


def write_reports(report: EvalReport, out_dir: Path) -> list[Path]:
    """Write the five report files into ``out_dir`` (replacing an earlier eval report)."""
    out_dir = check_output_dir(Path(out_dir))
    md = markdown(report)
    with atomic_dir(out_dir, replace=True) as tmp:
        (tmp / "report.json").write_text(json.dumps(to_dict(report), indent=2) + "\n")
        (tmp / "report.md").write_text(md)
        (tmp / "junit.xml").write_text(junit_xml(report))
        (tmp / "examples.jsonl").write_text(examples_jsonl(report), encoding="utf-8")
        bar_chart(report, tmp / "chart.png")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(md + "\n")
    report.output_dir = out_dir
    report.files = ["report.json", "report.md", "junit.xml", "examples.jsonl", "chart.png"]
    return [out_dir / f for f in report.files]


# ----------------------------------------------------------------------- compare


def load_report(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EvalError(f"cannot read report {path}: {e}") from e
    if not isinstance(data, dict) or data.get("ladle_eval") not in READABLE_VERSIONS:
        raise EvalError(
            f"{path} is not a Ladle eval report.json (versions {READABLE_VERSIONS} are read)"
        )
    return data


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Markdown table of how each measure moved from report A to report B.

    Candidates are paired by position (run folder names change between commits); the
    baseline columns show whether the yardstick itself moved.
    """
    lines = [f"# Ladle compare: `{a['recipe']}` -> `{b['recipe']}`", ""]
    for ca, cb in zip(a["candidates"], b["candidates"], strict=False):
        va, vb = ca["values"], cb["values"]
        ba, bb = a["baseline"]["values"], b["baseline"]["values"]
        lines += [
            f"## `{ca['name']}` -> `{cb['name']}`",
            "",
            "| measure | baseline A | baseline B | candidate A | candidate B | change |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for key in [k for k in va if k in vb]:
            x, y = va[key], vb[key]
            change = "n/a" if x is None or y is None else f"{y - x:+.4g}"
            lines.append(
                f"| {key} | {fmt(key, ba.get(key))} | {fmt(key, bb.get(key))} | "
                f"{fmt(key, x)} | {fmt(key, y)} | {change} |"
            )
        only = sorted(set(va) ^ set(vb))
        if only:
            lines += ["", f"In one report only: {', '.join(only)}"]
        lines.append("")
    if len(a["candidates"]) != len(b["candidates"]):
        lines.append(
            f"Candidate counts differ ({len(a['candidates'])} vs {len(b['candidates'])}); "
            "the extra ones are not compared."
        )

    def verdict(r: dict[str, Any]) -> str:
        v = r.get("verdict") or ("pass" if r["gate_passed"] else "fail")
        return {"pass": "passed", "fail": "FAILED"}.get(v, v)

    gate = f"Gate: A {verdict(a)}, B {verdict(b)}."
    lines.append(gate)
    return "\n".join(lines) + "\n"


__all__ = [
    "check_output_dir",
    "compare_reports",
    "load_report",
    "markdown",
    "to_dict",
    "write_reports",
]
