"""Injecting an OOM into the target and timing its recovery from the client's side.

Probes are plain HTTP that Locust does not count (a refused health poll is instrumentation, not
a failed request). Recovery follows docs/supervisor.md: death -> down seen -> ready (health 200) ->
first successful chat request.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.admin_faults import FaultRefused, post_fault
from harness.rundir import EventKind
from harness.supervision.supervisor import TARGET_FILE

if TYPE_CHECKING:
    from harness.locust.context import RunContext

# Straight to the loopback target, whatever http_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
POLL_S = 0.05
DOWN_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 120.0
SERVE_TIMEOUT_S = 60.0


def wait_for(check: Callable[[], bool], timeout: float) -> float | None:
    """Poll check every POLL_S until it holds; the time (unix s) it did, None after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.time()
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)  # gevent-patched under Locust: other users keep running


def answers(url: str, body: bytes | None = None, timeout: float = 2.0) -> bool:
    """Whether a GET (or a JSON POST of body) to url answers 2xx."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read()
            return 200 <= response.status < 300
    except (OSError, ValueError):  # refused, reset, timed out, or an HTTP error status
        return False


class InjectionFailed(Exception):
    """The target refused the fault (no admin token, wrong token, not our server)."""


def inject_oom(run: RunContext, host: str, token: str) -> bool:
    """Inject one simulated CUDA OOM; True when the target will die of it (--oom kill).

    The `fault_injected` event is recorded before the POST (a dying server may not answer),
    with the target's pid where the supervisor's target.json is at hand, so the supervisor
    marks that death as injected.
    """
    target = (run.run_dir.read_json(TARGET_FILE) if run.run_dir is not None else None) or {}
    run.log.event(
        EventKind.FAULT_INJECTED, fault="oom", by="OOMRecoveryUser", pid=target.get("pid")
    )
    try:
        answer = post_fault(host, token, {"fault": "oom"}, timeout_s=5.0)
    except FaultRefused as exc:
        raise InjectionFailed(str(exc)) from None
    return answer is None or answer.get("mode") == "kill"  # None: it died before answering


@dataclass(frozen=True)
class Recovery:
    """One injected OOM seen from the client: unix times, None for what never happened."""

    death_t: float
    down_t: float | None
    ready_t: float | None
    first_success_t: float | None
    requests_failed: int

    def seconds(self, t: float | None) -> float | None:
        return None if t is None else t - self.death_t

    def event_fields(self) -> dict:
        """The fields of a `recovered` event (docs/run-directory.md)."""
        return {
            "death_t": self.death_t,
            "seconds_to_ready": self.seconds(self.ready_t),
            "seconds_to_first_success": self.seconds(self.first_success_t),
            "requests_failed": self.requests_failed,
            "went_down": self.down_t is not None,
        }


def time_recovery(
    host: str, probe_body: bytes, death_t: float, dies: bool, failures: Callable[[], int]
) -> Recovery:
    """Watch the target after an OOM injected at death_t until a chat request succeeds again.

    dies: the server said it will die of the OOM (--oom kill) rather than fail requests and
    go on (--oom error). failures() counts failed requests; the difference is those lost.
    """
    base = host.rstrip("/")
    failed_before = failures()
    down_t = None
    if dies:
        down_t = wait_for(lambda: not answers(f"{base}/health/ready", timeout=0.5), DOWN_TIMEOUT_S)
    ready_t = wait_for(lambda: answers(f"{base}/health/ready"), READY_TIMEOUT_S)
    first_success_t = None
    if ready_t is not None:
        first_success_t = wait_for(
            lambda: answers(f"{base}/v1/chat/completions", probe_body, timeout=30.0),
            SERVE_TIMEOUT_S,
        )
    return Recovery(death_t, down_t, ready_t, first_success_t, failures() - failed_before)
