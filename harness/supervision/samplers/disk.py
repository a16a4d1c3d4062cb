"""Disk: free and total bytes of the run directory's filesystem (a full disk ends a run)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness.supervision.samplers.base import Tick


class DiskSampler:
    source = "disk"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def read(self, tick: Tick) -> list[dict[str, Any]]:
        usage = shutil.disk_usage(self.path)
        return [{"free_bytes": usage.free, "total_bytes": usage.total, "path": self.path}]
