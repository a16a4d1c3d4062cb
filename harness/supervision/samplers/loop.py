"""One drift-free sampling loop: tick k runs at start + k * interval, whatever earlier ticks cost.

A tick that is a whole interval late is skipped (counted in `missed`), never bunched up, so the
series keeps its spacing. Slow samplers (an HTTP scrape) run on their own thread: a hung server
delays only its own rows, never RAM.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from harness.rundir import RunDir
from harness.supervision.proctree import ProcessTree
from harness.supervision.samplers.base import Notices, Sampler, Tick

_LATENESS_KEPT = 100_000  # about 3 h at 0.1 s; enough for a faithful p99


class SamplerLoop:
    """Runs samplers every `interval` seconds in a daemon thread; `stop()` ends it."""

    def __init__(
        self,
        run_dir: RunDir,
        samplers: Sequence[Sampler],
        *,
        interval: float = 0.5,
        pid: Callable[[], int | None] | None = None,
        background: Sequence[Sampler] = (),
        notices: Notices | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.interval = interval
        self._samplers = list(samplers)
        self._pid = pid or (lambda: None)
        self._tree = ProcessTree()
        self._notices = notices or Notices()
        self._background = [_Background(s, self._write, self._notices) for s in background]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harness-sampler", daemon=True)
        self._lateness: deque[float] = deque(maxlen=_LATENESS_KEPT)
        self._cpu_seconds = 0.0
        self._started = self._stopped = 0.0
        self.ticks = 0
        self.missed = 0

    def start(self) -> SamplerLoop:
        self._started = time.monotonic()
        for worker in self._background:
            worker.start()
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop after the tick in progress, then read every sampler once more: the
        target's last figures (a run's final counters) are otherwise up to an interval old.
        Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for worker in self._background:
            worker.stop(timeout)
        if not self._stopped:
            self._stopped = time.monotonic()
            if not self._thread.is_alive() and self._thread.ident is not None:
                self._final_tick()
        if not self._thread.is_alive():
            self._tree.close()
        for sampler in [*self._samplers, *(w.sampler for w in self._background)]:
            close = getattr(sampler, "close", None)
            if close is not None:
                close()

    def stats(self) -> dict[str, Any]:
        """Ticks, missed ticks, lateness percentiles (s) and the CPU the loop's threads used."""
        late = sorted(self._lateness)
        wall = (self._stopped or time.monotonic()) - self._started
        cpu = self._cpu_seconds + sum(worker.cpu_seconds for worker in self._background)
        return {
            "interval_s": self.interval,
            "ticks": self.ticks,
            "missed": self.missed,
            "lateness_p50_s": _percentile(late, 0.50),
            "lateness_p99_s": _percentile(late, 0.99),
            "lateness_max_s": late[-1] if late else None,
            "cpu_seconds": cpu,
            "wall_seconds": wall,
            "cpu_percent_of_core": 100.0 * cpu / wall if wall > 0 else None,
        }

    def __enter__(self) -> SamplerLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        cpu_start = time.thread_time()
        start = self._started
        k = 0
        while True:
            due = start + k * self.interval
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if self._stop.is_set():
                break
            late = time.monotonic() - due
            if late >= self.interval:  # overslept (suspended, starved): skip, don't bunch up
                skipped = int(late // self.interval)
                self.missed += skipped
                k += skipped
                late -= skipped * self.interval
            self._lateness.append(late)
            self._tick(time.time())
            self.ticks += 1
            k += 1
        self._cpu_seconds = time.thread_time() - cpu_start

    def _tick(self, t: float) -> None:
        pid = self._target_pid()
        for worker in self._background:
            worker.trigger(t)  # a busy worker counts the skip itself
        self._tick_samplers(t, pid)

    def _target_pid(self) -> int | None:
        try:
            return self._pid()
        except Exception:  # a target callable must not end the loop
            return None

    def _tick_samplers(self, t: float, pid: int | None) -> None:
        tick = Tick(t=t, pid=pid, tree=self._tree)
        for sampler in self._samplers:
            self._read(sampler, tick)

    def _final_tick(self) -> None:
        t = time.time()
        self._tick_samplers(t, self._target_pid())
        for worker in self._background:
            worker.read_now(t)

    def _read(self, sampler: Sampler, tick: Tick) -> None:
        try:
            rows = sampler.read(tick)
        except Exception as exc:  # one failing source must not stop the others
            self._notices.once(f"{sampler.source}-error", f"{sampler.source} sampler: {exc!r}")
            return
        self._write(sampler.source, tick.t, rows)

    def _write(self, source: str, t: float, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.run_dir.sample(source, t=t, **row)


class _Background:
    """One slow sampler on its own thread; a tick finding the previous read running is skipped."""

    def __init__(
        self,
        sampler: Sampler,
        write: Callable[[str, float, list[dict[str, Any]]], None],
        notices: Notices,
    ) -> None:
        self.sampler = sampler
        self.skipped = 0
        self.cpu_seconds = 0.0
        self._write = write
        self._notices = notices
        self._pending: float | None = None
        self._tree = ProcessTree()  # unused by background samplers, which read no process
        self._busy = False
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"harness-sampler-{sampler.source}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def trigger(self, t: float) -> bool:
        with self._cond:
            if self._busy or self._pending is not None:
                self.skipped += 1
                return False
            self._pending = t
            self._cond.notify()
            return True

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def read_now(self, t: float) -> None:
        """One reading in the caller's thread, once this worker's own has ended."""
        if self._thread.is_alive():
            return
        self._pending = t
        self._read_pending()

    def _run(self) -> None:
        cpu_start = time.thread_time()
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    break
                self._busy = True
            self._read_pending()
        self.cpu_seconds = time.thread_time() - cpu_start

    def _read_pending(self) -> None:
        t, self._pending = self._pending, None
        assert t is not None
        try:
            rows = self.sampler.read(Tick(t=t, pid=None, tree=self._tree))
            self._write(self.sampler.source, t, rows)
        except Exception as exc:
            key = f"{self.sampler.source}-error"
            self._notices.once(key, f"{self.sampler.source} sampler: {exc!r}")
        finally:
            with self._cond:
                self._busy = False


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
