"""Min/max-per-bucket downsampling: a 100K-point series drawn as a few thousand points whose
envelope is the same, so an OOM spike lasting one sample still shows (averaging would hide it)."""

from __future__ import annotations

import itertools

import numpy as np


def minmax(t: np.ndarray, y: np.ndarray, buckets: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most two points per bucket of consecutive samples: its min and its max, in time order.

    NaN values are ignored within a bucket; a bucket of NaN only keeps one NaN (a gap in the line).
    """
    n = len(t)
    if n <= 2 * buckets:
        return t, y
    size = -(-n // buckets)
    rows = -(-n // size)
    padded = np.full(rows * size, np.nan)
    padded[:n] = y
    grid = padded.reshape(rows, size)
    missing = np.isnan(grid)
    low = np.where(missing, np.inf, grid).argmin(axis=1)
    high = np.where(missing, -np.inf, grid).argmax(axis=1)
    base = np.arange(rows) * size
    index = np.column_stack((base + np.minimum(low, high), base + np.maximum(low, high))).ravel()
    index = index[index < n]
    keep = np.ones(len(index), dtype=bool)
    keep[1:] = index[1:] != index[:-1]  # a flat bucket: its min and max are the same sample
    index = index[keep]
    return t[index], y[index]


def downsample(
    t: np.ndarray,
    y: np.ndarray,
    max_points: int = 4000,
    gap_factor: float = 5.0,
    breaks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Min/max downsampling that also breaks the line (a NaN) where sampling stopped for longer
    than `gap_factor` typical intervals, and at the given `breaks` times (e.g. the target's
    deaths: the process after a restart is another process, its line should not join the last)."""
    n = len(t)
    if n < 3:
        return t, y
    steps = np.diff(t)
    typical = float(np.median(steps))
    cuts = set(np.flatnonzero(steps > gap_factor * typical) + 1) if typical > 0 else set()
    if breaks is not None and len(breaks):
        cuts |= set(np.searchsorted(t, breaks, side="right").tolist())
    cuts = sorted(cut for cut in cuts if 0 < cut < n)
    if not cuts:
        return minmax(t, y, max_points // 2)
    bounds = [0, *cuts, n]
    parts_t, parts_y = [], []
    for start, stop in itertools.pairwise(bounds):
        share = max(1, round(max_points / 2 * (stop - start) / n))
        seg_t, seg_y = minmax(t[start:stop], y[start:stop], share)
        parts_t += [seg_t, [seg_t[-1]]]
        parts_y += [seg_y, [np.nan]]
    return np.concatenate(parts_t[:-1]), np.concatenate(parts_y[:-1])
