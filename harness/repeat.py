"""`harness scale --repeat K`: one configuration run K times, summarised as means with 95% CIs.

The runs go to <group>/r1 .. rK (each a whole run directory); repeat.json beside them lists them
and holds every figure's mean, spread and interval (reports.repeat). `harness compare <group>`
judges the group on those intervals.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from harness.errors import UserError
from harness.rundir import new_run_id
from harness.scale import ScaleConfig, ScaleOutcome, run_scale

# What the console shows of a group (every figure is in repeat.json).
SHOWN = (
    "throughput.requests_per_s",
    "latency.e2e_s.p50",
    "latency.e2e_s.p99",
    "latency.ttft_s.p99",
    "cost.cpu_s_per_request",
    "slo.goodput_rps",
)


@dataclass
class RepeatOutcome:
    """The group directory, each run's outcome and the aggregate document."""

    path: Path
    outcomes: list[ScaleOutcome]
    document: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)


def run_repeated(config: ScaleConfig, k: int, *, out: TextIO = sys.stderr) -> RepeatOutcome:
    """Run `config` k times into one group directory and write its repeat.json."""
    from reports.repeat import repeat_lines, write_repeat
    from reports.report import write_summary

    if k < 2:
        raise UserError(f"--repeat needs 2 or more runs to estimate the noise, got {k}")
    group = Path(config.run_dir or Path(config.runs_root) / new_run_id("scale"))
    if any(group.glob("r*/manifest.json")) or (group / "repeat.json").exists():
        raise UserError(f"{group} already holds repeated runs; pick another --run-dir")
    outcomes, runs = [], []
    for i in range(1, k + 1):
        run_dir = group / f"r{i}"
        print(f"scale: repeat {i} of {k} in {run_dir}", file=out, flush=True)
        outcomes.append(run_scale(replace(config, run_dir=str(run_dir)), out=out))
        runs.append(run_dir)
    summaries = [write_summary(run).summary for run in runs]
    document = write_repeat(group, runs, summaries)
    print(f"scale: {k} repeats, means with 95% confidence intervals:", file=out)
    for line in repeat_lines(document, SHOWN):
        print(f"scale:   {line}", file=out)
    print(f"scale: repeat group {group} (harness compare {group} --baseline FILE)", file=out)
    return RepeatOutcome(group, outcomes, document)
