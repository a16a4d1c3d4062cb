"""Kernel files read many times a second (/proc, cgroup), kept open and re-read with pread.

Reading a /proc file regenerates its content; keeping it open skips the path lookup, which is most
of the cost. A /proc/<pid> file stays bound to its process: once it exits, reads fail instead of
describing whatever process later gets the same pid.
"""

from __future__ import annotations

import os


class PinnedFile:
    """One open kernel file; `read()` returns its current content."""

    _fd = -1  # so close() (and __del__) work when os.open below fails

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)  # OSError when absent or not permitted

    def read(self, size: int = 4096) -> bytes:
        if self._fd < 0:
            raise OSError(f"{self.path} is closed")
        return os.pread(self._fd, size, 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def read_once(path: str, size: int = 1 << 16) -> bytes:
    """One read of a kernel file without Python's buffered-IO layers."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)
