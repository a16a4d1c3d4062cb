"""The scale driver's readiness rules for Locust's users, on gevent.

After a connection is refused or cut (or vLLM's engine dies), one greenlet of this process polls
the target's health URL, exactly as `harness scale`'s driver does (harness/driver/ready.py: the
same health URL rule, the same confirmation, poll intervals, deadline and events); closed-loop
users wait for it instead of each backing off on its own, so a restarting server is not
hammered and the first request after the restart leaves as soon as the target is ready.
Open-loop arrivals are not held: their schedule is the measurement.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import httpx
from gevent.event import Event

from harness.driver.ready import CHECK, ReadinessRules, health_url_steps


def detect_health_url(base_url: str) -> str | None:
    """The driver's rule (the first of /health/ready, /health, /v1/models that is routed)."""
    steps = health_url_steps(base_url)
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        try:
            url = next(steps)
            while True:
                url = steps.send(_status(client, url))
        except StopIteration as chosen:
            return chosen.value


class GeventReadiness(ReadinessRules):
    """Shared up/down state of the target in one Locust process."""

    def __init__(self, health_url: str, **rules: Any) -> None:
        super().__init__(health_url, **rules)
        self._up = Event()
        self._up.set()
        self._poller: gevent.Greenlet | None = None
        self._client = httpx.Client(timeout=2.0, trust_env=False)

    def down(self, cause: str) -> None:
        """A user's connection failed: one greenlet finds out whether the target died."""
        if not self._up.is_set():
            return
        self._up.clear()
        self._poller = gevent.spawn(self._poll, cause, time.monotonic())

    def wait(self) -> None:
        """Return when the target is up; raise TargetUnavailable past the deadline."""
        self._up.wait()
        if self.error is not None:
            raise self.error

    def _poll(self, cause: str, sent_mono: float) -> None:
        steps = self.poll_steps(cause, sent_mono)
        try:
            step = next(steps)
            while True:
                if step is CHECK:
                    step = steps.send(_status(self._client, self.health_url) == 200)
                else:
                    gevent.sleep(step)
                    step = next(steps)
        except StopIteration:
            pass
        finally:
            self._up.set()

    def close(self) -> None:
        if self._poller is not None:
            self._poller.kill(block=False)
        self._up.set()
        self._client.close()


def _status(client: httpx.Client, url: str) -> int | None:
    try:
        return client.get(url).status_code
    except httpx.TransportError:
        return None
