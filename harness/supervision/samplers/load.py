"""Load: progress fields from the driver or scenario (users, completed, total) on the samples'
time axis, plus this process's own CPU, so a saturated load generator shows next to its latencies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil

from harness.supervision.samplers.base import Tick


class LoadSampler:
    source = "load"

    def __init__(self, extra: Callable[[], dict[str, Any]]) -> None:
        self._extra = extra
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # starts the interval the first reading covers

    def read(self, tick: Tick) -> list[dict[str, Any]]:
        row = dict(self._extra() or {})
        row.setdefault("cpu_percent", self._process.cpu_percent(None))
        return [row]
