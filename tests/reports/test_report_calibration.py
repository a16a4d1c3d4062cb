"""harness.calibration: a positive, versioned speed figure that scales with the work done."""

from __future__ import annotations

import pytest

from harness.calibration import WORKLOAD, measure


def test_measure_reports_a_rate_and_its_workload() -> None:
    result = measure(0.05)
    assert result["cpu_ops_per_s"] > 0
    assert result["workload"] == WORKLOAD
    assert len(result["rounds_ops_per_s"]) == 5
    assert result["cpu_ops_per_s"] == max(result["rounds_ops_per_s"])  # the least disturbed round
    assert result["seconds"] >= 0.05


def test_measure_rejects_a_non_positive_duration() -> None:
    with pytest.raises(ValueError, match="positive"):
        measure(0)
