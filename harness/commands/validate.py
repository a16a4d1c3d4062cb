"""`harness validate FILE`: stream a dataset through the v1 schema and report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import generators
from harness.errors import UserError
from harness.progress import progress_bar
from harness.units import whole_number


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a dataset file against the candidate-batch schema",
        description="Stream a dataset (json, jsonl or openai-batch) through the v1 schema; "
        "print the count, bytes per candidate and the first errors. Exit 1 if any.",
    )
    parser.add_argument(
        "file",
        type=Path,
        help="dataset file (.json, .jsonl, .openai-batch.jsonl, any of them .gz, "
        "or ARCHIVE.tar.gz:MEMBER)",
    )
    parser.add_argument(
        "--max-errors", type=whole_number, default=10, help="errors to print (default 10)"
    )
    parser.add_argument(
        "--workers",
        type=whole_number,
        default=0,
        help="accepted for compatibility; validation streams in one process",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not generators.split_member(path)[0].is_file():
        raise UserError(f"{path} is not a file: give the path of a dataset written by harness gen")
    workers = args.workers or min(os.cpu_count() or 1, 8)
    header_count = None
    try:
        if generators.detect_format(path) == "json":
            header_count = generators.read_header(path).get("candidate_count")
        with progress_bar(f"validate {path.name}", header_count or 0, "records") as advance:
            report = generators.validate_file(
                path, max_errors=args.max_errors, workers=workers, progress=advance
            )
    except generators.DatasetError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:  # malformed JSON in the middle of a document
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    stats = report.size_stats()
    print(f"{path}: {report.format}, {report.count:,} records, {report.file_bytes / 1e6:,.1f} MB")
    if stats:
        print(
            "bytes per record: mean {mean:,.0f}, stdev {stdev:,.0f}, min {min:,}, p50 {p50:,}, "
            "p95 {p95:,}, max {max:,}".format(**stats)
        )
    if report.duplicate_ids or report.duplicate_emails:
        print(f"duplicates: {report.duplicate_ids} ids, {report.duplicate_emails} emails")
    for error in report.errors:
        print(f"error: {error}")
    if report.error_count > len(report.errors):
        print(f"... and {report.error_count - len(report.errors)} more errors")
    if not report.ok:
        print(f"INVALID: {report.error_count} schema errors")
        return 1
    print("valid")
    return 0
