"""Is the target serving? One shared poller after a failure; every sender waits on it.

After a death (connection refused/reset) or an OOM, the first sender to notice starts a single poll
of the health URL (or a probe request); the others wait on the same event instead of hammering a
server that is restarting. The poll gives up after a deadline, so a target that never returns stops
the run with a clear error instead of hanging it.

The rules (which health URL, when an outage is confirmed, how often to poll, when to give up,
which events to write) live once, in plain generators that say what to do next; `Readiness`
runs them on asyncio for the driver, `harness.locust.readiness` on gevent for Locust's users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from harness.rundir import EventKind

HEALTH_PATHS = ("/health/ready", "/health", "/v1/models")  # the first the target routes

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
    steps = health_url_steps(base_url)
    try:
        url = next(steps)
        while True:
            url = steps.send(await probe(url, 5.0))
    except StopIteration as chosen:
        return chosen.value


def health_url_steps(base_url: str) -> Generator[str, int | None, str | None]:
    """The health URL rule: yields a URL to GET, is sent its status (None: no answer), returns
    the chosen URL (None: nothing answers)."""
    base = base_url.rstrip("/")
    for path in HEALTH_PATHS:
        status = yield base + path
        if status is None:
            return None
        if status != 404:
            return base + path
    return base + HEALTH_PATHS[-1]


CHECK = None  # a poll step: ask the health URL once (else the step is seconds to sleep)


class ReadinessRules:
    """The up/down state of the target and the poll's rules, without I/O: the runtime that
    drives `poll_steps` checks and sleeps as it is told, and wakes the senders at the end."""

    def __init__(
        self,
        health_url: str,
        *,
        deadline_s: float = 300.0,
        poll_initial_s: float = 0.05,
        poll_max_s: float = 0.2,
        event: Callable[..., Any] | None = None,
        on_outage: Callable[[str, float], None] | None = None,
    ) -> None:
        self.health_url = health_url
        self.deadline_s = deadline_s
        self._poll_initial_s = poll_initial_s
        self._poll_max_s = poll_max_s
        self._event = event
        self._on_outage = on_outage
        self.error: TargetUnavailable | None = None
        self.outages = 0

    def poll_steps(self, cause: str, sent_mono: float) -> Generator[float | None, bool, None]:
        """Yields CHECK (is sent whether the health URL answered 200) or seconds to sleep."""
        started = time.monotonic()
        if (yield CHECK):
            return  # a dropped keep-alive connection, not a death
        self.outages += 1
        if self._event is not None:
            self._event(EventKind.TARGET_DOWN, cause=cause, health_url=self.health_url)
        if self._on_outage is not None:
            self._on_outage(cause, sent_mono)
        delay = self._poll_initial_s
        while not (yield CHECK):
            if time.monotonic() - started > self.deadline_s:
                self.error = TargetUnavailable(
                    f"target not ready at {self.health_url} after {self.deadline_s:.0f} s"
                )
                return
            yield delay
            delay = min(self._poll_max_s, delay * 1.5)
        if self._event is not None:
            self._event(EventKind.TARGET_READY, waited_s=round(time.monotonic() - started, 3))


class Readiness(ReadinessRules):
    """Shared up/down state of the target on asyncio; `wait()` returns once it answers its
    health URL."""

    def __init__(self, probe: StatusProbe, health_url: str, **rules: Any) -> None:
        super().__init__(health_url, **rules)
        self._probe = probe
        self._up = asyncio.Event()
        self._up.set()
        self._poller: asyncio.Task[None] | None = None

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
        if self.error is not None:
            raise self.error

    async def check(self) -> bool:
        """Ask the health URL once (short timeout): True when it answers 200."""
        return await self._probe(self.health_url, 2.0) == 200

    async def _poll(self, cause: str, sent_mono: float) -> None:
        steps = self.poll_steps(cause, sent_mono)
        try:
            step = next(steps)
            while True:
                if step is CHECK:
                    step = steps.send(await self.check())
                else:
                    await asyncio.sleep(step)
                    step = next(steps)
        except StopIteration:
            pass
        finally:
            self._up.set()

    async def close(self) -> None:
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()
