"""Finished requests and load-side events, on their way to the run directory.

Only the master (or a local runner) writes the run directory. Workers buffer their lines and send
them with the stats report Locust already sends every few seconds, so a distributed run ends with
one requests.jsonl and one events.jsonl, whichever machine each user ran on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from locust.env import Environment
from locust.runners import WorkerRunner

from harness.arrivals import LagStats
from harness.rundir import EVENTS, REQUESTS, RunDir

_REPORT_KEY = "harness_lines"  # our part of a worker's stats report


class RunLog:
    """Appends requests.jsonl lines and events; forwards them to the master from a worker."""

    def __init__(self, environment: Environment) -> None:
        self._run_dir: RunDir | None = None
        self._on_request: Callable[[dict[str, Any]], None] | None = None
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self.failures = 0  # failed requests seen by this process (chaos users read it)
        self.lag = LagStats()  # schedule lag of the open-loop lines written here, this test
        events = environment.events
        if isinstance(environment.runner, WorkerRunner):
            events.report_to_master.add_listener(self._on_report_to_master)
        else:
            events.worker_report.add_listener(self._on_worker_report)

    def attach(
        self, run_dir: RunDir, on_request: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """Write to run_dir from now on; on_request sees each request line (supervisor notes)."""
        self._run_dir = run_dir
        self._on_request = on_request

    def request(self, line: dict[str, Any]) -> None:
        """One finished request (a requests.jsonl line)."""
        if not line["ok"]:
            self.failures += 1
        self._add(REQUESTS, line)

    def event(self, kind: str, **fields: Any) -> None:
        """One events.jsonl record, timed now."""
        self._add(EVENTS, {"t": time.time(), "kind": kind, **fields})

    def _add(self, name: str, line: dict[str, Any]) -> None:
        if self._run_dir is None:
            self._pending.append((name, line))
        else:
            self._write(name, line)

    def _write(self, name: str, line: dict[str, Any]) -> None:
        assert self._run_dir is not None
        self._run_dir.writer(name).write(line)
        if name != REQUESTS:
            return
        if line.get("schedule_lag_s") is not None:
            self.lag.add(line["schedule_lag_s"])
        if self._on_request is not None:
            self._on_request(line)

    def _on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        data[_REPORT_KEY], self._pending = self._pending, []

    def _on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        if self._run_dir is None:
            return
        for name, line in data.get(_REPORT_KEY) or ():
            self._write(name, line)
