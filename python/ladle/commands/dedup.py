"""``ladle dedup``: remove exact and near-duplicate rows (and eval leaks) from datasets.

Reads JSONL/JSON/Parquet/CSV rows, writes the kept rows atomically and a JSON report
(rows in/out, exact and near duplicates removed, decontaminated rows, a sample of
removed pairs with their similarity so the threshold can be judged).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ladle.commands.common import subparser
from ladle.data.ray_cluster import add_engine_args, chosen_engine
from ladle.dedup import FIELDS, DedupConfig, NormalizeConfig, dedup_rows
from ladle.errors import DataError
from ladle.paths import atomic_write_bytes

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")

EXAMPLE = """\
ladle dedup train.jsonl --out train.dedup.jsonl --report dedup.json
ladle dedup a.jsonl b.parquet --out all.jsonl --threshold 0.85 --fields user
ladle dedup train.jsonl --out clean.jsonl --against eval.jsonl   # also drop eval leaks"""


def register(subparsers: Any) -> None:
    p = subparser(
        subparsers,
        "dedup",
        help="remove exact/near-duplicate rows and eval leaks from datasets",
        description=(
            "Remove exact duplicates (after normalisation: NFKC, lowercase, punctuation and "
            "whitespace) and near duplicates from one or more datasets, and with --against "
            "every training row whose prompt copies an eval prompt. Near duplicates: MinHash "
            "over word 5-grams, LSH bands chosen for --threshold as datasketch does, "
            "candidates verified by true Jaccard. Identity (--fields): conversation = every "
            "turn; user = user turns only (same question, other answers are duplicates); "
            "assistant = assistant turns; prompt = the prompt of preference rows. Lower "
            "--threshold removes more: check the least similar pairs in the report."
        ),
        example=EXAMPLE,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="IN", help="input files (.jsonl .json .parquet .csv)"
    )
    p.add_argument(
        "--out", required=True, help="output file; format from its suffix (default JSONL)"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.8,
        help="Jaccard similarity at or above which rows are near duplicates (default 0.8)",
    )
    p.add_argument(
        "--fields",
        choices=FIELDS,
        default="conversation",
        help="which text defines an example's identity (default conversation)",
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
        "--keep",
        choices=("first", "longest"),
        default="first",
        help="which member of a duplicate cluster survives (default first)",
    )
    p.add_argument("--ngram", type=int, default=5, help="words per shingle (default 5)")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default 128)")
    p.add_argument(
        "--scheme",
        choices=("fast", "datasketch", "datasketch-legacy"),
        default="fast",
        help="shingle hash; datasketch schemes match datasketch.MinHash bit for bit",
    )
    p.add_argument("--no-exact", action="store_true", help="skip exact-duplicate removal")
    p.add_argument("--no-near", action="store_true", help="skip near-duplicate removal")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="trust LSH candidates without checking their true Jaccard",
    )
    p.add_argument("--no-normalize", action="store_true", help="hash texts exactly as given")
    p.add_argument("--digits-to-zero", action="store_true", help="treat all numbers as equal")
    p.add_argument("--sample", type=int, default=20, help="removed pairs to list in the report")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet = bool(getattr(args, "quiet", False))
    show_progress = not quiet and sys.stderr.isatty()
    normalize: bool | NormalizeConfig = (
        False if args.no_normalize else NormalizeConfig(digits_to_zero=args.digits_to_zero)
    )
    try:
        config = DedupConfig(
            threshold=args.threshold,
            fields=args.fields,
            keep=args.keep,
            ngram=args.ngram,
            num_perm=args.num_perm,
            scheme=args.scheme,
            exact=not args.no_exact,
            near=not args.no_near,
            verify=not args.no_verify,
            normalize=normalize,
        )
        config.check()
    except ValueError as err:
        raise DataError(f"bad option: {err}") from err
    out = Path(args.out)
    if out.suffix.lower() not in SUFFIXES:
        raise DataError(f"--out {out}: unknown format; use one of {', '.join(SUFFIXES)}")

    rows, locations, malformed = read_many(args.inputs)
    against = against_locs = None
    against_malformed: list[dict[str, Any]] = []
    if args.against:
        against, against_locs, against_malformed = read_many(args.against)

    dedup = dedup_rows
    if chosen_engine(args) == "ray":  # --engine ray / --address: same result, on a Ray cluster
        from ladle.data.ray_dedup import dedup_rows_ray as dedup
    kept, report = dedup(
        rows,
        config,
        against,
        locations=locations,
        against_locations=against_locs,
        sample=args.sample,
        progress=show_progress,
    )
    report["inputs"] = list(args.inputs)
    report["against"] = list(args.against)
    report["malformed_lines"] = malformed + against_malformed
    write_rows(out, kept)
    if args.report:
        atomic_write_bytes(
            Path(args.report), json.dumps(report, indent=2, ensure_ascii=False).encode()
        )
    if not quiet:
        print_summary(report, out)
    return 0


