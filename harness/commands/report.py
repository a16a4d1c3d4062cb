"""`harness report RUN_DIR`: summary.json, PNG plots and a self-contained report.html."""

from __future__ import annotations

import argparse
from typing import Any

from harness.errors import UserError
from reports.formatting import format_metric
from reports.report import write_report
from reports.slo import METRICS, Objective, parse_slo, verdict_line


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="summarise a run directory: summary.json, PNG plots, report.html",
        description="Read a run directory (samples, events, requests, manifest, Locust CSVs) and "
        "write summary.json, one PNG per figure and a self-contained report.html.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory, e.g. runs/<run-id>")
    parser.add_argument("--out", metavar="DIR", help="write the report here instead of RUN_DIR")
    add_slo_arguments(parser)
    parser.set_defaults(handler=run)


def add_slo_arguments(parser: argparse.ArgumentParser) -> None:
    """--slo and --fail-on-slo, as report, compare and scale share them."""
    parser.add_argument(
        "--slo",
        metavar="SPEC",
        help="service-level objectives judged per request, e.g. "
        "ttft_p99=2s,itl_p99=100ms,e2e_p95=30s (metrics: " + ", ".join(METRICS) + "; "
        "percentiles pQ or max); adds attainment, goodput and a verdict",
    )
    parser.add_argument(
        "--fail-on-slo",
        action="store_true",
        help="exit 1 when an SLO is missed or could not be measured",
    )


def slo_objectives(args: argparse.Namespace) -> tuple[Objective, ...] | None:
    """The parsed --slo (a one-line UserError when it is not a valid spec)."""
    return None if args.slo is None else parse_slo(args.slo)


def slo_exit(summary: dict[str, Any], fail_on_slo: bool) -> int:
    """1 when --fail-on-slo and the SLOs were not met (missed or unmeasured)."""
    slo = summary.get("slo")
    if not fail_on_slo:
        return 0
    if slo is None:
        raise UserError("--fail-on-slo needs objectives: give --slo SPEC (none are stored)")
    return 0 if slo["verdict"] == "pass" else 1


def run(args: argparse.Namespace) -> int:
    files = write_report(args.run_dir, args.out, slo=slo_objectives(args))
    summary = files.summary
    print(f"summary:  {files.summary_path}")
    print(f"report:   {files.html_path} ({', '.join(files.pngs) or 'no plots'})")
    for line in summary_lines(summary):
        print(line)
    return slo_exit(summary, args.fail_on_slo)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few lines a person reads in a terminal after a run."""
    requests, throughput, latency = summary["requests"], summary["throughput"], summary["latency"]
    lines = []
    if requests.get("source"):
        e2e = (latency.get("e2e_s") or {}).get("p95")
        lines.append(
            f"requests: {requests['ok']:,} ok of {requests['attempts']:,} attempts, "
            f"error rate {format_metric('errors.rate', summary['errors']['rate'])}, "
            f"{format_metric('throughput.requests_per_s', throughput.get('requests_per_s'))}, "
            f"p95 e2e {format_metric('latency.e2e_s.p95', e2e)}"
        )
    memory = summary["memory"]
    peaks = [
        f"{label} {format_metric(key, memory.get(key))}"
        for key, label in (
            ("peak_rss_bytes", "RSS"),
            ("peak_vram_bytes", "VRAM"),
            ("peak_sim_vram_bytes", "simulated VRAM"),
        )
        if memory.get(key) is not None
    ]
    if peaks:
        lines.append("memory:   peak " + ", ".join(peaks))
    leaks = [
        f"{item['series']} {item['verdict'].replace('_', ' ')}" for item in summary["leak"].values()
    ]
    if leaks:
        lines.append("leak:     " + "; ".join(leaks))
    recovery = summary["recovery"]
    if recovery["incidents"]:
        ready = recovery.get("seconds_to_ready") or {}
        lines.append(
            f"recovery: {recovery['incidents']} incident(s), "
            f"{recovery['unrecovered']} unrecovered, "
            f"ready max {format_metric('recovery.seconds_to_ready.max', ready.get('max'))}"
        )
    if summary.get("slo"):
        lines.append("slo:      " + verdict_line(summary["slo"]))
    lines += [f"warning:  {warning}" for warning in summary["warnings"]]
    return lines
