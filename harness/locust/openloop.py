"""Open-loop arrivals in one Locust process: requests leave at their scheduled times.

With --rate or --trace, users stop being closed-loop clients: each takes the next due arrival of
this process's share of the schedule (arrival i goes to process i mod P, so the processes
together send exactly the run's schedule), sleeps until it is due and hands the request to a
greenlet of its own, so an arrival never waits for an answer to an earlier one. Only the
concurrency cap (--max-concurrency, or DEFAULT_PROCESS_CAP, a bound on file descriptors) can
hold an arrival back; the time it waits shows as schedule lag.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.pool import Group

from harness.arrivals import ArrivalSpec

DEFAULT_PROCESS_CAP = 1024


def process_cap(max_concurrency: int | None, processes: int) -> int:
    """This process's share of the run's in-flight cap (at least 1 each)."""
    if max_concurrency is None:
        return DEFAULT_PROCESS_CAP
    return max(1, math.ceil(max_concurrency / max(1, processes)))


class OpenLoop:
    """This process's arrivals: handed out in time order, each request run in a greenlet."""

    def __init__(
        self,
        spec: ArrivalSpec,
        start_t: float,
        *,
        part: int = 0,
        parts: int = 1,
        cap: int = DEFAULT_PROCESS_CAP,
        on_drained: Callable[[int], None] | None = None,
    ) -> None:
        self.spec = spec
        self.start_t = start_t
        self.cap = cap
        self._arrivals = spec.part(part, parts)
        self._next = next(self._arrivals, None)  # a trace fills its reorder window here, not late
        self._slots = Semaphore(cap)
        self._requests = Group()
        self._unfinished = 0  # claimed, and not yet answered (or killed)
        self._exhausted = False
        self._drained = Event()
        self._on_drained = on_drained
        self.sent = 0

    def claim(self) -> float | None:
        """The unix time the next arrival is due; None once the schedule is over."""
        if self._exhausted:
            return None
        arrival, self._next = self._next, next(self._arrivals, None)
        if arrival is None:
            self._exhausted = True
            self._check_drained()
            return None
        self._unfinished += 1
        return self.start_t + arrival[1]

    def dispatch(self, due_t: float, send: Callable[..., Any], *args: Any) -> float | None:
        """Wait until due_t (claimed) and a free slot, then run send(due_t, *args) in a greenlet.
        Returns how late the wait for due_t woke (the client's own lateness), or None when the
        arrival was late already (held by the cap or the users): the process's monitor's part."""
        woke_late = None
        delay = due_t - time.time()
        if delay > 0:
            gevent.sleep(delay)
            woke_late = max(0.0, time.time() - due_t)
        self._slots.acquire()
        self.sent += 1
        self._requests.spawn(send, due_t, *args).link(self._done)
        return woke_late

    def wait_drained(self) -> None:
        """Block until the schedule is over and its last request has finished."""
        self._drained.wait()

    def stop(self) -> None:
        """Kill the requests in flight (the test stopped), as Locust kills closed-loop users."""
        self._exhausted = True
        self._on_drained = None
        self._requests.kill(block=False)

    def _done(self, _: Any) -> None:
        self._unfinished -= 1
        self._slots.release()
        self._check_drained()

    def _check_drained(self) -> None:
        if self._exhausted and self._unfinished == 0 and not self._drained.is_set():
            self._drained.set()
            if self._on_drained is not None:
                self._on_drained(self.sent)
