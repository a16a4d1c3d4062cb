"""Streamed figures: time to second token, every single gap and the longest, as StreamClock
measures them and the reporter pools them (a fixed-memory histogram)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from harness.locust.timing import GAPS_FIELD, MAX_GAPS, StreamClock, gaps_ms
from reports import load_run, summarize
from reports.rundata import GapHistogram


def test_ttst_and_every_gap_one_token_per_chunk() -> None:
    clock = StreamClock(100.0, keep_gaps=True)
    for t in (100.2, 100.225, 100.258, 100.283):  # a 33 ms gap among 25 ms ones
        clock.content(t)
    metrics = clock.finish(100.3)
    assert metrics.ttft_s == pytest.approx(0.2)
    assert metrics.ttst_s == pytest.approx(0.225)
    assert metrics.gaps_s == pytest.approx((0.025, 0.033, 0.025))
    assert metrics.itl_max_s == pytest.approx(0.033)
    assert metrics.itl_mean_s == pytest.approx(0.083 / 3)  # the mean hides the 33 ms gap


def test_a_chunk_of_several_tokens_spreads_its_gap() -> None:
    clock = StreamClock(0.0, keep_gaps=True)
    clock.content(0.1, cumulative_tokens=2)  # two tokens at once: the second came with the first
    clock.content(0.16, cumulative_tokens=5)  # three more, 60 ms later: 20 ms a token
    metrics = clock.finish(0.2)
    assert metrics.ttst_s == pytest.approx(0.1) == metrics.ttft_s
    assert metrics.gaps_s == pytest.approx((0.02, 0.02, 0.02))
    assert metrics.itl_max_s == pytest.approx(0.02)


def test_gaps_are_bounded_and_off_by_default() -> None:
    clock = StreamClock(0.0)
    clock.content(0.1)
    clock.content(0.2)
    assert clock.finish(0.3).gaps_s == () and clock.finish(0.3).itl_max_s == pytest.approx(0.1)
    long = StreamClock(0.0, keep_gaps=True)
    for i in range(MAX_GAPS + 50):
        long.content(i * 0.001)
    assert len(long.finish(100.0).gaps_s) == MAX_GAPS
    assert gaps_ms((0.0123456, 0.5)) == [12.346, 500.0]


def test_the_gap_histogram_matches_exact_percentiles() -> None:
    rng = np.random.default_rng(3)
    gaps = rng.gamma(4.0, 0.004, 200_000)  # ~16 ms gaps with a long tail
    histogram = GapHistogram()
    for start in range(0, len(gaps), 997):  # fed line by line, as requests.jsonl is read
        histogram.add(list(gaps[start : start + 997] * 1000))
    figures = histogram.figures()
    assert figures is not None and figures["n"] == len(gaps)
    for name, q in (("p50", 50), ("p99", 99)):
        assert figures[name] == pytest.approx(np.percentile(gaps, q), rel=0.002)
    assert figures["max"] == pytest.approx(gaps.max(), rel=0.002)
    assert GapHistogram().figures() is None


def test_the_summary_pools_every_gap_of_successful_requests(tmp_path: Path) -> None:
    lines = []
    for i in range(100):
        ok = i != 99
        gaps = [25.0] * 9 + [33.0] if ok else [1000.0] * 10  # a failed request's gaps don't count
        lines.append(
            {
                "t": 1e9 + i,
                "t_end": 1e9 + i + 0.5,
                "ok": ok,
                "latency_s": 0.5,
                "ttft_s": 0.2,
                "ttst_s": 0.225,
                "itl_max_s": 0.033,
                GAPS_FIELD: gaps,
            }
        )
    (tmp_path / "requests.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    latency = summarize(load_run(tmp_path))["latency"]
    assert latency["itl_gap_s"]["n"] == 990
    assert latency["itl_gap_s"]["p50"] == pytest.approx(0.025, rel=0.001)
    assert latency["itl_gap_s"]["p99"] == pytest.approx(0.033, rel=0.001)  # 10% of gaps are 33 ms
    assert latency["ttst_s"]["p50"] == pytest.approx(0.225)
    assert latency["itl_max_s"]["p99"] == pytest.approx(0.033)


def _open_loop_run(path: Path, lag_s: float) -> Path:
    path.mkdir()
    lines = [
        {
            "t": 1e9 + i * 0.1 + lag_s,
            "t_end": 1e9 + i * 0.1 + lag_s + 0.2,
            "ok": True,
            "latency_s": 0.2,
            "scheduled_t": 1e9 + i * 0.1,
            "schedule_lag_s": lag_s,
            "scheduled_latency_s": 0.2 + lag_s,
        }
        for i in range(200)
    ]
    (path / "requests.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    return path


def test_an_open_loop_run_behind_its_schedule_is_flagged(tmp_path: Path) -> None:
    kept = summarize(load_run(_open_loop_run(tmp_path / "kept", 0.002)))
    assert kept["schedule"]["behind"] is False and kept["schedule"]["arrivals"] == 200
    assert not any("behind schedule" in w for w in kept["warnings"])
    starved = summarize(load_run(_open_loop_run(tmp_path / "starved", 0.3)))
    assert starved["schedule"]["behind"] is True
    assert starved["schedule"]["lag_p99_s"] == pytest.approx(0.3)
    assert any("behind schedule" in w for w in starved["warnings"])
    # latency from the scheduled send time shows what the client's lateness hid
    assert starved["latency"]["scheduled_s"]["p50"] == pytest.approx(0.5)
    assert starved["latency"]["e2e_s"]["p50"] == pytest.approx(0.2)
    closed = tmp_path / "closed"
    closed.mkdir()
    line = {"t": 1.0, "t_end": 1.2, "ok": True, "latency_s": 0.2}
    (closed / "requests.jsonl").write_bytes(orjson.dumps(line) + b"\n")
    assert summarize(load_run(closed))["schedule"] is None