# ---------------------------------------------------------------- reading


def read_many(paths: list[str]) -> tuple[list[Mapping[str, Any]], list[str], list[dict[str, Any]]]:
    rows: list[Mapping[str, Any]] = []
    locations: list[str] = []
    malformed: list[dict[str, Any]] = []
    for path in paths:
        r, loc, bad = read_rows(Path(path))
        rows += r
        locations += loc
        malformed += bad
    return rows, locations, malformed


def read_rows(path: Path) -> tuple[list[Mapping[str, Any]], list[str], list[dict[str, Any]]]:
    """Rows of one file with a location per row (``file:line`` for JSONL, ``file#i``
    otherwise) and the malformed JSONL lines (skipped, not fatal)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    malformed: list[dict[str, Any]] = []
    rows: list[Mapping[str, Any]] = []
    locations: list[str] = []
    if suffix == ".jsonl":
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except ValueError as err:  # UnicodeDecodeError is a ValueError too
                    malformed.append({"file": str(path), "line": lineno, "error": str(err)[:200]})
                    continue
                if not isinstance(obj, dict):
                    malformed.append(
                        {
                            "file": str(path),
                            "line": lineno,
                            "error": f"expected a JSON object, got {type(obj).__name__}",
                        }
                    )
                    continue
                rows.append(obj)
                locations.append(f"{path}:{lineno}")
    elif suffix == ".json":
        try:
            data = json.loads(path.read_bytes())
        except ValueError as err:
            raise DataError(f"{path}: not valid JSON: {err}") from err
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of row objects")
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise DataError(f"{path}#{i}: a row must be an object, got {type(obj).__name__}")
            rows.append(obj)
            locations.append(f"{path}#{i}")
    elif suffix in (".parquet", ".csv"):
        import pyarrow as pa

        try:
            if suffix == ".parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(path)
            else:
                import pyarrow.csv as pcsv

                table = pcsv.read_csv(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: cannot read {suffix[1:]}: {err}") from err
        rows = table.to_pylist()
        locations = [f"{path}#{i}" for i in range(len(rows))]
    else:
        raise DataError(f"{path}: unknown format; use one of {', '.join(SUFFIXES)}")
    if not rows:
        extra = f" ({len(malformed)} malformed lines)" if malformed else ""
        raise DataError(f"{path}: no rows{extra}")
    return rows, locations, malformed


# ---------------------------------------------------------------- writing


def write_rows(out: Path, rows: list[Mapping[str, Any]]) -> None:
    """Write rows in the format of ``out``'s suffix, atomically (temp file + rename)."""
    suffix = out.suffix.lower()
    if suffix in (".jsonl", ".json"):
        if suffix == ".jsonl":
            data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
        else:
            data = json.dumps(rows, ensure_ascii=False, default=str, indent=1)
        atomic_write_bytes(out, data.encode("utf-8"))
        return
    import pyarrow as pa

    table = pa.Table.from_pylist(list(rows))
    buf = io.BytesIO()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, buf)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, buf)
    atomic_write_bytes(out, buf.getvalue())


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
    ):
        table.add_row(label, f"{report.get(key, 0):,}")
    if report.get("malformed_lines"):
        table.add_row("malformed lines skipped", f"{len(report['malformed_lines']):,}")
    Console(stderr=True).print(table)
    for m in report.get("malformed_lines", [])[:5]:
        print(f"  skipped {m['file']}:{m['line']}: {m['error']}", file=sys.stderr)
