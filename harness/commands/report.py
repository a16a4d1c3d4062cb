"""`harness report RUN_DIR`: summary.json, PNG plots and a self-contained report.html."""

from __future__ import annotations

import argparse
from typing import Any

from reports.formatting import format_metric
from reports.report import write_report


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="summarise a run directory: summary.json, PNG plots, report.html",
        description="Read a run directory (samples, events, requests, manifest, Locust CSVs) and "
        "write summary.json, one PNG per figure and a self-contained report.html.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory, e.g. runs/<run-id>")
    parser.add_argument("--out", metavar="DIR", help="write the report here instead of RUN_DIR")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    files = write_report(args.run_dir, args.out)
    summary = files.summary
    print(f"summary:  {files.summary_path}")
    print(f"report:   {files.html_path} ({', '.join(files.pngs) or 'no plots'})")
    for line in summary_lines(summary):
        print(line)
    return 0


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
    lines += [f"warning:  {warning}" for warning in summary["warnings"]]
    return lines
