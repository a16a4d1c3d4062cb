"""OOM kills at points of progress: an injector thread that fires them one at a time, each once
the target is ready again, and the reference server's admin door for a bare `--target`."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable

import httpx

from harness.admin_faults import post_fault
from harness.rundir import EventKind, RunDir
from harness.supervision.supervisor import ADMIN_TOKEN_ENV

_Request = tuple[float, int, "Callable[[], None] | None"]


class OomInjector:
    """Injects OOMs one at a time on a thread, each once the target is ready again."""

    def __init__(self, inject: Callable[[], None], run_dir: RunDir) -> None:
        self._inject = inject
        self._run_dir = run_dir
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="harness-oom-injector", daemon=True)
        self._thread.start()

    def request(self, point: float, done: int, resume: Callable[[], None] | None = None) -> None:
        """Inject at this point; then resume() the paused driver, if it was paused."""
        self._queue.put((point, done, resume))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            point, done, resume = item
            self._run_dir.event(EventKind.OOM_PLANNED, point=point, done=done)
            try:
                self._inject()
            except Exception as exc:
                self._run_dir.event(EventKind.INJECT_FAILED, point=point, error=str(exc))
            finally:
                if resume is not None:
                    resume()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10.0)


def admin_oom_injector(url: str, run_dir: RunDir) -> Callable[[], None] | None:
    """An OOM through the reference server's POST /admin/faults, when its admin token is in the
    environment; None otherwise (no way to inject into that target)."""
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        return None

    def inject() -> None:
        _wait_ready(url + "/health/ready", deadline_s=120.0)  # back from the last one
        post_fault(url, token, {"fault": "oom"})  # no answer: it died, which is the fault
        run_dir.event(EventKind.FAULT_INJECTED, fault="oom", by="scale")

    return inject


def _wait_ready(health_url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(health_url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
