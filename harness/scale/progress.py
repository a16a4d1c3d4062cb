"""Where a scale run stands: results counted, a `progress` event each 5%, and the OOM points
fired as progress passes them."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.cost import CpuMeter
from harness.rundir import EventKind, RunDir
from harness.scale.console import Console, duration
from harness.scale.oom import OomInjector
from harness.scale.target import TargetHandle


class Progress:
    """Counts results; a bar on a terminal, a line per 5% in logs; fires the OOM points.

    Position = results checkpointed + completions a server reported for batches not yet collected.
    """

    def __init__(self, total: int, done: int, run_dir: RunDir, console: Console) -> None:
        self.total = total
        self.done = self.start_done = done
        self.server_side = 0
        self.meter: CpuMeter | None = None  # the run's CPU, read with each `load` sample
        self.driver_peak_rss = 0  # sampled each interval: this run's own peak, even in a ladder
        self._run_dir = run_dir
        self._console = console
        self._started = time.monotonic()
        self._next_step = done * 20 // total + 1
        self._ooms: list[float] = []
        self._injector: OomInjector | None = None
        # the client driver's pause(): nothing new is sent until an OOM point's kill is in
        self.pause: Callable[[], Callable[[], None]] | None = None
        # driver processes: progress at the journal's pace near an OOM point (on), else coarser
        self.precise: Callable[[bool], None] | None = None
        self._precise = False
        self._bar = console.live_bar("scale", total, done)

    @property
    def position(self) -> int:
        return self.done + self.server_side

    def plan_ooms(self, points: tuple[float, ...], target: TargetHandle) -> None:
        """Inject an OOM as progress passes each point not yet passed (a resume skips old ones)."""
        self._ooms = sorted(p for p in points if p * self.total > self.done)
        if self._ooms and target.inject is not None:
            self._injector = OomInjector(target.inject, self._run_dir)

    def result(self, custom_id: str, ok: bool) -> None:
        self.done += 1
        self._moved()

    def advance(self, count: int) -> None:
        """Results written by driver processes, as they report them."""
        self.done += count
        self._moved()

    def running(self, completed: int) -> None:
        """Batch API: completions the server reported in batches still being processed."""
        self.server_side = completed
        self._moved()

    def _moved(self) -> None:
        position = self.position
        self._bar(position)
        while self._ooms and position >= self._ooms[0] * self.total:
            point = self._ooms.pop(0)
            if self._injector is not None:
                resume = self.pause() if self.pause is not None else None
                self._injector.request(point, position, resume)
        if self.precise is not None:
            near = bool(self._ooms) and self._ooms[0] * self.total - position <= self._margin()
            if near != self._precise:
                self._precise = near
                self.precise(near)
        if position * 20 >= self._next_step * self.total:
            self._next_step = position * 20 // self.total + 1
            self._run_dir.event(EventKind.PROGRESS, done=position, total=self.total)
            if not self._console.interactive:
                self._console.say(self._line(position))

    def _rate(self, position: int) -> float:
        """Results per second of this session so far."""
        elapsed = time.monotonic() - self._started
        return (position - self.start_done) / elapsed if elapsed > 0 else 0.0

    def _margin(self) -> float:
        """Results that may come in a quarter second (at least 1% of the run): how near an OOM
        point progress must be reported at once."""
        return max(0.01 * self.total, 0.25 * self._rate(self.position))

    def _line(self, position: int) -> str:
        rate = self._rate(position)
        eta = (self.total - position) / rate if rate > 0 else float("inf")
        return (
            f"{100 * position / self.total:3.0f}% {position:,}/{self.total:,} "
            f"{rate:,.0f} req/s ETA {duration(eta)}"
        )

    def close(self) -> None:
        self._bar(None)
        if self._injector is not None:
            self._injector.close()
