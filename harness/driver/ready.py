"""Is the target serving? One shared poller after a failure; every sender waits on it.

After a death (connection refused/reset) or an OOM, the first sender to notice starts a single poll
of the health URL (or a probe request); the others wait on the same event instead of hammering a
server that is restarting. The poll gives up after a deadline, so a target that never returns stops
the run with a clear error instead of hanging it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from harness.rundir import EventKind

_PROBES = ("/health/ready", "/health", "/v1/models")

# probe(url, timeout_s): the status a GET of url answers, None when nothing answered in time.
# The client driver's own (http.status_probe), or httpx's (httpx_probe) for the Batch API driver.
StatusProbe = Callable[[str, float], Awaitable["int | None"]]


class TargetUnavailable(Exception):
    """The target did not become ready before the deadline."""


def httpx_probe(client: Any) -> StatusProbe:
    """A StatusProbe on an httpx.AsyncClient."""
    import httpx

    async def probe(url: str, timeout_s: float) -> int | None:
        try:
            return (await client.get(url, timeout=timeout_s)).status_code
        except httpx.TransportError:
            return None

    return probe


async def detect_health_url(probe: StatusProbe, base_url: str) -> str | None:
    """The first of /health/ready, /health, /v1/models the target routes; None if it is down."""
    for path in _PROBES:
        status = await probe(base_url.rstrip("/") + path, 5.0)
        if status is None:
            return None
        if status != 404:
            return base_url.rstrip("/") + path
    return base_url.rstrip("/") + _PROBES[-1]


class Readiness:
    """Shared up/down state of the target; `wait()` returns once it answers its health URL."""

    def __init__(
        self,
        probe: StatusProbe,
        health_url: str,
        *,
        deadline_s: float = 300.0,
        poll_initial_s: float = 0.05,
        poll_max_s: float = 0.2,
        event: Callable[..., Any] | None = None,
        on_outage: Callable[[str, float], None] | None = None,
    ) -> None:
        self._probe = probe
        self.health_url = health_url
        self.deadline_s = deadline_s
        self._poll_initial_s = poll_initial_s
        self._poll_max_s = poll_max_s
        self._event = event
        self._on_outage = on_outage
        self._up = asyncio.Event()
        self._up.set()
        self._error: TargetUnavailable | None = None
        self._poller: asyncio.Task[None] | None = None
        self.outages = 0

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    def down(self, cause: str, sent_mono: float | None = None) -> None:
        """A sender's connection failed (sent at `sent_mono`); one poller finds out if the target
        died. Senders wait meanwhile; an outage is confirmed only when the health URL fails too."""
        if not self._up.is_set():
            return
        self._up.clear()
        sent = time.monotonic() if sent_mono is None else sent_mono
        self._poller = asyncio.get_running_loop().create_task(self._poll(cause, sent))

    async def wait(self) -> None:
        """Return when the target is up; raise TargetUnavailable when it missed the deadline."""
        if not self._up.is_set():
            await self._up.wait()
        if self._error is not None:
            raise self._error

    async def check(self) -> bool:
        """Ask the health URL once (short timeout): True when it answers 200."""
        return await self._probe(self.health_url, 2.0) == 200

    async def _poll(self, cause: str, sent_mono: float) -> None:
        started = time.monotonic()
        if await self.check():
            self._up.set()  # a dropped keep-alive connection, not a death
            return
        self.outages += 1
        if self._event is not None:
            self._event(EventKind.TARGET_DOWN, cause=cause, health_url=self.health_url)
        if self._on_outage is not None:
            self._on_outage(cause, sent_mono)
        delay = self._poll_initial_s
        while not await self.check():
            if time.monotonic() - started > self.deadline_s:
                self._error = TargetUnavailable(
                    f"target not ready at {self.health_url} after {self.deadline_s:.0f} s"
                )
                break
            await asyncio.sleep(delay)
            delay = min(self._poll_max_s, delay * 1.5)
        if self._event is not None and self._error is None:
            self._event(EventKind.TARGET_READY, waited_s=round(time.monotonic() - started, 3))
        self._up.set()

    async def close(self) -> None:
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()
