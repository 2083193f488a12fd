"""``ladle dedup``: remove exact and near-duplicate rows (and eval leaks) from datasets.

Reads rows through the data engine's loader (every format ``ladle prep`` reads, each
row checked and normalised by the same Rust code), deduplicates on the normalised text
and writes the kept rows as they were in the input, atomically, with a JSON report
(rows in/out, exact and near duplicates removed, decontaminated rows, a sample of
removed pairs with their similarity so the threshold can be judged). The options and
their defaults are those of a recipe's ``data.dedup`` (``DedupSpec``).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any

from ladle.commands.common import subparser
from ladle.data.ray_cluster import add_engine_args, chosen_engine
from ladle.errors import DataError

EXAMPLE = """\
ladle dedup train.jsonl --out train.dedup.jsonl --report dedup.json
ladle dedup a.jsonl b.parquet --out all.jsonl --threshold 0.85 --fields user
ladle dedup train.jsonl --out clean.jsonl --against eval.jsonl   # also drop eval leaks"""

# DedupSpec fields that are not flags: prep-only switches and tuples (Python API only).
_NOT_FLAGS = {"enabled", "decontaminate", "normalize", "bands", "lsh_weights"}


def register(subparsers: Any) -> None:
    from ladle.recipe.schema import Format

    p = subparser(
        subparsers,
        "dedup",
        help="remove exact/near-duplicate rows and eval leaks from datasets",
        description=(
            "Remove exact duplicates (after normalisation: NFKC, lowercase, punctuation and "
            "whitespace) and near duplicates from one or more datasets, and with --against "
            "every training row whose prompt copies an eval prompt. Near duplicates: MinHash "
            "over word n-grams, LSH bands chosen for --threshold, candidates verified by true "
            "Jaccard. Identity (--fields): conversation = every turn; user = user turns only "
            "(same question, other answers are duplicates); assistant = assistant turns; "
            "prompt = the user turns of the prompt. Lower --threshold removes more: check the "
            "least similar pairs in the report. Rows the loader cannot read are skipped, "
            "counted, and written with their reason to a rejects file."
        ),
        example=EXAMPLE,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IN",
        help="input files (.jsonl .json .parquet .csv .tsv .arrow)",
    )
    p.add_argument("--out", required=True, help="output file; its suffix picks the format")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--format",
        choices=("auto", *typing.get_args(Format)),
        default="auto",
        help="row layout of the inputs (default auto: from each row's keys)",
    )
    p.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="EVAL",
        help="eval file(s): drop training rows whose prompt copies an eval prompt",
    )
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument(
        "--rejects",
        help="where skipped rows go, with their reason (default OUT.rejects.jsonl, written "
        "only when a row was skipped)",
    )
    p.add_argument("--strict", action="store_true", help="a bad row is an error, not a skip")
    _spec_flags(p)
    p.add_argument("--sample", type=int, default=20, help="removed pairs to list in the report")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_engine_args(p)
    p.set_defaults(func=run)


