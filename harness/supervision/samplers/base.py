"""What every sampler shares: the tick it reads at, and the one-line notices it prints."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.supervision.proctree import ProcessTree


@dataclass
class Tick:
    """One sampling instant: wall time, the target's current root pid and its tree."""

    t: float
    pid: int | None
    tree: ProcessTree
    _pids: list[int] | None = field(default=None, repr=False)

    @property
    def pids(self) -> list[int]:
        """The target tree's pids (read once per tick, shared by the samplers)."""
        if self._pids is None:
            self._pids = self.tree.pids(self.pid)
        return self._pids


class Sampler(Protocol):
    """Reads one source; each returned dict is one row of samples.jsonl (without t and source)."""

    source: str

    def read(self, tick: Tick) -> list[dict[str, Any]]: ...


class Notices:
    """Prints each distinct notice once ("harness: metrics: ... unreachable"), never spams."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def once(self, key: str, message: str) -> None:
        if key not in self._seen:
            self._seen.add(key)
            print(f"harness: {message}", file=sys.stderr, flush=True)
