"""Open-loop arrival schedules: when each request is due, and how late the client sent it.

A schedule is an endless (rate) or finite (trace) iterator of send offsets in seconds from the
start of the run, non-decreasing, the first at 0. Rate schedules follow `vllm bench serve`:
gamma-distributed gaps with shape = burstiness and scale = 1 / (rate * burstiness), so the mean
gap is 1/rate whatever the burstiness, burstiness 1 is Poisson and the gaps' coefficient of
variation is 1/sqrt(burstiness). Seeded draws from Python's own generator: the same seed gives
the same schedule on every machine. Pure Python, no Locust: the Locust scenarios and the
`harness scale` driver share it.
"""

from __future__ import annotations

import bisect
import gzip
import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from harness.errors import UserError

ARRIVALS = ("constant", "poisson", "gamma")
DEFAULT_LAG_LIMIT_S = 0.05
TRACE_REORDER_WINDOW = 65_536  # lines a trace may be out of time order by (distributed captures)
_MAX_TRACE_LINE = 1 << 20


def check_rate(rate: float, arrival: str = "poisson", burstiness: float = 1.0) -> None:
    """Refuse a rate schedule that cannot be drawn (UserError saying what to pass instead)."""
    if arrival not in ARRIVALS:
        raise UserError(f"arrival {arrival!r}: choose one of {', '.join(ARRIVALS)}")
    if not (math.isfinite(rate) and rate > 0):
        raise UserError(f"rate {rate!r} must be a number of requests per second above 0")
    if not (math.isfinite(burstiness) and burstiness > 0):
        raise UserError(f"burstiness {burstiness!r} must be above 0 (1 is Poisson)")
    if arrival != "gamma" and burstiness != 1.0:
        raise UserError(
            f"burstiness {burstiness:g} needs arrival gamma ({arrival} has no burstiness; "
            "poisson is gamma with burstiness 1)"
        )


def interarrivals(
    rate: float, arrival: str = "poisson", burstiness: float = 1.0, seed: int = 0
) -> Iterator[float]:
    """Endless gaps (s) between consecutive requests: 1/rate each (constant), or gamma draws."""
    check_rate(rate, arrival, burstiness)
    if arrival == "constant":
        return itertools.repeat(1.0 / rate)
    shape = 1.0 if arrival == "poisson" else burstiness
    draw = random.Random(seed).gammavariate
    scale = 1.0 / (rate * shape)
    return (draw(shape, scale) for _ in itertools.count())


def rate_offsets(
    rate: float, arrival: str = "poisson", burstiness: float = 1.0, seed: int = 0
) -> Iterator[float]:
    """Endless send offsets (s): 0, then each previous offset plus the next gap."""
    gaps = interarrivals(rate, arrival, burstiness, seed)
    return itertools.accumulate(gaps, initial=0.0)


def trace_offsets(path: str | Path, window: int = TRACE_REORDER_WINDOW) -> Iterator[float]:
    """Send offsets (s) replayed from a trace, relative to its earliest request, in time order.

    Each JSON line is one request: `timestamp` in milliseconds (Mooncake, AIPerf fixed
    schedule), or a harness requests.jsonl line (`scheduled_t` if it has one, else `t`, unix
    seconds; retries, `attempt` > 1, are skipped). Lines may be out of order by up to `window`
    lines (a distributed capture); the file is streamed, `.gz` too.
    """
    times = _trace_times(Path(path))
    first: list[float] = []
    for t in _in_order(times, window, path):
        if not first:
            first.append(t)
        yield t - first[0]


def _trace_times(path: Path) -> Iterator[float]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        handle = opener(path, "rb")
    except OSError as exc:
        raise UserError(f"trace {path}: {exc.strerror or exc}") from None
    with handle:
        for number in itertools.count(1):
            line = handle.readline(_MAX_TRACE_LINE + 1)
            if not line:
                return
            if len(line) > _MAX_TRACE_LINE:
                raise UserError(f"trace {path} line {number} is longer than 1 MiB")
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UserError(f"trace {path} line {number} is not JSON") from None
            if _is_retry(record):
                continue
            t = _time_of(record)
            if t is None:
                raise UserError(
                    f"trace {path} line {number} has no timestamp: give `timestamp` (ms, as "
                    "Mooncake and AIPerf traces do) or a harness requests.jsonl (`t`, s)"
                )
            yield t


def _is_retry(record: Any) -> bool:
    """A requests.jsonl line of a resend: the capture's schedule is its first attempts."""
    attempt = record.get("attempt") if isinstance(record, dict) else None
    return isinstance(attempt, int) and attempt > 1 and "timestamp" not in record


