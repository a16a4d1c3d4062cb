"""Leak check: steady growth is a leak, a rise that levels off is not, restarts are not drops."""

from __future__ import annotations

import numpy as np
import pytest

from reports.leak import INSUFFICIENT, LEAK, MB, PLATEAU, STABLE, leak_check

T0 = 1_700_000_000.0


def _ar_noise(n: int, sigma_mb: float, seed: int = 0) -> np.ndarray:
    """Autocorrelated noise like real memory samples (AR(1), phi 0.9), in bytes."""
    rng = np.random.default_rng(seed)
    noise = np.zeros(n)
    shocks = rng.normal(0, sigma_mb * MB, n)
    for i in range(1, n):
        noise[i] = 0.9 * noise[i - 1] + shocks[i]
    return noise


@pytest.fixture
def clock() -> np.ndarray:
    return T0 + np.arange(3600) * 0.5  # 30 minutes at 0.5 s


def test_steady_growth_is_a_leak_with_its_slope(clock: np.ndarray) -> None:
    rss = 500 * MB + (clock - T0) / 3600 * 120 * MB + _ar_noise(len(clock), 1.0)
    completed = (clock - T0) * 4.0  # 4 requests/s: 120 MB/h is 120 / 14.4 MB per 1K requests
    result = leak_check(clock, rss, completed=completed)
    assert result.verdict == LEAK, result.reason
    low, high = result.mb_per_hour_ci95
    assert low <= 120 <= high and low > 0
    assert result.mb_per_1k_requests == pytest.approx(120 / 14.4, rel=0.1)
    assert result.confirmed_mb_per_1k_requests == result.mb_per_1k_requests


def test_a_plateau_after_warmup_growth_is_not_a_leak(clock: np.ndarray) -> None:
    age = clock - T0
    rss = 500 * MB + 150 * MB * (1 - np.exp(-age / 240)) + _ar_noise(len(clock), 1.0)
    result = leak_check(clock, rss, completed=age * 4.0)
    assert result.verdict in (PLATEAU, STABLE), result.reason
    assert result.verdict != LEAK
    assert result.confirmed_mb_per_1k_requests == 0.0
    # the naive reading, a positive slope after warm-up, is what the plateau test overrules
    assert result.mb_per_hour > 0


def test_flat_noisy_memory_is_stable(clock: np.ndarray) -> None:
    rss = 500 * MB + _ar_noise(len(clock), 3.0, seed=1)
    assert leak_check(clock, rss).verdict == STABLE


def test_growth_within_each_lifetime_is_found_despite_restarts(clock: np.ndarray) -> None:
    """A sawtooth: RSS climbs in each process lifetime and drops at each restart. One global fit
    sees almost no slope; fitting each lifetime on its own level finds the leak."""
    boundaries = T0 + np.array([600.0, 1200.0])
    age = clock - np.where(
        clock >= boundaries[1], boundaries[1], np.where(clock >= boundaries[0], boundaries[0], T0)
    )
    rss = 500 * MB + age / 3600 * 600 * MB + _ar_noise(len(clock), 0.5)
    global_slope = np.polyfit((clock - T0) / 3600, rss / MB, 1)[0]
    result = leak_check(clock, rss, boundaries=boundaries)
    assert result.verdict == LEAK, result.reason
    assert result.lifetimes == 3
    assert result.mb_per_hour == pytest.approx(600, rel=0.1)
    assert global_slope < 0.5 * result.mb_per_hour


def test_small_growth_is_not_material(clock: np.ndarray) -> None:
    rss = 500 * MB + (clock - T0) / 3600 * 2 * MB  # 1 MB over the run: real, but not a leak
    result = leak_check(clock, rss + _ar_noise(len(clock), 0.01))
    assert result.verdict == STABLE
    assert "below" in result.reason


def test_too_few_samples_say_so() -> None:
    t = T0 + np.arange(10.0)
    result = leak_check(t, np.full(10, 500 * MB))
    assert result.verdict == INSUFFICIENT
    assert result.mb_per_hour is None
    assert "10 samples" in result.reason


def test_missing_values_are_ignored(clock: np.ndarray) -> None:
    rss = 500 * MB + (clock - T0) / 3600 * 120 * MB + _ar_noise(len(clock), 1.0)
    rss[::7] = np.nan  # e.g. samples while the target was dead
    assert leak_check(clock, rss).verdict == LEAK


def test_a_short_noisy_run_is_insufficient_data_not_stable() -> None:
    """20 s of noisy samples: the slope's interval spans hundreds of MB an hour either way,
    which neither shows nor rules out a leak; the same noise over 30 minutes is stable."""
    short = T0 + np.arange(40) * 0.5
    result = leak_check(short, 500 * MB + _ar_noise(len(short), 3.0, seed=1))
    assert result.verdict == INSUFFICIENT, result.reason
    low, high = result.mb_per_hour_ci95
    assert high - low > 100  # MB/h: far too wide to call
    assert "run longer" in result.reason
