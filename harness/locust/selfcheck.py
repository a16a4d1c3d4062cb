"""Is this Locust process the bottleneck? The scale driver's loop monitor, ticked on gevent.

Each process that sends load (a worker, or a local runner) watches its own gevent hub: how late
a greenlet wakes, how busy the process's thread is, how far behind schedule its open-loop
arrivals leave (harness/driver/monitor.py defines the figures and the verdict). At the end of a
test it writes its verdict as a `load_generator` event (a worker's reaches the master with its
last report), which the report flags at the top of the page when any process was saturated.
"""

from __future__ import annotations

import os
import time

import gevent

from harness.driver.monitor import TICK_S, LoopMonitor
from harness.locust.records import RunLog
from harness.rundir import EventKind


class SelfCheck:
    """A LoopMonitor ticked by a greenlet for the length of one test."""

    def __init__(self) -> None:
        self.monitor = LoopMonitor()
        self._ticker = gevent.spawn(self._tick)

    def _tick(self) -> None:
        self.monitor.start()
        clock = time.perf_counter
        while True:
            start = clock()
            gevent.sleep(TICK_S)
            self.monitor.tick(clock() - start - TICK_S)

    def finish(self, log: RunLog) -> None:
        """Stop ticking and record the verdict."""
        self._ticker.kill(block=False)
        log.event(EventKind.LOAD_GENERATOR, pid=os.getpid(), **self.monitor.verdict())
