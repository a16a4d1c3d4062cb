"""Batched appends for the driver: the lines of a few milliseconds leave in one write per file.

A result counts as done (the driver's stats, progress, OOM points) only once its line is in
results.jsonl, so a driver killed at any instant has counted nothing it did not write: a resume
sends what was still staged again, and each custom_id still has exactly one line. A write that
fails (a full disk) writes none of its lines and stops the run; every line before it is whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from harness.driver.checkpoint import Checkpoint
from harness.rundir import JsonlWriter

_MAX_STAGED_BYTES = 4 << 20  # a step with huge answers is written at once, not held
# How long a line may wait for others: one write per interval, however the loop's steps fall
# (a process with fewer events per step would otherwise pay more writes per request).
FLUSH_INTERVAL_S = 0.005


class Journal:
    """Stages attempt records (requests.jsonl) and result lines (results.jsonl) for one write."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        attempts: JsonlWriter,
        *,
        on_done: Callable[[str, bool], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._checkpoint = checkpoint
        self._attempts = attempts
        self._on_done = on_done
        self._on_error = on_error
        self._attempt_lines: list[bytes] = []
        self._result_lines: list[bytes] = []
        self._done: list[tuple[str, bool]] = []
        self._staged_bytes = 0
        self._scheduled = False
        self.failed: BaseException | None = None

    def attempt(self, record: dict[str, Any]) -> None:
        """One attempt's requests.jsonl record."""
        line = orjson.dumps(record) + b"\n"
        self._attempt_lines.append(line)
        self._staged(len(line))

    def result(self, custom_id: str, ok: bool, line: bytes) -> None:
        """One custom_id's final results.jsonl line; it counts as done once written."""
        self._result_lines.append(line)
        self._done.append((custom_id, ok))
        self._staged(len(line))

    def _staged(self, size: int) -> None:
        self._staged_bytes += size
        if self._staged_bytes > _MAX_STAGED_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        """Write what is staged (attempts first), then count its results as done."""
        self._scheduled = False
        if self.failed is not None:
            return
        attempts, self._attempt_lines = self._attempt_lines, []
        results, self._result_lines = self._result_lines, []
        done, self._done = self._done, []
        self._staged_bytes = 0
        try:
            if attempts:
                self._attempts.write_lines(b"".join(attempts))
            if results:
                self._checkpoint.append_lines(b"".join(results))
            on_done = self._on_done
            for custom_id, ok in done:
                on_done(custom_id, ok)
        except Exception as exc:  # a full disk, or a progress hook that failed: stop the run
            self.failed = exc
            self._on_error(exc)
