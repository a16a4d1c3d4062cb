"""Graceful degradation: AIMD control of concurrency (and chunk size) around OOMs.

Multiplicative decrease: an OOM halves the limit (never below the minimum). Additive increase:
after a healthy stretch of successes the limit rises one step, until it is back at the maximum.
Failures of requests sent before the last decrease are echoes of the same overload and are ignored,
as TCP ignores losses from before its last window cut, so one OOM burst halves only once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness.rundir import EventKind

EventSink = Callable[..., Any]


class Degrader:
    """Current concurrency (and optional chunk size); emits `degraded` and `restored` events."""

    def __init__(
        self,
        concurrency: int,
        *,
        chunk_size: int | None = None,
        minimum: int = 1,
        min_chunk_size: int = 100,
        restore_after: int | None = None,
        restore_step: int | None = None,
        event: EventSink | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.max_concurrency = concurrency
        self.concurrency = concurrency
        self.max_chunk_size = chunk_size
        self.chunk_size = chunk_size
        self.minimum = max(1, min(minimum, concurrency))
        self.min_chunk_size = min_chunk_size
        # A healthy stretch: enough successes to have cycled the full window a few times.
        self.restore_after = restore_after or max(32, 4 * concurrency)
        self.restore_step = restore_step or max(1, concurrency // 8)
        self._event = event
        self._last_cut = float("-inf")
        self._streak = 0
        self._listeners: list[Callable[[int], None]] = []

    @property
    def degraded(self) -> bool:
        return self.concurrency < self.max_concurrency or self.chunk_size != self.max_chunk_size

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call listener(new_concurrency) whenever the limit moves."""
        self._listeners.append(listener)

    def overloaded(self, sent_at: float, cause: str) -> bool:
        """An OOM or a death hit a request sent at `sent_at` (monotonic); True if the limit fell."""
        self._streak = 0
        if sent_at < self._last_cut:
            return False
        self._last_cut = time.monotonic()
        before = (self.concurrency, self.chunk_size)
        self.concurrency = max(self.minimum, self.concurrency // 2)
        if self.chunk_size is not None:
            self.chunk_size = max(min(self.min_chunk_size, self.chunk_size), self.chunk_size // 2)
        if (self.concurrency, self.chunk_size) == before:
            return False
        self._emit(EventKind.DEGRADED, cause=cause)
        return True

    def succeeded(self) -> None:
        """One healthy result; a full stretch of them raises the limits one step."""
        if not self.degraded:
            return
        self._streak += 1
        if self._streak < self.restore_after:
            return
        self._streak = 0
        self.concurrency = min(self.max_concurrency, self.concurrency + self.restore_step)
        if self.chunk_size is not None and self.max_chunk_size is not None:
            self.chunk_size = min(self.max_chunk_size, self.chunk_size * 2)
        self._emit(EventKind.RESTORED, full=not self.degraded)

    def _emit(self, kind: str, **fields: Any) -> None:
        for listener in self._listeners:
            listener(self.concurrency)
        if self._event is None:
            return
        sizes: dict[str, Any] = {"concurrency": self.concurrency}
        if self.chunk_size is not None:
            sizes["chunk_size"] = self.chunk_size
        self._event(kind, **sizes, max_concurrency=self.max_concurrency, **fields)
