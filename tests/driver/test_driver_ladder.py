"""The ladder's fits: three models, chosen by leave-one-out error, extrapolation with an interval,
the speed label, and the figures it reads."""

from __future__ import annotations

import math

import pytest

from harness.driver.ladder import (
    choose_model,
    extrapolate,
    fit_model,
    ladder_table,
    loo_errors,
    rung_figures,
    time_note,
)


def test_linear_fit_recovers_a_line_and_writes_its_formula():
    model = fit_model("linear", [(5_000, 12.0), (10_000, 22.0), (50_000, 102.0)])
    assert (model.a, model.b) == (pytest.approx(2.0), pytest.approx(0.002))
    assert model.at(170_000) == pytest.approx(342.0)
    assert model.formula("time", "{:.1f} s".format) == "time = 2.0 s + 2.0 s per 1K candidates"


def test_a_falling_figure_reads_as_minus():
    model = fit_model("linear", [(1_000, 3.0), (2_000, 2.0), (3_000, 1.0)])
    assert model.formula("x", "{:.1f}".format).startswith("x = 4.0 - 1.0 per 1K candidates")


def test_loo_of_a_line_by_hand():
    # Leaving out (1, 1), the line through (2, 3), (3, 2), (4, 4) is y = 1.5 + 0.5x (mean x 3,
    # mean y 3, sxy 1, sxx 2): it predicts 2 at x = 1, an error of -1. Every point, by hand:
    pairs = [(1.0, 1.0), (2.0, 3.0), (3.0, 2.0), (4.0, 4.0)]
    expected = []
    for i, (x, y) in enumerate(pairs):
        rest = [p for j, p in enumerate(pairs) if j != i]
        mx = sum(p[0] for p in rest) / 3
        my = sum(p[1] for p in rest) / 3
        slope = sum((p[0] - mx) * (p[1] - my) for p in rest) / sum((p[0] - mx) ** 2 for p in rest)
        expected.append(y - (my + slope * (x - mx)))
    assert expected[0] == pytest.approx(-1.0)
    assert loo_errors("linear", pairs) == pytest.approx(expected)


def test_loo_needs_enough_points_per_model():
    pairs = [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert loo_errors("linear", pairs) is not None
    assert loo_errors("saturating", pairs) is None  # 3 parameters, 2 points left to fit them


# A figure that warms up and levels off, as driver RSS does: 70 + 30 (1 - exp(-N / 2,000)).
PLATEAU = [(n, 70.0 + 30.0 * (1 - math.exp(-n / 2_000))) for n in (1_000, 2_000, 5_000, 10_000)]


def test_a_plateau_picks_saturating_and_predicts_the_level():
    choice = choose_model(*zip(*PLATEAU, strict=True))
    assert choice.model.name == "saturating"
    rmse = choice.loo_rmse
    assert rmse["saturating"] < rmse["logarithmic"] < rmse["linear"]
    # the straight line's held-out error, by hand: leave out N=10,000 and fit the other three
    rest = PLATEAU[:3]
    mx, my = sum(p[0] for p in rest) / 3, sum(p[1] for p in rest) / 3
    slope = sum((x - mx) * (y - my) for x, y in rest) / sum((x - mx) ** 2 for x, _ in rest)
    held_out = PLATEAU[3][1] - (my + slope * (PLATEAU[3][0] - mx))
    assert loo_errors("linear", PLATEAU)[3] == pytest.approx(held_out)
    assert held_out < -5  # the line overshoots the level
    assert choice.model.at(170_000) == pytest.approx(100.0, abs=0.5)
    assert fit_model("linear", PLATEAU).at(170_000) > 300


def test_a_line_picks_linear_with_no_spread():
    line = [(n, 5.0 + 0.002 * n) for n in (1_000, 2_000, 5_000, 10_000)]
    choice = choose_model(*zip(*line, strict=True))
    assert choice.model.name == "linear"
    assert choice.loo_rmse["linear"] == pytest.approx(0.0, abs=1e-9)
    assert choice.loo_max_error == pytest.approx(0.0, abs=1e-9)
    fit = choice.to_dict("x", "{:.1f}".format, 170_000)
    assert fit["at_target"] == pytest.approx(345.0)
    assert fit["interval"] == [pytest.approx(345.0), pytest.approx(345.0)]


def test_a_flat_figure_is_linear_and_two_rungs_are_unchecked():
    assert choose_model([1, 2, 3], [7.0, 7.0, 7.0]).model.name == "linear"
    two = choose_model([200, 400], [1.0, 2.0])
    assert two.model.name == "linear" and two.loo_max_error is None
    assert set(two.loo_rmse.values()) == {None}
    assert choose_model([200, 200], [1.0, 2.0]) is None


def test_extrapolate_reports_the_model_its_prediction_and_interval():
    rungs = [
        {"n": 200, "seconds": 1.0, "peak_rss_bytes": 100, "peak_vram_bytes": None},
        {"n": 400, "seconds": 2.0, "peak_rss_bytes": 120, "peak_vram_bytes": None},
        {"n": 800, "seconds": 4.0, "peak_rss_bytes": 160, "peak_vram_bytes": None},
    ]
    fits = extrapolate(rungs, 170_000)
    assert fits["seconds"]["model"] == "linear"
    assert fits["seconds"]["at_target"] == pytest.approx(850.0)
    assert fits["peak_rss_bytes"]["at_target"] == pytest.approx(80 + 0.1 * 170_000)
    assert list(fits["seconds"]["loo_rmse"]) == ["linear"]  # time: a cost per request
    assert fits["peak_rss_bytes"]["loo_rmse"]["saturating"] is None  # 3 rungs, 3 parameters
    assert "unavailable" in fits["peak_vram_bytes"]
    lines = ladder_table(
        {"rungs": rungs, "fits": fits, "target_n": 170_000, "time_note": "time note"}
    )
    assert any(line.strip().startswith("linear, the least held-out error") for line in lines)
    assert lines[-1] == "time note"


def test_the_time_note_names_the_speed_it_ran_at():
    note = time_note(100.0, 124.0, 170_000)
    assert "predicted at --speed 100: 124.0 s, not the real run" in note
    assert "3.4 h" in note
    assert "--speed max" in time_note(math.inf, 10.0, 170_000)
    assert time_note(None, 10.0, 170_000) is None


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