def _time_of(record: Any) -> float | None:
    """A trace line's send time in seconds; None when it has none."""
    if not isinstance(record, dict):
        return None
    if "timestamp" in record:
        value, unit = record["timestamp"], 1e-3
    else:
        value = record.get("scheduled_t")
        value, unit = (record.get("t") if value is None else value), 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value) * unit
    return seconds if math.isfinite(seconds) else None


def trace_extent(path: str | Path) -> tuple[int, float]:
    """(requests, seconds from the first to the last) of a trace; reads it all, streamed."""
    count, last = 0, 0.0
    for count, last in enumerate(trace_offsets(path), 1):  # noqa: B007 - the last pair counts
        pass
    return count, last


def _in_order(times: Iterable[float], window: int, path: Any) -> Iterator[float]:
    """Times sorted through a heap of `window`; earlier than one already given is an error."""
    heap: list[float] = []
    last = -math.inf
    for t in times:
        if len(heap) < window:
            heapq.heappush(heap, t)
            continue
        t = heapq.heappushpop(heap, t)
        if t < last:
            raise UserError(f"trace {path} is out of time order by more than {window} lines")
        last = t
        yield t
    while heap:
        t = heapq.heappop(heap)
        if t < last:
            raise UserError(f"trace {path} is out of time order by more than {window} lines")
        last = t
        yield t


@dataclass(frozen=True)
class ArrivalSpec:
    """How requests arrive: at `rate` req/s by `arrival`, or replayed from `trace`."""

    rate: float | None = None
    arrival: str = "poisson"
    burstiness: float = 1.0
    seed: int = 0
    trace: str | None = None

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.trace is None):
            raise UserError("give a rate or a trace (not both)")
        if self.rate is not None:
            check_rate(self.rate, self.arrival, self.burstiness)
        elif not Path(self.trace).is_file():
            raise UserError(f"trace {self.trace!r} is not a file")

    @property
    def finite(self) -> bool:
        """A trace ends; a rate schedule goes on until the run's time is up."""
        return self.trace is not None

    def offsets(self) -> Iterator[float]:
        """The schedule's send offsets (s), identical on every call."""
        if self.trace is not None:
            return trace_offsets(self.trace)
        return rate_offsets(self.rate, self.arrival, self.burstiness, self.seed)

    def part(self, part: int, parts: int) -> Iterator[tuple[int, float]]:
        """(index, offset) of every `parts`-th arrival from `part`: processes share a schedule."""
        return itertools.islice(enumerate(self.offsets()), part, None, parts)

    def describe(self) -> str:
        if self.trace is not None:
            return f"trace {self.trace}"
        shape = f" (burstiness {self.burstiness:g})" if self.arrival == "gamma" else ""
        return f"{self.rate:g} req/s, {self.arrival}{shape}, seed {self.seed}"

    def manifest(self) -> dict[str, Any]:
        """The schedule's settings as the run's manifest records them."""
        if self.trace is not None:
            return {"trace": str(self.trace)}
        return {
            "rate": self.rate,
            "arrival": self.arrival,
            "burstiness": self.burstiness,
            "seed": self.seed,
        }


class LagStats:
    """Schedule lag (actual minus scheduled send time) in O(1) memory: count, max, percentiles.

    Values fall into buckets 1% wide from 1 us up (below 1 us, and early sends, count as 0),
    so a percentile is within 1% of the exact one.
    """

    _FLOOR_S = 1e-6
    _GROWTH = math.log1p(0.01)

    def __init__(self) -> None:
        self.count = 0
        self.max_s = 0.0
        self._buckets: dict[int, int] = {}

    def add(self, lag_s: float) -> None:
        self.count += 1
        if lag_s > self.max_s:
            self.max_s = lag_s
        bucket = -1
        if lag_s >= self._FLOOR_S:
            bucket = int(math.log(lag_s / self._FLOOR_S) / self._GROWTH)
        self._buckets[bucket] = self._buckets.get(bucket, 0) + 1

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) of the lags added, None before the first."""
        if not self.count:
            return None
        keys = sorted(self._buckets)
        cumulative = list(itertools.accumulate(self._buckets[k] for k in keys))
        bucket = keys[bisect.bisect_left(cumulative, q * self.count)]
        if bucket < 0:
            return 0.0
        return min(self.max_s, self._FLOOR_S * math.exp((bucket + 0.5) * self._GROWTH))

    def verdict(self, limit_s: float = DEFAULT_LAG_LIMIT_S) -> dict[str, Any]:
        """The figures of a schedule-lag event: behind when the p99 lag exceeds limit_s."""
        p99 = self.quantile(0.99)
        return {
            "arrivals": self.count,
            "lag_p50_s": self.quantile(0.5),
            "lag_p99_s": p99,
            "lag_max_s": self.max_s if self.count else None,
            "limit_s": limit_s,
            "behind": p99 is not None and p99 > limit_s,
        }
