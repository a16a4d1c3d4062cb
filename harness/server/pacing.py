"""Sleep until a deadline on time.monotonic's clock to within the kernel's wakeup latency.

asyncio and uvloop wake their timers on a millisecond grid (epoll_wait's timeout), so a token
timeline of 12 ms gaps comes out 0-1 ms late at every token, and the p99 of single gaps grows
by up to 8% of what the server was told to do. One timerfd per event loop, armed at the
earliest deadline in nanoseconds, wakes the loop on time instead. Where timerfd is missing
(not Linux), a loop sleep does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import heapq
import itertools
import math
import os
import time

_CLOCK_MONOTONIC = 1  # time.monotonic's clock on Linux
_TFD_TIMER_ABSTIME = 1
_TFD_FLAGS = os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.timerfd_create  # noqa: B018 - only Linux has it
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class Pacer:
    """Wakes sleepers at their deadlines; bound to the event loop it was first awaited on."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties: first come, first woken
        self._armed = math.inf

    async def sleep_until(self, deadline: float) -> None:
        """Return at `deadline` (time.monotonic seconds), at once when it has passed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        if self._fd < 0:
            await asyncio.sleep(deadline - time.monotonic())
            return
        future = loop.create_future()
        heapq.heappush(self._heap, (deadline, next(self._order), future))
        if deadline < self._armed:
            self._arm(deadline)
        await future

    def close(self) -> None:
        """Release the timerfd (and any sleeper's wait: they are woken now)."""
        if self._fd >= 0:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        for _, _, future in self._heap:
            if not future.done() and not future.get_loop().is_closed():
                future.set_result(None)
        self._heap.clear()
        self._armed = math.inf
        self._loop = None

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.close()
        self._loop = loop
        fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_FLAGS) if _LIBC is not None else -1
        if fd < 0:
            return
        try:
            loop.add_reader(fd, self._fire)
        except (NotImplementedError, OSError):  # a loop without readers (Windows' proactor)
            os.close(fd)
            return
        self._fd = fd

    def _arm(self, deadline: float) -> None:
        seconds = math.floor(deadline)
        value = _Timespec(seconds, int((deadline - seconds) * 1e9))
        spec = _Itimerspec(_Timespec(0, 0), value)
        _LIBC.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None)
        self._armed = deadline

    def _fire(self) -> None:
        with contextlib.suppress(BlockingIOError):  # nothing expired since the last read
            os.read(self._fd, 8)
        now = time.monotonic()
        heap = self._heap
        while heap and heap[0][0] <= now:
            future = heapq.heappop(heap)[2]
            if not future.done():  # a cancelled sleeper leaves its entry behind
                future.set_result(None)
        self._armed = math.inf
        if heap:
            self._arm(heap[0][0])
