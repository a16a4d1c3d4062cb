"""What a scale run's requests cost in CPU: the driver's processes and the target's, over the drive.

CPU seconds per request are what the code under test controls; unlike wall-clock throughput they
barely move when other work shares the machine, which is why the scale-regression gate judges
them (docs/reports.md). The driver is this process and every child it reaps (driver shards, and a
target killed and reaped during the run); the target is the supervised server's process tree,
read through psutil while it lives. A target that dies is counted from its last reading (at most
one sampling interval of its CPU is lost); its successor's start-up is counted, as it is a cost
of the run. Without a supervised target (an external --target) only the driver is measured.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

import psutil


def _rusage(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of a process, its live descendants and the children it has reaped."""
    try:
        leader = psutil.Process(pid)
        times = leader.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in leader.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.Error:
                continue
            total += child_times.user + child_times.system
        return total
    except psutil.Error:
        return None


class CpuMeter:
    """start() before the first request, sample() now and then, stop() after the last."""

    def __init__(self, target_pid: Callable[[], int | None] | None) -> None:
        self._target_pid = target_pid
        self._start: tuple[float, float] | None = None
        self._first_target: tuple[int, float] | None = None
        self._last: dict[int, float] = {}  # target pid -> its latest reading

    def start(self) -> None:
        self._start = (_rusage(resource.RUSAGE_SELF), _rusage(resource.RUSAGE_CHILDREN))
        self._last.clear()
        self._first_target = None
        reading = self._read()
        if reading is not None:
            self._first_target = reading

    def sample(self) -> None:
        self._read()

    def _read(self) -> tuple[int, float] | None:
        pid = self._target_pid() if self._target_pid is not None else None
        if pid is None:
            return None
        cpu = tree_cpu_s(pid)
        if cpu is None:
            return None
        self._last[pid] = cpu
        return pid, cpu

    def stop(self, requests: int) -> dict[str, Any]:
        """The run's `cost` block for the manifest (None figures where not measured)."""
        assert self._start is not None, "stop() before start()"
        self._read()
        own = _rusage(resource.RUSAGE_SELF) - self._start[0]
        reaped = _rusage(resource.RUSAGE_CHILDREN) - self._start[1]
        measured = self._target_pid is not None and bool(self._last)
        target = None
        if measured:
            target = sum(self._last.values())
            if self._first_target is not None:
                target -= self._first_target[1]  # its CPU before the drive is not the run's
        # a dead target's whole CPU is in `reaped` (its pre-drive part too); a live one's is not
        live = self._target_pid() if self._target_pid is not None else None
        dead = sum(cpu for pid, cpu in self._last.items() if pid != live)
        total = own + reaped + ((target or 0.0) - dead if measured else 0.0)
        return {
            "requests": requests,
            "cpu_s": total if measured else None,
            "driver_cpu_s": total - (target or 0.0) if measured else own + reaped,
            "target_cpu_s": target,
            "target_measured": measured,
        }
