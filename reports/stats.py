"""Means with 95% confidence intervals (Student's t), for repeated runs and for compare.

Repeats of one run are few (3 to 10), so intervals use the t distribution, not the normal one;
two groups are compared with Welch's interval for the difference of their means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t by degrees of freedom; beyond the table, 1.96 is within
# 2% of the truth (df 30: 2.042).
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(df: float) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError("a t interval needs at least one degree of freedom")
    if df >= len(_T95) + 1:
        return 1.96 + 2.4 / df  # within 0.5% of the exact quantile from df 31 on
    low = int(df)
    if low == df or low >= len(_T95):
        return _T95[min(low, len(_T95)) - 1]
    frac = df - low  # Welch's df is fractional: interpolate
    return _T95[low - 1] + frac * (_T95[low] - _T95[low - 1])


@dataclass(frozen=True)
class Estimate:
    """A mean of n repeats; sd is the sample standard deviation (None for a single value)."""

    mean: float
    sd: float | None
    n: int

    @property
    def ci95(self) -> tuple[float, float] | None:
        if self.sd is None:
            return None
        half = t95(self.n - 1) * self.sd / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def to_dict(self) -> dict[str, object]:
        ci = self.ci95
        return {"mean": self.mean, "sd": self.sd, "n": self.n, "ci95": list(ci) if ci else None}


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and spread of the finite values (at least one)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        raise ValueError("no finite value to estimate from")
    mean = math.fsum(finite) / len(finite)
    if len(finite) < 2:
        return Estimate(mean, None, 1)
    variance = math.fsum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return Estimate(mean, math.sqrt(variance), len(finite))


def difference_ci95(current: Estimate, baseline: Estimate) -> tuple[float, float] | None:
    """Welch's 95% interval of current.mean - baseline.mean.

    A side measured once borrows the other side's spread (the same run on the same kind of
    machine scatters alike); with no spread on either side there is no interval.
    """
    sd_c = current.sd if current.sd is not None else baseline.sd
    sd_b = baseline.sd if baseline.sd is not None else current.sd
    if sd_c is None or sd_b is None:
        return None
    var_c, var_b = sd_c**2 / current.n, sd_b**2 / baseline.n
    se = math.sqrt(var_c + var_b)
    diff = current.mean - baseline.mean
    if se == 0:
        return diff, diff
    if current.sd is None or baseline.sd is None:  # one spread for both: its own df
        df = float((baseline.n if current.sd is None else current.n) - 1)
    else:  # Welch-Satterthwaite
        df = (var_c + var_b) ** 2 / (var_c**2 / (current.n - 1) + var_b**2 / (baseline.n - 1))
    half = t95(max(1.0, df)) * se
    return diff - half, diff + half