def _spec_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ``DedupSpec`` (and ``NormalizeSpec``) field, with its choices,
    default and help, so the CLI and recipes cannot drift apart."""
    from ladle.recipe.schema import DedupSpec, NormalizeSpec

    fields = [(k, f, "") for k, f in DedupSpec.model_fields.items() if k not in _NOT_FLAGS]
    fields += [(k, f, "normalize.") for k, f in NormalizeSpec.model_fields.items()]
    for name, f, prefix in fields:
        flag = name.replace("_", "-")
        dest = prefix + name
        desc = f.description or ""
        if f.annotation is bool:
            if f.default:
                p.add_argument(f"--no-{flag}", dest=dest, action="store_false", help=f"off: {desc}")
            else:
                p.add_argument(f"--{flag}", dest=dest, action="store_true", help=desc)
            p.set_defaults(**{dest: f.default})
            continue
        choices = (
            typing.get_args(f.annotation)
            if typing.get_origin(f.annotation) is typing.Literal
            else None
        )
        typ = type(f.default) if f.default is not None else str
        p.add_argument(
            f"--{flag}",
            dest=dest,
            type=typ,
            choices=choices,
            default=f.default,
            help=f"{desc} (default {f.default})",
        )
    p.add_argument(
        "--no-normalize", dest="normalize", action="store_false", help="hash texts exactly as given"
    )
    p.set_defaults(normalize=True)


def spec_from_args(args: argparse.Namespace) -> Any:
    """The ``DedupSpec`` the flags describe (validated: one line naming a bad option)."""
    from ladle.dedup import dedup_spec
    from ladle.recipe.schema import DedupSpec, NormalizeSpec

    values = vars(args)
    options = {k: values[k] for k in DedupSpec.model_fields if k not in _NOT_FLAGS}
    normalize = {k: values[f"normalize.{k}"] for k in NormalizeSpec.model_fields}
    return dedup_spec(options, normalize=normalize if args.normalize else False)


def _check_paths(args: argparse.Namespace, out: Path, rejects: Path) -> None:
    from ladle.data import io

    io.check_kind(out, write=True)
    ins = {Path(p).resolve() for p in [*args.inputs, *args.against]}
    for flag, path in (("--out", out), ("--report", args.report), ("--rejects", rejects)):
        if path is not None and Path(path).resolve() in ins:
            raise DataError(f"{flag} {path} is one of the inputs; write to another file")
    if out.exists() and not args.overwrite:
        raise DataError(f"--out {out} already exists; pass --overwrite to replace it")


def _read(
    paths: list[str], fmt: str, strict: bool
) -> tuple[list[Any], list[Any], list[str], list[Any]]:
    """(normalised rows, original records, locations, rejected rows) of some files."""
    from ladle.data.load import read_file

    rows: list[Any] = []
    records: list[Any] = []
    locations: list[str] = []
    rejected: list[Any] = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        got = read_file(path, fmt, strict=strict, keep_records=True)
        if not got.rows:
            why = ", ".join(f"{r}: {n}" for r, n in sorted(got.drops.counts.items()))
            raise DataError(f"{path}: no usable rows" + (f" ({why} skipped)" if why else ""))
        rows += got.rows
        records += got.records
        locations += got.locations
        rejected += got.rejected
    return rows, records, locations, rejected


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ladle.data import io
    from ladle.dedup import dedup_rows
    from ladle.paths import atomic_write_bytes

    quiet = bool(getattr(args, "quiet", False))
    spec = spec_from_args(args)
    out = Path(args.out)
    rejects_path = (
        Path(args.rejects) if args.rejects else out.with_name(out.name + ".rejects.jsonl")
    )
    _check_paths(args, out, rejects_path)

    rows, records, locations, rejected = _read(args.inputs, args.format, args.strict)
    against = against_locs = None
    if args.against:
        against, _, against_locs, eval_rejected = _read(args.against, args.format, args.strict)
        rejected += eval_rejected

    dedup = dedup_rows
    if chosen_engine(args) == "ray":  # --engine ray / --address: same result, on a Ray cluster
        from ladle.data.ray_dedup import dedup_rows_ray as dedup
    res = dedup(
        rows,
        spec,
        against,
        locations=locations,
        against_locations=against_locs,
        sample=args.sample,
        progress=not quiet and sys.stderr.isatty(),
    )
    report = res.report
    report["inputs"] = list(args.inputs)
    report["against"] = list(args.against)
    report["skipped"] = len(rejected)
    report["skipped_rows"] = [
        {"location": r.location, "reason": r.reason, "error": r.error} for r in rejected[:20]
    ]
    io.write_records(out, [r for r, k in zip(records, res.keep, strict=True) if k])
    if rejected:
        report["rejects_file"] = str(rejects_path)
        atomic_write_bytes(
            rejects_path,
            "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in rejected).encode(),
        )
    if args.report:
        atomic_write_bytes(
            Path(args.report), json.dumps(report, indent=2, ensure_ascii=False).encode()
        )
    if not quiet:
        print_summary(report, out)
    return 0


def print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ladle dedup -> {out}", show_header=False)
    for label, key in (
        ("rows in", "rows_in"),
        ("rows out", "rows_out"),
        ("exact duplicates removed", "exact_removed"),
        ("near-duplicate clusters", "near_clusters"),
        ("near duplicates removed", "near_removed"),
        ("decontaminated (eval leaks)", "decontaminated"),
        ("rows with no text (kept)", "empty_rows"),
        ("bad rows skipped", "skipped"),
    ):
        table.add_row(label, f"{report.get(key, 0):,}")
    Console(stderr=True).print(table)
    for m in report.get("skipped_rows", [])[:5]:
        print(f"  skipped {m['location']}: {m['error']} ({m['reason']})", file=sys.stderr)
    if report.get("rejects_file"):
        print(f"  skipped rows, with reasons: {report['rejects_file']}", file=sys.stderr)
