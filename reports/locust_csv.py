"""Locust's own `--csv` files as Locust writes them (`<prefix>_stats.csv`, `_stats_history.csv`).

Used when a run has no requests.jsonl. Locust reports milliseconds and counts failed requests in its
response-time percentiles; figures taken from here are converted to seconds and say their source.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_PERCENTILES = {"p50": "50%", "p90": "90%", "p95": "95%", "p99": "99%", "max": "100%"}


@dataclass
class LocustStats:
    """The Aggregated row of `_stats.csv` and the Aggregated rows of `_stats_history.csv`."""

    prefix: str
    total: dict[str, Any] | None
    history: dict[str, np.ndarray] | None


def read_locust(run_dir: Path) -> LocustStats | None:
    """The first `*_stats.csv` (and its history) in the run directory, or None."""
    stats_files = sorted(run_dir.glob("*_stats.csv"))
    if not stats_files:
        return None
    prefix = stats_files[0].name[: -len("_stats.csv")]
    history_path = run_dir / f"{prefix}_stats_history.csv"
    return LocustStats(
        prefix=prefix,
        total=_aggregated(stats_files[0]),
        history=_history(history_path) if history_path.exists() else None,
    )


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else np.nan
    except ValueError:
        return np.nan


def _aggregated(path: Path) -> dict[str, Any] | None:
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") != "Aggregated":
                continue
            latency = {key: _float(row.get(column)) / 1000 for key, column in _PERCENTILES.items()}
            latency["mean"] = _float(row.get("Average Response Time")) / 1000
            return {
                "requests": int(_float(row.get("Request Count")) or 0),
                "failures": int(_float(row.get("Failure Count")) or 0),
                "requests_per_s": _float(row.get("Requests/s")),
                "failures_per_s": _float(row.get("Failures/s")),
                "latency_s": latency,
            }
    return None


def _history(path: Path) -> dict[str, np.ndarray] | None:
    columns: dict[str, list[float]] = {
        "t": [],
        "users": [],
        "requests_per_s": [],
        "failures_per_s": [],
        "p50_s": [],
        "p95_s": [],
        "p99_s": [],
        "total_requests": [],
    }
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") != "Aggregated" or not row.get("Timestamp"):
                continue
            columns["t"].append(_float(row["Timestamp"]))
            columns["users"].append(_float(row.get("User Count")))
            columns["requests_per_s"].append(_float(row.get("Requests/s")))
            columns["failures_per_s"].append(_float(row.get("Failures/s")))
            for key in ("p50", "p95", "p99"):
                columns[f"{key}_s"].append(_float(row.get(_PERCENTILES[key])) / 1000)
            columns["total_requests"].append(_float(row.get("Total Request Count")))
    if not columns["t"]:
        return None
    return {name: np.asarray(values, dtype=float) for name, values in columns.items()}
