"""Leak check: memory slope after warm-up, with a confidence interval and a plateau test.

The slope is one OLS fit shared by every process lifetime (each restart gets its own intercept, so
a restart's drop is not read as shrinking). Memory samples are strongly autocorrelated, so the
standard error is widened by the lag-1 autocorrelation of the residuals (AR(1) effective sample
size). Growth is called a leak only when the slope is positive at 95%, the growth is material, and
the last third of each lifetime is still above the middle third by at least half what the slope
predicts; a curve that rose during warm-up and levelled off is a plateau, not a leak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MB = 1_000_000  # reports use decimal MB for slopes, as the "MB per 1K requests"

LEAK = "leak"
PLATEAU = "plateau"
STABLE = "stable"
INSUFFICIENT = "insufficient_data"


@dataclass
class Slope:
    """A fitted slope with its 95% interval and fit quality."""

    value: float
    ci95: tuple[float, float]
    stderr: float
    r2: float


@dataclass
class LeakResult:
    """The verdict and the figures behind it (MB are 10^6 bytes)."""

    verdict: str
    reason: str
    mb_per_hour: float | None = None
    mb_per_hour_ci95: tuple[float, float] | None = None
    mb_per_1k_requests: float | None = None
    mb_per_1k_requests_ci95: tuple[float, float] | None = None
    # The slope when the verdict is a leak, else 0: what a regression check compares, so noise
    # in the slope of a stable or levelled-off series cannot fail a build.
    confirmed_mb_per_1k_requests: float | None = None
    r2: float | None = None
    late_growth_mb: float | None = None
    expected_late_growth_mb: float | None = None
    growth_mb: float | None = None
    samples: int = 0
    lifetimes: int = 0
    warmup_fraction: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


def leak_check(
    t: np.ndarray,
    y_bytes: np.ndarray,
    *,
    completed: np.ndarray | None = None,
    boundaries: np.ndarray | list[float] = (),
    warmup_fraction: float = 0.2,
    min_points: int = 30,
    min_growth_mb: float = 5.0,
    min_growth_fraction: float = 0.01,
) -> LeakResult:
    """Judge one memory series (`t` in unix seconds, values in bytes).

    `completed`: requests finished by each sample's time, for MB per 1K requests. `boundaries`:
    times where the process was replaced (exits, starts); each lifetime is fitted on its own level
    and loses its first `warmup_fraction` to warm-up. Growth below `min_growth_mb` or
    `min_growth_fraction` of the level over the analysed span is not material.
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(y_bytes, dtype=float) / MB
    finite = np.isfinite(t) & np.isfinite(y)
    t, y = t[finite], y[finite]
    comp = None if completed is None else np.asarray(completed, dtype=float)[finite]
    result = LeakResult(verdict=INSUFFICIENT, reason="", warmup_fraction=warmup_fraction)
    if len(t) < min_points:
        result.reason = f"{len(t)} samples; at least {min_points} are needed"
        return result

    segment = np.searchsorted(np.sort(np.asarray(boundaries, dtype=float)), t, side="right")
    keep = _after_warmup(t, segment, warmup_fraction)
    counts = np.bincount(segment[keep])
    keep &= counts[segment] >= max(5, min_points // 6)  # a lifetime too short to have a level
    t, y, segment = t[keep], y[keep], _relabel(segment[keep])
    comp = None if comp is None else comp[keep]
    result.samples, result.lifetimes = len(t), int(segment.max()) + 1 if len(t) else 0
    if len(t) < min_points:
        result.reason = f"{len(t)} samples after warm-up; at least {min_points} are needed"
        return result

    hours = (t - t[0]) / 3600.0
    per_hour = _pooled_slope(hours, y, segment)
    if per_hour is None:
        result.reason = "no time span after warm-up"
        return result
    result.mb_per_hour, result.mb_per_hour_ci95, result.r2 = (
        per_hour.value,
        per_hour.ci95,
        per_hour.r2,
    )
    if comp is not None:
        usable = np.isfinite(comp)
        per_1k = _pooled_slope(comp[usable] / 1000.0, y[usable], _relabel(segment[usable]))
        if per_1k is not None:
            result.mb_per_1k_requests = per_1k.value
            result.mb_per_1k_requests_ci95 = per_1k.ci95

    span_h = float(_span_per_segment(hours, segment).sum())
    growth = per_hour.value * span_h
    level = float(np.median(y))
    material = max(min_growth_mb, min_growth_fraction * abs(level))
    result.growth_mb = growth
    late, expected, late_se = _late_growth(hours, y, segment, per_hour)
    result.late_growth_mb, result.expected_late_growth_mb = late, expected

    ruled_out = per_hour.ci95[1] * span_h < material  # even the interval's top is immaterial
    if not ruled_out and (per_hour.ci95[0] <= 0 or growth < material):
        # the interval holds both no leak and a material one: no verdict either way
        result.reason = (
            f"slope {per_hour.value:+.2f} MB/h, 95% {per_hour.ci95[0]:+.2f} to "
            f"{per_hour.ci95[1]:+.2f}: over the {span_h * 3600:.0f} s analysed that neither "
            f"shows nor rules out {material:.1f} MB of growth; run longer"
        )
    elif per_hour.ci95[0] <= 0:
        result.verdict = STABLE
        result.reason = (
            f"slope {per_hour.value:+.2f} MB/h is not above zero at 95% "
            f"(interval {per_hour.ci95[0]:+.2f} to {per_hour.ci95[1]:+.2f})"
        )
    elif growth < material:
        result.verdict = STABLE
        result.reason = (
            f"growth over the analysed span ({growth:.1f} MB) is below {material:.1f} MB, "
            "too little to call a leak"
        )
    elif late >= 0.5 * expected and late > 2 * late_se:
        result.verdict = LEAK
        result.reason = (
            f"steady growth of {per_hour.value:.1f} MB/h (95% {per_hour.ci95[0]:.1f} to "
            f"{per_hour.ci95[1]:.1f}); still growing in the last third (+{late:.1f} MB)"
        )
    else:
        result.verdict = PLATEAU
        result.reason = (
            f"grew early, then levelled off: last third +{late:.1f} MB over the middle third, "
            f"where steady growth would give +{expected:.1f} MB"
        )
    if result.mb_per_1k_requests is not None:
        confirmed = result.verdict == LEAK
        result.confirmed_mb_per_1k_requests = result.mb_per_1k_requests if confirmed else 0.0
    return result


def _relabel(segment: np.ndarray) -> np.ndarray:
    """Segment ids as 0..k-1 in order, with no empty ids."""
    return np.unique(segment, return_inverse=True)[1] if len(segment) else segment


def _after_warmup(t: np.ndarray, segment: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of samples past the first `fraction` of their lifetime."""
    start = np.full(segment.max() + 1, np.inf)
    end = np.full(segment.max() + 1, -np.inf)
    np.minimum.at(start, segment, t)
    np.maximum.at(end, segment, t)
    return t >= start[segment] + fraction * (end[segment] - start[segment])


def _span_per_segment(x: np.ndarray, segment: np.ndarray) -> np.ndarray:
    low = np.full(segment.max() + 1, np.inf)
    high = np.full(segment.max() + 1, -np.inf)
    np.minimum.at(low, segment, x)
    np.maximum.at(high, segment, x)
    return high - low


def _demean(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    counts = np.bincount(segment)
    means = np.bincount(segment, weights=values) / np.maximum(counts, 1)
    return values - means[segment]


def _autocorrelation_factor(residuals: np.ndarray) -> float:
    """Variance inflation (1 + r) / (1 - r) for lag-1 autocorrelation r of the residuals."""
    if len(residuals) < 3:
        return 1.0
    denominator = float(residuals @ residuals)
    if denominator == 0:
        return 1.0
    r = float(residuals[1:] @ residuals[:-1]) / denominator
    r = min(max(r, 0.0), 0.99)
    return (1 + r) / (1 - r)


def _t_quantile(dof: float) -> float:
    """Two-sided 95% Student t quantile (Cornish-Fisher expansion; within 1% for dof >= 3)."""
    z = 1.959964
    dof = max(dof, 1.0)
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def _pooled_slope(x: np.ndarray, y: np.ndarray, segment: np.ndarray) -> Slope | None:
    """OLS slope of y on x with one intercept per segment; None when x does not vary."""
    if len(x) < 3:
        return None
    xd, yd = _demean(x, segment), _demean(y, segment)
    sxx = float(xd @ xd)
    if sxx <= 0:
        return None
    slope = float(xd @ yd) / sxx
    residuals = yd - slope * xd
    n, k = len(x), int(segment.max()) + 1
    dof = max(n - k - 1, 1)
    sse = float(residuals @ residuals)
    inflation = _autocorrelation_factor(residuals)
    stderr = (sse / dof / sxx * inflation) ** 0.5
    half = _t_quantile(dof / inflation) * stderr
    syy = float(yd @ yd)
    r2 = 1.0 - sse / syy if syy > 0 else 0.0
    return Slope(slope, (slope - half, slope + half), stderr, r2)


def _late_growth(
    x: np.ndarray, y: np.ndarray, segment: np.ndarray, fit: Slope
) -> tuple[float, float, float]:
    """Mean of the last third minus the middle third (pooled over lifetimes), what the slope
    predicts for that difference, and the difference's standard error."""
    low = np.full(segment.max() + 1, np.inf)
    np.minimum.at(low, segment, x)
    span = _span_per_segment(x, segment)
    position = np.where(span[segment] > 0, (x - low[segment]) / np.maximum(span[segment], 1e-12), 0)
    third = np.minimum((position * 3).astype(int), 2)
    groups = 3 * (int(segment.max()) + 1)
    key = segment * 3 + third
    count = np.bincount(key, minlength=groups).reshape(-1, 3)
    mean_y = np.bincount(key, weights=y, minlength=groups).reshape(-1, 3) / np.maximum(count, 1)
    mean_x = np.bincount(key, weights=x, minlength=groups).reshape(-1, 3) / np.maximum(count, 1)
    usable = (count[:, 1] > 0) & (count[:, 2] > 0)
    if not usable.any():
        return 0.0, 0.0, float("inf")
    weight = (count[:, 1] + count[:, 2])[usable]
    observed = float(np.average((mean_y[:, 2] - mean_y[:, 1])[usable], weights=weight))
    expected = fit.value * float(np.average((mean_x[:, 2] - mean_x[:, 1])[usable], weights=weight))
    n_mid, n_last = int(count[usable, 1].sum()), int(count[usable, 2].sum())
    yd = _demean(y, segment) - fit.value * _demean(x, segment)
    sigma2 = float(yd @ yd) / max(len(y) - 2, 1)
    inflation = _autocorrelation_factor(yd)
    stderr = (sigma2 * inflation * (1 / n_mid + 1 / n_last)) ** 0.5
    return observed, expected, stderr
