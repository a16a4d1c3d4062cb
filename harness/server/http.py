"""uvicorn's httptools protocol with writes coalesced per event-loop step, and connection limits.

uvicorn writes a response's head and its body with two `transport.write` calls, so each small
response costs two send() syscalls; on loopback that was a quarter of the server's CPU at zero
latency. Writes made in one step of the loop leave in one send() at the end of that step.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from harness.server.config import ConnectionLimits
from harness.server.protocol import ApiError


class CoalescingTransport:
    """A transport proxy that holds writes until the current loop step ends, then sends them."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Send what is held (nothing once the connection is closing: it has gone)."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose responses go out through a CoalescingTransport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]


def connection_cap(limits: ConnectionLimits, reserve: int = 64) -> int:
    """max_connections, lowered to what RLIMIT_NOFILE leaves after `reserve` other descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return max(1, min(limits.max_connections, soft - reserve))


def _error_bytes(status: int, message: str, code: str) -> bytes:
    body = orjson.dumps(ApiError(status, message, code=code).body())
    return b"".join(
        (
            STATUS_LINE[status],
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        )
    )


class LimitedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """The coalescing protocol with the limits httptools and uvicorn lack.

    httptools has no header limit (a 256 MB header was buffered, quadratically), and uvicorn
    closes idle connections only after a response. Here a head must arrive within
    max_header_bytes, max_headers and header_timeout_s (else 431 / 408), a body must keep
    arriving (else 408), and past max_connections an idle connection is closed to make room,
    or the newcomer is answered 503, before file descriptors run out.
    """

    limits = ConnectionLimits()
    cap = limits.max_connections

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle = _idle_of(self.server_state)
        self._head_open = True  # waiting for (the rest of) a request head
        self._head_bytes = 0
        self._body_bytes = 0
        self._body_started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._completed = 0  # requests whose whole message has arrived
        self._shed = False
        self._rejected = False

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        idle = self._idle
        if len(self.connections) >= self.cap:
            victim = next(iter(idle), None)
            if victim is None:  # every connection is busy: shed the newcomer
                self._shed = True
                transport.write(  # type: ignore[attr-defined]
                    _error_bytes(503, "The server is at its connection limit; retry.", "overloaded")
                )
                transport.close()
                return
            victim._close_idle()
        super().connection_made(transport)
        idle[self] = None
        self._arm(self.limits.header_timeout_s, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._shed:
            return
        self._idle.pop(self, None)
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:  # lingering after a 431: drop what is still coming
            return
        if self._head_open:
            if self._head_bytes == 0:
                self._idle.pop(self, None)
            while self._head_open and len(data) > self.limits.max_header_bytes - self._head_bytes:
                room = self.limits.max_header_bytes - self._head_bytes
                completed = self._completed
                super().data_received(data[:room])
                data = data[room:]
                if self._rejected:
                    return
                if self._head_open and self._completed == completed:  # still in the same head
                    self._reject_head()
                    return
            self._head_bytes += len(data)
        super().data_received(data)
        # Timers only for what did not arrive whole: most requests come in one read.
        if self._timer is None and not self._rejected and not self.transport.is_closing():
            if self._head_open:
                if self._head_bytes:
                    self._arm(self.limits.header_timeout_s, self._head_timeout)
            elif self.cycle is not None and self.cycle.more_body:
                self._arm(self.limits.body_timeout_s, self._body_timeout)

    # -- parser callbacks ------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self._timer is not None:
            self._disarm()
        if len(self.headers) > self.limits.max_headers:
            self._reject_head()
            return
        self._body_bytes = 0
        self._body_started = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._rejected:
            return
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        self._completed += 1
        if self._timer is not None:
            self._disarm()
        self._head_open = True
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline and self._head_open:
            self._idle[self] = None

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        if not self._head_open or self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy:
            return
        if self._head_bytes:
            message = f"The request head did not arrive within {self.limits.header_timeout_s:g} s."
            self.transport.write(_error_bytes(408, message, "request_timeout"))
        self.transport.close()

    def _body_timeout(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        allowed = self.limits.body_timeout_s + self._body_bytes / self.limits.min_body_rate
        left = self._body_started + allowed - self.loop.time()
        if left > 0:
            self._arm(left, self._body_timeout)
            return
        if not cycle.response_started:
            message = (
                f"The request body arrived too slowly ({self._body_bytes} bytes in "
                f"{allowed:.0f} s); send it at {self.limits.min_body_rate} bytes/s or more."
            )
            self.transport.write(_error_bytes(408, message, "request_timeout"))
        cycle.keep_alive = False
        self.transport.close()

    # -- rejection -------------------------------------------------------------------------

    def _reject_head(self) -> None:
        """431, then read and drop the rest for linger_s so the client can read the answer."""
        self._rejected = True
        self._head_open = False
        self._disarm()
        self._idle.pop(self, None)
        limits = self.limits
        message = (
            f"Request header fields too large: the limits are {limits.max_header_bytes} bytes "
            f"and {limits.max_headers} header fields."
        )
        self.transport.write(_error_bytes(431, message, "request_header_fields_too_large"))
        self.transport.write_eof()
        self._timer = self.loop.call_later(limits.linger_s, self.transport.close)

    def _close_idle(self) -> None:
        self._idle.pop(self, None)
        if not self.transport.is_closing():
            self.transport.close()


def limited_protocol(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to these limits."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"limits": limits, "cap": connection_cap(limits)},
    )


def _idle_of(server_state: Any) -> dict[LimitedHttpToolsProtocol, None]:
    """Connections waiting for a request, oldest first (shared by one server's connections)."""
    idle = getattr(server_state, "harness_idle", None)
    if idle is None:
        idle = server_state.harness_idle = {}
    return idle
