"""RAM: system used/total, the target tree's RSS and PSS, and its memory cgroup's usage/limit."""

from __future__ import annotations

import time
from typing import Any

import psutil

from harness.supervision.cgroup import MemoryCgroup, memory_cgroup
from harness.supervision.procfs import PinnedFile
from harness.supervision.samplers.base import Tick


class RamSampler:
    """One `ram` row per tick. PSS (shared pages counted once) costs a walk of the page tables,
    so it is measured at most every `pss_interval_s`; rows in between carry `pss_bytes: null`."""

    source = "ram"

    def __init__(self, pss_interval_s: float = 1.0) -> None:
        self.pss_interval_s = pss_interval_s
        self._pss_due = float("-inf")
        self._meminfo = _pin("/proc/meminfo")
        self._cgroup_pid: int | None = -1  # -1: not looked up yet
        self._cgroup: MemoryCgroup | None = None
        self._cgroup_usage: PinnedFile | None = None

    def read(self, tick: Tick) -> list[dict[str, Any]]:
        used, total = self._system_memory()
        row: dict[str, Any] = {
            "system_used_bytes": used,
            "system_total_bytes": total,
            "pid": None,  # set below only when the target was measured (not gone or a zombie)
            "rss_bytes": None,
            "pss_bytes": None,
            "nprocs": 0,
        }
        now = time.monotonic()
        want_pss = now >= self._pss_due
        tree = tick.tree.memory(tick.pid, pss=want_pss)
        if tree is not None:
            row.update(
                pid=tree.pid, rss_bytes=tree.rss_bytes, pss_bytes=tree.pss_bytes, nprocs=tree.nprocs
            )
            if want_pss:
                self._pss_due = now + self.pss_interval_s
        self._follow_cgroup(tick.pid)
        row["cgroup_usage_bytes"] = self._cgroup_usage_bytes()
        row["cgroup_limit_bytes"] = self._cgroup.limit_bytes if self._cgroup else None
        return [row]

    def close(self) -> None:
        for pinned in (self._meminfo, self._cgroup_usage):
            if pinned is not None:
                pinned.close()

    def _system_memory(self) -> tuple[int, int]:
        """(used, total) bytes; used = total - available, what cannot be reclaimed: the figure
        people mean by "used". From /proc/meminfo where it exists (a fraction of psutil's cost)."""
        if self._meminfo is not None:
            fields = {}
            for line in self._meminfo.read(512).split(b"\n")[:4]:
                name, _, value = line.partition(b":")
                if value.strip():
                    fields[name] = int(value.split()[0]) * 1024
            if b"MemTotal" in fields and b"MemAvailable" in fields:  # MemAvailable: Linux 3.14+
                return fields[b"MemTotal"] - fields[b"MemAvailable"], fields[b"MemTotal"]
        memory = psutil.virtual_memory()
        return memory.total - memory.available, memory.total

    def _follow_cgroup(self, pid: int | None) -> None:
        """Look up the target's cgroup once per pid; between restarts keep the last target's,
        and use this process's when there never was a target."""
        if (pid is None and self._cgroup_pid != -1) or pid == self._cgroup_pid:
            return
        self._cgroup_pid = pid
        self._cgroup = memory_cgroup(pid)
        if self._cgroup_usage is not None:
            self._cgroup_usage.close()
        self._cgroup_usage = _pin(str(self._cgroup.usage_path)) if self._cgroup else None

    def _cgroup_usage_bytes(self) -> int | None:
        if self._cgroup_usage is None:
            return None
        try:
            return int(self._cgroup_usage.read(64))
        except (OSError, ValueError):
            return None


def _pin(path: str) -> PinnedFile | None:
    try:
        return PinnedFile(path)
    except OSError:
        return None
