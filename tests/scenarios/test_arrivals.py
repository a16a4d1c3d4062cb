"""Arrival schedules (harness/arrivals.py): the statistics of each process, seeded, and traces.

Fixed seeds make every figure deterministic; the bounds are still the generous ones a
statistician would accept for the sample sizes drawn, so a change of generator would pass too.
"""

from __future__ import annotations

import gzip
import itertools
import math
import statistics
from pathlib import Path

import orjson
import pytest

from harness.arrivals import (
    ArrivalSpec,
    LagStats,
    interarrivals,
    rate_offsets,
    trace_extent,
    trace_offsets,
)
from harness.errors import UserError


def _rate_and_cv(offsets: list[float]) -> tuple[float, float]:
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    return len(gaps) / (offsets[-1] - offsets[0]), statistics.pstdev(gaps) / statistics.fmean(gaps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_at_50_per_second_keeps_its_rate_and_a_cv_of_1(seed: int) -> None:
    offsets = list(itertools.islice(rate_offsets(50.0, "poisson", seed=seed), 10_001))
    rate, cv = _rate_and_cv(offsets)
    assert rate == pytest.approx(50.0, rel=0.03)
    assert cv == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(("burstiness", "seed"), [(0.5, 0), (0.5, 7), (2.0, 0), (4.0, 3)])
def test_gamma_arrivals_have_cv_one_over_root_burstiness(burstiness: float, seed: int) -> None:
    offsets = list(itertools.islice(rate_offsets(50.0, "gamma", burstiness, seed), 20_001))
    rate, cv = _rate_and_cv(offsets)
    assert rate == pytest.approx(50.0, rel=0.03)
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.1)


def test_constant_arrivals_are_evenly_spaced_and_schedules_start_at_zero() -> None:
    offsets = list(itertools.islice(rate_offsets(8.0, "constant"), 9))
    assert offsets == pytest.approx([i / 8 for i in range(9)])
    for arrival, burstiness in (("poisson", 1.0), ("gamma", 0.3)):
        assert next(rate_offsets(3.0, arrival, burstiness)) == 0.0


def test_a_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    def first(seed: int) -> list[float]:
        return list(itertools.islice(interarrivals(20.0, "gamma", 0.5, seed), 50))

    assert first(11) == first(11)
    assert first(11) != first(12)
    # burstiness 1 is Poisson: the same draws whichever name asks for it
    poisson = list(itertools.islice(interarrivals(5.0, "poisson", seed=4), 20))
    assert poisson == list(itertools.islice(interarrivals(5.0, "gamma", 1.0, seed=4), 20))


def test_processes_sharing_a_schedule_send_it_exactly_once() -> None:
    spec = ArrivalSpec(rate=30.0, arrival="gamma", burstiness=0.5, seed=9)
    whole = list(itertools.islice(spec.offsets(), 300))
    parts = [list(itertools.islice(spec.part(p, 3), 100)) for p in range(3)]
    merged = sorted(pair for part in parts for pair in part)
    assert [offset for _, offset in merged] == whole
    assert [index for index, _ in parts[1][:3]] == [1, 4, 7]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.0}, "above 0"),
        ({"rate": math.inf}, "above 0"),
        ({"rate": 5.0, "burstiness": 0.5}, "needs arrival gamma"),
        ({"rate": 5.0, "arrival": "gamma", "burstiness": -1.0}, "burstiness"),
        ({"rate": 5.0, "arrival": "uniform"}, "choose one of"),
        ({}, "a rate or a trace"),
        ({"rate": 5.0, "trace": "x.jsonl"}, "a rate or a trace"),
        ({"trace": "/nonexistent/trace.jsonl"}, "not a file"),
    ],
)
def test_impossible_schedules_are_refused_with_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ArrivalSpec(**kwargs)


def _write(path: Path, records: list[object]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        for record in records:
            handle.write(orjson.dumps(record) + b"\n")
    return path


def test_a_mooncake_trace_replays_its_millisecond_timestamps(tmp_path: Path) -> None:
    records = [
        {"timestamp": ms, "input_length": 655, "output_length": 52, "hash_ids": [46, 47]}
        for ms in (27482, 27482, 30535, 32517)
    ]
    for name in ("mooncake.jsonl", "mooncake.jsonl.gz"):
        path = _write(tmp_path / name, records)
        assert list(trace_offsets(path)) == pytest.approx([0.0, 0.0, 3.053, 5.035])
        count, span = trace_extent(path)
        assert count == 4
        assert span == pytest.approx(5.035)


def test_a_captured_run_replays_its_first_attempts_in_time_order(tmp_path: Path) -> None:
    # a distributed capture: lines a little out of order; retries are the client's, not the load's
    lines = [
        {"t": 1000.5, "id": "b", "attempt": 1},
        {"t": 1000.0, "id": "a", "attempt": 1},
        {"t": 1001.0, "id": "a", "attempt": 2},
        {"t": 1002.2, "scheduled_t": 1002.0, "id": "c", "attempt": 1},
    ]
    path = _write(tmp_path / "requests.jsonl", lines)
    assert list(trace_offsets(path)) == pytest.approx([0.0, 0.5, 2.0])
    far = _write(tmp_path / "far.jsonl", [{"t": 5.0}, {"t": 6.0}, {"t": 1.0}])
    with pytest.raises(UserError, match="out of time order"):
        list(trace_offsets(far, window=1))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"timestamp": 1}\nnot json\n', "line 2 is not JSON"),
        (b'{"timestamp": 1}\n{"input_length": 3}\n', "line 2 has no timestamp"),
        (b'{"timestamp": "soon"}\n', "line 1 has no timestamp"),
        (b"[1, 2]\n", "line 1 has no timestamp"),
        (b'{"timestamp": 1}\n{"x": "' + b"a" * (2 << 20) + b'"}\n', "longer than 1 MiB"),
    ],
)
def test_bad_trace_lines_are_named_by_number(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        trace_extent(path)


def test_lag_percentiles_are_within_one_percent_in_constant_memory() -> None:
    lags = [i / 10_000 for i in range(10_000)] + [-0.001, 0.0]  # early sends count as 0
    stats = LagStats()
    for lag in lags:
        stats.add(lag)
    ordered = sorted(max(0.0, lag) for lag in lags)
    for q in (0.5, 0.9, 0.99):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert stats.quantile(q) == pytest.approx(exact, rel=0.01)
    assert len(stats._buckets) < 1000
    verdict = stats.verdict(limit_s=0.5)
    assert verdict["behind"] and verdict["arrivals"] == len(lags)
    assert verdict["lag_max_s"] == pytest.approx(0.9999)
    assert not stats.verdict(limit_s=2.0)["behind"]
    assert LagStats().verdict()["lag_p99_s"] is None
