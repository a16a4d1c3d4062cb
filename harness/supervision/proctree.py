"""A target's process tree and its memory, cheap enough to read ten times a second.

Finding children means reading every process's parent (about 1 ms), so the tree is rescanned at
most every `rescan_s` and whenever a member disappears. On Linux, memory is read straight from
/proc (statm kept open for RSS, smaps_rollup for PSS), a fraction of psutil's cost per call;
elsewhere psutil's memory_info / memory_full_info.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

from harness.supervision.procfs import PinnedFile, read_once

_PROC = os.path.exists("/proc/self/statm") and os.path.exists("/proc/self/stat")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if _PROC else 4096


@dataclass(frozen=True)
class TreeMemory:
    """Memory of one process tree: RSS and PSS summed (PSS None when not measured or offered)."""

    pid: int
    rss_bytes: int
    pss_bytes: int | None
    nprocs: int


class ProcessTree:
    """The live processes under one root pid; the root may change (a restarted target)."""

    def __init__(self, rescan_s: float = 1.0) -> None:
        self.rescan_s = rescan_s
        self._root: psutil.Process | None = None
        self._members: list[psutil.Process] = []
        self._statm: dict[int, PinnedFile] = {}
        self._parents = _ParentMap() if _PROC else None
        self._member_lost = False  # its children may have been reparented: read every parent
        self._scanned_at = float("-inf")

    def processes(self, root_pid: int | None) -> list[psutil.Process]:
        """The root and its descendants (empty when root_pid is None or gone)."""
        if root_pid is None:
            self._forget()
            return []
        if self._root is None or self._root.pid != root_pid:
            try:
                self._root = psutil.Process(root_pid)
            except psutil.Error:
                self._forget()
                return []
            self._members = [self._root]
            self._scanned_at = float("-inf")
        if time.monotonic() - self._scanned_at >= self.rescan_s:
            self._rescan()
        return list(self._members)

    def pids(self, root_pid: int | None) -> list[int]:
        return [process.pid for process in self.processes(root_pid)]

    def memory(self, root_pid: int | None, *, pss: bool = False) -> TreeMemory | None:
        """Summed RSS (and PSS when asked and offered) of the tree; None when the root is gone."""
        members = self.processes(root_pid)
        if not members or root_pid is None:
            return None
        rss_total = 0
        pss_total: int | None = 0 if pss else None
        counted = 0
        for process in members:
            try:
                rss = self._rss(process)
            except (OSError, psutil.Error):
                self._scanned_at = float("-inf")  # a member exited: rescan next time
                self._member_lost = True
                continue
            if rss is None:
                continue  # a zombie: exited, not yet reaped
            rss_total += rss
            counted += 1
            if pss_total is not None:
                value = _pss(process)
                pss_total = None if value is None else pss_total + value
        if counted == 0:
            return None
        return TreeMemory(pid=root_pid, rss_bytes=rss_total, pss_bytes=pss_total, nprocs=counted)

    def _rescan(self) -> None:
        assert self._root is not None
        try:
            if self._parents is not None:
                known = {process.pid: process for process in self._members}
                below = self._parents.descendants(self._root.pid, full=self._member_lost)
                self._members = [self._root] + [
                    known.get(pid) or psutil.Process(pid) for pid in below
                ]
            else:
                self._members = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            self._scanned_at = float("-inf")  # one vanished mid-scan: try again next time
            return
        except psutil.Error:
            self._forget()
            return
        self._scanned_at = time.monotonic()
        self._member_lost = False
        current = {process.pid for process in self._members}
        for pid in [pid for pid in self._statm if pid not in current]:
            self._statm.pop(pid).close()

    def _rss(self, process: psutil.Process) -> int | None:
        """Resident bytes; None for a zombie (its statm reads all zeros)."""
        if not _PROC:
            return int(process.memory_info().rss)
        statm = self._statm.get(process.pid)
        if statm is None:
            statm = self._statm[process.pid] = PinnedFile(f"/proc/{process.pid}/statm")
        try:
            size, resident = statm.read(128).split()[:2]
        except OSError:
            self._statm.pop(process.pid).close()
            raise
        return None if size == b"0" else int(resident) * _PAGE_BYTES

    def close(self) -> None:
        """Release the files kept open for the members."""
        self._forget()

    def _forget(self) -> None:
        self._root = None
        self._members = []
        for statm in self._statm.values():
            statm.close()
        self._statm.clear()
        self._scanned_at = float("-inf")


def _pss(process: psutil.Process) -> int | None:
    """PSS (shared pages split between their users); None when not offered or not permitted."""
    if _PROC:
        try:
            data = read_once(f"/proc/{process.pid}/smaps_rollup")
        except OSError:
            return None
        start = data.find(b"\nPss:")
        if start < 0:
            return None
        return int(data[start + 5 : data.index(b"kB", start)]) * 1024
    try:
        return getattr(process.memory_full_info(), "pss", None)
    except psutil.Error:
        return None


class _ParentMap:
    """pid -> parent pid for every process, from /proc/*/stat. Refreshes read only processes
    that are new since the last pass (a parent never changes, except that orphans move to init),
    so a refresh costs about one listdir; a full pass runs every `full_every_s` and on demand."""

    def __init__(self, full_every_s: float = 10.0) -> None:
        self.full_every_s = full_every_s
        self._parents: dict[int, int] = {}
        self._full_at = float("-inf")

    def descendants(self, root: int, *, full: bool = False) -> list[int]:
        """Pids below root."""
        now = time.monotonic()
        if full or now - self._full_at >= self.full_every_s:
            self._parents.clear()
            self._full_at = now
        live = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for pid in [pid for pid in self._parents if pid not in live]:
            del self._parents[pid]
        for pid in live - self._parents.keys():
            try:
                stat = read_once(f"/proc/{pid}/stat", 1024)
            except OSError:
                continue  # exited during the pass
            # the command name (field 2) may hold spaces and ')': parse after the last ')'
            self._parents[pid] = int(stat[stat.rindex(b")") + 2 :].split(b" ", 2)[1])
        children: dict[int, list[int]] = {}
        for pid, parent in self._parents.items():
            children.setdefault(parent, []).append(pid)
        found: list[int] = []
        frontier = [root]
        while frontier:
            below = children.get(frontier.pop(), [])
            found.extend(below)
            frontier.extend(below)
        return found
