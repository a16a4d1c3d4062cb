"""Reports: read a run directory, write summary.json, PNG plots and report.html; compare runs.

Reads run directories only (harness.rundir); never imports the server.
"""

from reports.compare import Comparison, compare, make_baseline
from reports.downsample import minmax
from reports.leak import LeakResult, leak_check
from reports.report import ReportFiles, write_report, write_summary
from reports.rundata import RunData, load_run
from reports.summary import summarize

__all__ = [
    "Comparison",
    "LeakResult",
    "ReportFiles",
    "RunData",
    "compare",
    "leak_check",
    "load_run",
    "make_baseline",
    "minmax",
    "summarize",
    "write_report",
    "write_summary",
]
