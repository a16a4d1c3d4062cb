"""A repeat group: K runs of one configuration (`--repeat K`), read back as means with 95% CIs.

The group directory holds repeat.json, which lists its runs (sub directories r1..rK, each a whole
run directory with its own summary.json). Every figure is the mean of the runs with Student's t
interval, as measured: the runs of a group share one machine, and scaling each by its own loopback
reference would add that reference's noise to every run. The references' mean (and each run's,
as the samples of its noise) go with the group, for compare to put the group on a baseline
machine's speed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from harness.errors import UserError
from harness.rundir import utc_iso, write_json_atomic
from reports.formatting import format_metric
from reports.stats import estimate

REPEAT = "repeat.json"
SCHEMA = "harness-repeat/1"


def reference_rate(calibration: Mapping[str, Any] | None) -> float | None:
    """A run's machine speed: its loopback reference's requests per CPU second (None without)."""
    rate = (calibration or {}).get("requests_per_cpu_s")
    return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None


def normalized(value: float, higher_is_better: bool, speed_ratio: float) -> float:
    """A timing figure on the reference machine's speed: rates / ratio, durations x ratio."""
    return value / speed_ratio if higher_is_better else value * speed_ratio


def group_runs(path: Path) -> list[Path] | None:
    """The run directories of a repeat group, or None when `path` is a single run."""
    index = path / REPEAT
    if not index.is_file():
        return None
    try:
        document = orjson.loads(index.read_bytes())
        names = [str(name) for name in document["runs"]]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{index} is torn or not a repeat index; run the repeats again") from None
    runs = [path / name for name in names]
    missing = [str(run) for run in runs if not run.is_dir()]
    if missing:
        raise UserError(f"{index} lists runs that are gone: {', '.join(missing)}")
    if not runs:
        raise UserError(f"{index} lists no runs; run the repeats again")
    return runs


def aggregate(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means, spreads and 95% intervals of every figure compare knows, across the runs."""
    from reports.compare import flatten, rule_for  # compare imports this module

    rates = [reference_rate(s.get("calibration")) for s in summaries]
    samples = [rate for rate in rates if rate is not None] if all(rates) else []
    values: dict[str, list[float]] = {}
    for summary in summaries:
        for name, value in flatten(summary).items():
            if rule_for(name) is not None:
                values.setdefault(name, []).append(value)
    metrics = {name: {**estimate(v).to_dict(), "values": v} for name, v in sorted(values.items())}
    return {
        "repeats": len(summaries),
        "reference_requests_per_cpu_s": sum(samples) / len(samples) if samples else None,
        "reference_samples": samples,
        "metrics": metrics,
    }


def write_repeat(group: Path, runs: Sequence[Path], summaries: Sequence[Mapping[str, Any]]) -> dict:
    """repeat.json: the runs of the group and their aggregate."""
    document = {
        "schema": SCHEMA,
        "generated_at": utc_iso(),
        "runs": [str(run.relative_to(group)) for run in runs],
        **aggregate(summaries),
    }
    write_json_atomic(group / REPEAT, document)
    return document


def repeat_lines(document: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """A few figures as `mean (95% lo to hi, n K)` lines for a terminal."""
    lines = []
    for name in names:
        figures = document["metrics"].get(name)
        if not figures:
            continue
        text = format_metric(name, figures["mean"])
        if figures["ci95"]:
            lo, hi = figures["ci95"]
            text += f" (95% CI {format_metric(name, lo)} to {format_metric(name, hi)})"
        lines.append(f"{name}: {text}, n={figures['n']}")
    return lines
