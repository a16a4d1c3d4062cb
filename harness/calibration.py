"""Timing calibration: how fast this machine runs a fixed pure-Python + orjson workload.

Producers store `measure()` in the manifest under `calibration`; `harness compare` divides timing
metrics by the ratio of two calibrations, so a slower CI machine is not mistaken for a regression.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import orjson

# Bump when the workload changes: calibrations of different workloads are not comparable.
WORKLOAD = "harness-calibration/1"

_ROUNDS = 5
_BATCH = 20  # units between clock reads

_PROFILE: dict[str, Any] = {
    "id": "cand-000042",
    "name": "Ada Example",
    "headline": "Senior backend engineer, distributed systems and data pipelines",
    "summary": (
        "Built and operated batch inference and data platforms for ten years; led teams of five; "
        "moved a nightly pipeline from hours to minutes; mentors engineers; writes clear docs; "
        "enjoys profiling, load testing and making systems boring and reliable at scale"
    ),
    "skills": [
        {"name": name, "years": years, "level": level}
        for name, years, level in (
            ("python", 9, "expert"),
            ("postgresql", 7, "advanced"),
            ("kubernetes", 4, "advanced"),
            ("rust", 2, "intermediate"),
            ("terraform", 3, "intermediate"),
            ("kafka", 5, "advanced"),
        )
    ],
    "experience": [
        {"company": f"Company {i}", "title": "Engineer", "start": 2010 + i, "end": 2012 + i}
        for i in range(6)
    ],
    "location": {"city": "Lisbon", "country": "PT", "remote": True},
}


def _unit() -> int:
    """One unit of work: serialise, parse, count words, sort, aggregate (what harness code does)."""
    doc = orjson.loads(orjson.dumps(_PROFILE))
    counts: dict[str, int] = {}
    for word in doc["summary"].replace(";", " ").replace(",", " ").split():
        counts[word] = counts.get(word, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    weight = sum(len(skill["name"]) * skill["years"] for skill in doc["skills"])
    spans = [job["end"] - job["start"] for job in doc["experience"]]
    return weight + len(ranked) + sum(spans)


def measure(seconds: float = 0.3) -> dict[str, Any]:
    """Units of the fixed workload per second: the best of a few rounds (the least disturbed)."""
    if seconds <= 0:
        raise ValueError("calibration needs a positive number of seconds")
    per_round = seconds / _ROUNDS
    rates = []
    started = time.perf_counter()
    for _ in range(_ROUNDS):
        units = 0
        begin = time.perf_counter()
        elapsed = 0.0
        while elapsed < per_round:
            for _ in range(_BATCH):
                _unit()
            units += _BATCH
            elapsed = time.perf_counter() - begin
        rates.append(units / elapsed)
    return {
        "cpu_ops_per_s": round(max(rates), 1),
        "rounds_ops_per_s": [round(rate, 1) for rate in rates],
        "seconds": round(time.perf_counter() - started, 3),
        "workload": WORKLOAD,
        "python": platform.python_version(),
        "orjson": orjson.__version__,
    }
