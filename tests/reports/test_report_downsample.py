"""Min/max downsampling keeps peaks and order, bounds the points, and breaks lines at gaps."""

from __future__ import annotations

import numpy as np

from reports.downsample import downsample, minmax


def test_minmax_keeps_every_extreme_and_bounds_points() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(100_000) * 0.5
    y = rng.normal(0, 1, len(t))
    y[54_321] = 50.0  # a one-sample spike (an OOM moment)
    y[77_777] = -40.0
    xs, ys = minmax(t, y, buckets=1000)
    assert len(xs) <= 2000
    assert ys.max() == 50.0 and ys.min() == -40.0
    assert xs[np.argmax(ys)] == t[54_321]
    assert np.all(np.diff(xs) > 0)  # time order, no duplicates


def test_short_series_are_returned_as_they_are() -> None:
    t, y = np.arange(10.0), np.arange(10.0)
    xs, ys = minmax(t, y, buckets=100)
    assert xs is t and ys is y


def test_flat_buckets_keep_one_point() -> None:
    t = np.arange(10_000.0)
    xs, _ = minmax(t, np.ones_like(t), buckets=100)
    assert len(xs) == 100


def test_gaps_in_sampling_break_the_line() -> None:
    t = np.concatenate([np.arange(0, 5000, 0.5), np.arange(5060, 10_000, 0.5)])  # 60 s dead
    y = np.ones_like(t)
    xs, ys = downsample(t, y, max_points=400)
    gap = np.flatnonzero(np.isnan(ys))
    assert len(gap) == 1
    assert xs[gap[0] - 1] < 5000 < 5060 <= xs[gap[0] + 1]
    assert len(xs) <= 400 + 2


def test_given_breaks_split_the_line_even_without_a_gap() -> None:
    """A restart 0.2 s long leaves no sampling gap; the new process's line must not join the old."""
    t = np.arange(0, 100, 0.5)
    xs, ys = downsample(t, np.ones_like(t), breaks=np.array([40.2, 70.0]))
    cuts = xs[np.isnan(ys)]
    assert len(cuts) == 2
    assert cuts[0] == 40.0 and cuts[1] == 70.0  # the last point of each lifetime, then the gap
