"""harness.calibration: the loopback HTTP reference, a versioned speed measured in its own
processes, which the test-only slowdown knob never reaches."""

from __future__ import annotations

import pytest

from harness.calibration import WORKLOAD, measure
from harness.slowdown import SLOWDOWN_ENV


def test_measure_reports_speeds_and_its_workload() -> None:
    result = measure(0.2, rounds=2)
    assert result["workload"] == WORKLOAD
    assert result["requests_per_cpu_s"] > 0 and result["requests_per_s"] > 0
    assert len(result["rounds_requests_per_s"]) == 2
    rounds = result["rounds_requests_per_s"]  # the figure is their median, however they spread
    assert min(rounds) <= result["requests_per_s"] <= max(rounds)
    assert result["seconds"] >= 0.2


def test_the_slowdown_knob_does_not_reach_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference measures the machine: a slowed harness must not slow it too (else the gate
    would divide the slowdown away). Alternated, the knob's runs are not slower than plain ones."""
    plain, knobbed = [], []
    for _ in range(2):
        monkeypatch.delenv(SLOWDOWN_ENV, raising=False)
        plain.append(measure(0.2, rounds=1)["requests_per_cpu_s"])
        monkeypatch.setenv(SLOWDOWN_ENV, "1.0")  # would halve the speed if it reached it
        knobbed.append(measure(0.2, rounds=1)["requests_per_cpu_s"])
    assert max(knobbed) > 0.7 * min(plain)


def test_measure_rejects_a_non_positive_duration() -> None:
    with pytest.raises(ValueError, match="positive"):
        measure(0)
