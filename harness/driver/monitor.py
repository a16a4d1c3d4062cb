"""Is the load generator itself the bottleneck? Event-loop lag and the loop thread's CPU.

A client whose loop is always busy, or whose timers fire late (starved of CPU by other
processes, or blocked), sends later than it should: its latencies and rates measure itself, not
the target. The monitor wakes every TICK_S; how late it wakes is the loop's lag, and the loop
thread's CPU time over wall time is how busy it was. Each WINDOW_S window is judged on its own;
a run is flagged saturated when at least SATURATED_SHARE of its windows were, or when the timers
of an open loop's arrivals fired late. Only those count: an arrival that leaves late because the
concurrency cap or the target (an outage, an OOM point's pause) held it back is behind schedule
(the summary says so), but the client was not what held it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from harness.arrivals import DEFAULT_LAG_LIMIT_S, LagStats

TICK_S = 0.02
WINDOW_S = 0.5
BUSY_LIMIT = 0.9  # share of wall time the loop thread spent on CPU
LAG_LIMIT_S = DEFAULT_LAG_LIMIT_S  # p99 lag of the loop's wake-ups within a window
SATURATED_SHARE = 0.1


@dataclass
class Window:
    """One sampling window's figures, as the `load` sample records them."""

    loop_busy: float
    loop_lag_p99_s: float | None
    loop_lag_max_s: float
    saturated: bool

    def sample(self) -> dict[str, Any]:
        return {
            "loop_busy": round(self.loop_busy, 4),
            "loop_lag_p99_s": self.loop_lag_p99_s,
            "loop_lag_max_s": round(self.loop_lag_max_s, 6),
            "client_saturated": self.saturated,
        }


class LoopMonitor:
    """Run `watch()` as a task on the loop it checks; it closes a window every window_s."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.latest: Window | None = None  # the last closed window, for the `load` samples
        self._lag = LagStats()  # the whole run
        self._window_lag = LagStats()
        self._windows = 0
        self._saturated = 0
        self._busy_sum = 0.0
        self._mark: tuple[float, float] | None = None  # (wall, loop thread CPU) at window start
        self._timers = LagStats()  # open loop: how late the wake-ups for arrivals came

    async def watch(self) -> None:
        """Tick on asyncio (Locust's gevent users tick with harness.locust.selfcheck)."""
        self.start()
        clock = time.perf_counter  # not loop.time(): uvloop's is the iteration's, in whole ms
        while True:
            start = clock()
            await asyncio.sleep(TICK_S)
            self.tick(clock() - start - TICK_S)

    def start(self) -> None:
        """The first window starts now (call on the loop's thread)."""
        self._mark = (time.monotonic(), time.thread_time())

    def tick(self, lag_s: float) -> None:
        """One wake-up, lag_s late; closes the window once it is window_s long."""
        lag = max(0.0, lag_s)
        self._lag.add(lag)
        self._window_lag.add(lag)
        if self._mark is not None and time.monotonic() - self._mark[0] >= self.window_s:
            self._close()

    def timer_lag(self, lag_s: float) -> None:
        """How late the loop woke for an open-loop arrival it slept until (its own lateness;
        an arrival already late when reached waited for something else, and is not fed)."""
        self._timers.add(lag_s)

    def _close(self) -> None:
        """End the current window (on the loop's thread: its CPU time is the loop's)."""
        assert self._mark is not None
        now, cpu = time.monotonic(), time.thread_time()
        wall = now - self._mark[0]
        busy = min(1.0, (cpu - self._mark[1]) / wall) if wall > 0 else 0.0
        self._mark = (now, cpu)
        lags, self._window_lag = self._window_lag, LagStats()
        p99 = lags.quantile(0.99)
        saturated = busy >= BUSY_LIMIT or (p99 is not None and p99 > LAG_LIMIT_S)
        self._windows += 1
        self._saturated += saturated
        self._busy_sum += busy
        self.latest = Window(busy, p99, lags.max_s, saturated)

    def verdict(self) -> dict[str, Any]:
        """The run's figures and whether the client was saturated (the `load_generator` event)."""
        if self._mark is not None and time.monotonic() - self._mark[0] >= self.window_s / 2:
            self._close()  # the last, partial window, when it is long enough to judge
        windows = self._windows
        share = self._saturated / windows if windows else 0.0
        timers = self._timers.verdict() if self._timers.count else None
        behind = bool(timers and timers["behind"])
        return {
            "windows": windows,
            "saturated_windows": self._saturated,
            "saturated_share": round(share, 4),
            "loop_busy_mean": round(self._busy_sum / windows, 4) if windows else None,
            "loop_lag_p50_s": self._lag.quantile(0.5),
            "loop_lag_p99_s": self._lag.quantile(0.99),
            "loop_lag_max_s": self._lag.max_s if self._lag.count else None,
            "timer_lag": timers,
            "busy_limit": BUSY_LIMIT,
            "lag_limit_s": LAG_LIMIT_S,
            "saturated": (windows > 0 and share >= SATURATED_SHARE) or behind,
        }
