"""`harness compare RUN_DIR --baseline FILE`: the scale-regression gate (exit 1 on a regression)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from harness.commands.report import add_slo_arguments, slo_objectives
from harness.errors import UserError
from harness.rundir import SUMMARY, write_atomic, write_json_atomic
from harness.units import finite_float
from reports.compare import (
    DEFAULT_MAX_ERROR_RATE,
    as_baseline,
    compare,
    make_baseline,
    parse_threshold,
)
from reports.repeat import group_runs
from reports.report import write_summary
from reports.rundata import has_run_files
from reports.slo import Objective


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare a run with a baseline; exit 1 on a scale regression",
        description="Compare a run's summary with a baseline, metric by metric (direction, "
        "threshold, verdict). Prints a Markdown table, writes compare.json and compare.md into "
        "RUN_DIR, exits 1 when a metric regressed or went missing. Timing metrics are scaled by "
        "the ratio of the two machines' loopback references. RUN_DIR may be a repeat group "
        "(harness scale --repeat K): timing metrics are then judged on 95%% intervals, a "
        "regression only when the whole interval is past the threshold.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory, e.g. runs/<run-id>")
    parser.add_argument(
        "--baseline", required=True, metavar="FILE", help="baseline JSON (or a summary.json)"
    )
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="METRIC=LIMIT",
        help="allowed worsening: 10%% (of the baseline), 0.5 (absolute, metric units) or "
        "10%%,0.5 (the larger); METRIC may be a glob such as 'latency.*'. Repeatable.",
    )
    parser.add_argument(
        "--max-error-rate",
        type=finite_float,
        metavar="RATE",
        help=f"fail when the error rate is above RATE (0-1) whatever the baseline "
        f"(default {DEFAULT_MAX_ERROR_RATE})",
    )
    parser.add_argument(
        "--no-calibration",
        action="store_true",
        help="compare timing metrics as measured, not scaled by the calibration ratio",
    )
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help="write this run as the new baseline FILE (keeping its thresholds) and exit 0",
    )
    parser.add_argument("--json", metavar="PATH", help="where to write the JSON verdict")
    add_slo_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    summaries = _summaries(run_dir, slo_objectives(args))
    thresholds = dict(parse_threshold(text) for text in args.threshold)
    if args.max_error_rate is not None and not 0 <= args.max_error_rate <= 1:
        raise UserError(
            f"--max-error-rate {args.max_error_rate} is not a rate; give 0 to 1, e.g. 0.05"
        )
    baseline_path = Path(args.baseline)
    baseline = _read_baseline(baseline_path) if baseline_path.exists() else None
    if baseline is None and not args.update_baseline:
        raise UserError(
            f"baseline {baseline_path} does not exist; create it from this run with "
            f"harness compare {run_dir} --baseline {baseline_path} --update-baseline"
        )
    if baseline is not None:
        comparison = compare(
            summaries,
            baseline,
            thresholds=thresholds,
            max_error_rate=args.max_error_rate,
            calibrate=not args.no_calibration,
        )
        markdown = comparison.to_markdown(str(baseline_path))
        print(markdown, end="")
        write_atomic(run_dir / "compare.md", markdown.encode("utf-8"))
        json_path = Path(args.json) if args.json else run_dir / "compare.json"
        write_json_atomic(json_path, comparison.to_dict())
    if args.update_baseline:
        _update_baseline(baseline_path, summaries, baseline, thresholds, args.max_error_rate)
        return 0
    if not comparison.passed:
        return 1
    if args.fail_on_slo:
        if comparison.slo is None:
            raise UserError("--fail-on-slo needs objectives: give --slo SPEC (none are stored)")
        return 0 if comparison.slo_met else 1
    return 0


def _summaries(run_dir: Path, slo: tuple[Objective, ...] | None) -> list[dict[str, Any]]:
    """One summary per run: the runs of a repeat group (repeat.json), or the one run."""
    runs = group_runs(run_dir) if run_dir.is_dir() else None
    return [_summary(path, slo) for path in runs or [run_dir]]


def _summary(run_dir: Path, slo: tuple[Objective, ...] | None) -> dict[str, Any]:
    """A fresh summary of the run's files, or its summary.json when only that was kept."""
    if run_dir.is_dir() and has_run_files(run_dir):
        return write_summary(run_dir, slo=slo).summary
    if (run_dir / SUMMARY).exists():
        if slo is not None:
            raise UserError(f"{run_dir} holds only a summary.json: --slo needs its requests.jsonl")
        return _read_json(run_dir / SUMMARY)
    raise UserError(f"{run_dir} has neither run files nor a summary.json; pass a run directory")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc}); restore it from git or rewrite it"
        ) from None
    if not isinstance(document, dict):
        raise UserError(f"{path} is not a JSON object; restore it from git or rewrite it")
    return document


def _read_baseline(path: Path) -> dict[str, Any]:
    return as_baseline(_read_json(path), str(path))


def _update_baseline(
    path: Path,
    summaries: list[dict[str, Any]],
    old: dict[str, Any] | None,
    thresholds: dict[str, str],
    max_error_rate: float | None,
) -> None:
    limit = DEFAULT_MAX_ERROR_RATE if max_error_rate is None else max_error_rate
    for summary in summaries:
        rate = summary["errors"]["rate"]
        if rate is not None and rate > limit:
            raise UserError(
                f"run {summary['run']['run_id']}'s error rate {rate:.1%} is above {limit:.0%}; a "
                "baseline must be a healthy run: fix the run, or pass --max-error-rate if those "
                "errors are expected"
            )
    kept = {**((old or {}).get("thresholds") or {}), **thresholds}
    baseline = make_baseline(summaries, kept)
    write_json_atomic(path, baseline)
    runs = f" from {len(summaries)} runs" if len(summaries) > 1 else ""
    print(f"baseline written: {path} ({len(baseline['metrics'])} metrics{runs})")
