"""Distributions as plain JSON: quantiles (continuous) or counts (small discrete), k-anonymous.

The ends of a quantile table are the means of the k smallest and k largest values, so that no
single record's extreme value is ever written.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence

QUANTILES = 20  # 21 points: 0%, 5%, ..., 100%


def learn(values: Sequence[float], k: int, integer: bool = False) -> dict:
    """{"counts": {value: n}} for few small integers, else {"quantiles": [21 points]}."""
    if not values:
        return {"quantiles": [0.0] * (QUANTILES + 1)}
    ordered = sorted(values)
    counts = Counter(ordered)
    if integer and len(counts) <= 30:
        return {"counts": {str(int(v)): n for v, n in sorted(counts.items())}}
    n = len(ordered)
    edge = max(1, min(k, n // 2 or 1))
    points = [sum(v / edge for v in ordered[:edge])]  # divided first: 1e308 + 1e308 overflows
    for q in range(1, QUANTILES):
        position = q / QUANTILES * (n - 1)
        low = int(position)
        high = min(low + 1, n - 1)
        points.append(_between(ordered[low], ordered[high], position - low))
    points.append(sum(v / edge for v in ordered[-edge:]))
    for index in range(1, len(points)):  # the edge means may cross an inner point
        points[index] = max(points[index], points[index - 1])
    return {"quantiles": [round(p, 6) for p in points]}


class Sampler:
    """Draws from a learned distribution with a caller's RNG (inverse CDF, linear in between)."""

    __slots__ = ("_cumulative", "_points", "_values", "_wide")

    def __init__(self, dist: dict) -> None:
        if "counts" in dist:
            self._values = [float(v) for v in dist["counts"]]
            total = 0
            self._cumulative = []
            for n in dist["counts"].values():
                total += n
                self._cumulative.append(total)
            self._points = None
        else:
            self._points = [float(p) for p in dist["quantiles"]]
        points = self._points or ()
        # neighbours further apart than a float can say (-1e308 and 1e308): b - a overflows
        self._wide = any(math.isinf(b - a) for a, b in itertools.pairwise(points))

    def draw(self, rng: random.Random) -> float:
        return self.at(rng.random())

    def at(self, u: float) -> float:
        """The value at quantile u (0 <= u < 1)."""
        if self._points is None:
            target = u * self._cumulative[-1]
            return self._values[
                min(bisect.bisect_right(self._cumulative, target), len(self._values) - 1)
            ]
        position = u * (len(self._points) - 1)
        low = int(position)
        if low >= len(self._points) - 1:
            return self._points[-1]
        a, b = self._points[low], self._points[low + 1]
        if self._wide:
            return _between(a, b, position - low)
        return a + (b - a) * (position - low)

    @property
    def low(self) -> float:
        return self._points[0] if self._points is not None else min(self._values)

    @property
    def high(self) -> float:
        return self._points[-1] if self._points is not None else max(self._values)


def _between(a: float, b: float, share: float) -> float:
    """a + (b - a) * share, also where b - a is past a float's range (-1e308 to 1e308)."""
    gap = b - a
    return a + gap * share if math.isfinite(gap) else a * (1 - share) + b * share
