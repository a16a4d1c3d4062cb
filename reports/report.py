"""`harness report`: summary.json, one PNG per figure and report.html, written into the run dir."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.rundir import SUMMARY, write_atomic, write_json_atomic
from reports.rundata import has_run_files, load_run
from reports.slo import Objective
from reports.summary import summarize

REPORT_HTML = "report.html"


@dataclass
class ReportFiles:
    """What a report wrote, and the summary it computed."""

    summary: dict[str, Any]
    summary_path: Path
    html_path: Path | None = None
    pngs: dict[str, Path] = field(default_factory=dict)


def write_summary(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    slo: tuple[Objective, ...] | None = None,
) -> ReportFiles:
    """Compute and write summary.json only (what `harness compare` needs)."""
    run_dir = _checked(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    summary = summarize(load_run(run_dir), slo)
    write_json_atomic(out / SUMMARY, summary)
    return ReportFiles(summary=summary, summary_path=out / SUMMARY)


def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    slo: tuple[Objective, ...] | None = None,
) -> ReportFiles:
    """Read a run directory; write summary.json, <figure>.png and report.html into out_dir.

    `slo`: objectives to judge instead of those stored in the run's manifest.
    """
    # Imported here: matplotlib costs ~0.5 s, and `harness compare` needs only the summary.
    from reports.html import render_html
    from reports.plots import all_figures, png_bytes

    run_dir = _checked(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    run = load_run(run_dir)
    summary = summarize(run, slo)
    write_json_atomic(out / SUMMARY, summary)
    files = ReportFiles(summary=summary, summary_path=out / SUMMARY)
    images = {}
    for name, figure in all_figures(run, summary["window"]["duration_s"]).items():
        images[name] = png_bytes(figure)
        files.pngs[name] = out / f"{name}.png"
        write_atomic(files.pngs[name], images[name])
    files.html_path = out / REPORT_HTML
    write_atomic(files.html_path, render_html(summary, images).encode("utf-8"))
    return files


def _checked(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; pass a run directory such as runs/<run-id>")
    if not has_run_files(path):
        raise UserError(
            f"{path} has no manifest.json, samples.jsonl, events.jsonl, requests.jsonl or Locust "
            "*_stats.csv; pass the directory a run wrote"
        )
    return path
