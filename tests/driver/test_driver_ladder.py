"""The ladder's fit: least squares with R², extrapolation, and the figures it reads."""

from __future__ import annotations

import pytest

from harness.driver.ladder import extrapolate, fit_line, rung_figures


def test_fit_recovers_a_line_and_scores_it():
    fit = fit_line([5_000, 10_000, 50_000], [12.0, 22.0, 102.0])
    assert fit.slope == pytest.approx(0.002)
    assert fit.intercept == pytest.approx(2.0)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.at(170_000) == pytest.approx(342.0)
    assert (
        fit.formula("time", "{:.1f} s".format)
        == "time = 2.0 s + 2.0 s per 1K candidates (R² 1.0000)"
    )


def test_r2_falls_when_points_leave_the_line():
    fit = fit_line([1, 2, 3, 4], [1.0, 3.0, 2.0, 4.0])
    assert fit.slope == pytest.approx(0.8)
    assert fit.r2 == pytest.approx(0.64)


def test_two_points_fit_exactly_and_say_so():
    fit = fit_line([200, 400], [1.0, 2.0])
    assert (fit.r2, fit.points) == (None, 2)
    assert "(R² n/a with 2 points)" in fit.formula("time", str)


def test_one_point_is_no_fit():
    assert fit_line([200, 200], [1.0, 2.0]) is None


def test_extrapolate_skips_figures_no_rung_measured():
    rungs = [
        {"n": 200, "seconds": 1.0, "peak_rss_bytes": 100, "peak_vram_bytes": None},
        {"n": 400, "seconds": 2.0, "peak_rss_bytes": 120, "peak_vram_bytes": None},
        {"n": 800, "seconds": 4.0, "peak_rss_bytes": 160, "peak_vram_bytes": None},
    ]
    fits = extrapolate(rungs, 170_000)
    assert fits["seconds"]["at_target"] == pytest.approx(850.0)
    assert fits["peak_rss_bytes"]["at_target"] == pytest.approx(80 + 0.1 * 170_000)
    assert "unavailable" in fits["peak_vram_bytes"]


def test_a_falling_figure_reads_as_minus():
    fit = fit_line([1_000, 2_000, 3_000], [3.0, 2.0, 1.0])
    assert fit.formula("x", "{:.1f}".format).startswith("x = 4.0 - 1.0 per 1K candidates")


def test_rung_figures_prefer_measured_vram_and_fall_back_to_simulated():
    summary = {
        "memory": {"peak_rss_bytes": 5, "peak_vram_bytes": None, "peak_sim_vram_bytes": 7},
        "leak": {"ram": {"mb_per_1k_requests": 0.25}},
    }
    figures = rung_figures(summary, 3.14159, 42)
    assert figures == {
        "seconds": 3.142,
        "peak_rss_bytes": 5,
        "peak_vram_bytes": 7,
        "vram_source": "simulated",
        "leak_mb_per_1k_requests": 0.25,
        "driver_peak_rss_bytes": 42,
    }
