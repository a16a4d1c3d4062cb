"""A lean HTTP/1.1 keep-alive client for the driver's hot path: one connection per sender.

Profiled at concurrency 64 against the zero-latency reference server, httpx spent ~2.7 ms of
CPU per POST (URL merging, anyio cancel scopes, h11 events, a pool scan); this client spends
~30 us. A request is a head built once, joined to the already-encoded body and written with one
send(); the answer is parsed as it arrives by httptools (llhttp, the parser uvicorn serves with),
its body handed chunk by chunk to the `Response`, so a streaming reader can time every chunk.
Deadlines are checked by one sweep, not a timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httptools

MAX_BODY_BYTES = 64 << 20  # an answer larger than this is a broken server, not a result
CONNECT_TIMEOUT_S = 10.0


class ConnectError(ConnectionError):
    """No connection could be opened (refused, unreachable, or the connect timed out)."""


class RemoteProtocolError(ConnectionError):
    """The server closed the connection without a whole answer, or sent what is not HTTP."""


class ReadTimeout(TimeoutError):
    """No whole answer before the request's deadline."""


class Response:
    """One answer: status, headers (lower-case names), body. A streaming reader subclasses it
    and overrides `feed`, which sees each body chunk as it arrives."""

    __slots__ = ("_chunks", "_header_list", "_headers", "size", "status")

    def __init__(self) -> None:
        self.status = 0
        self.size = 0
        self._chunks: list[bytes] = []
        self._header_list: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] | None = None

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    @property
    def content(self) -> bytes:
        chunks = self._chunks
        if len(chunks) != 1:
            chunks[:] = [b"".join(chunks)]
        return chunks[0]

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in self._header_list
            }
        return self._headers


class Origin:
    """Where requests go: scheme, host, port and the TLS context of an https origin."""

    def __init__(self, url: str, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None
        default = 443 if self.tls else 80
        bracketed = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = bracketed if self.port == default else f"{bracketed}:{self.port}"


class HttpClient:
    """POSTs to one origin, each sender on its own keep-alive connection; deadlines swept."""

    def __init__(
        self,
        origin: Origin,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 300.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.origin = origin
        lines = [f"POST {path} HTTP/1.1", f"host: {origin.authority}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._open: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def sender(self) -> Sender:
        """A sender for one task: sends one request at a time on its own connection."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return Sender(self)

    def encode(self, body: bytes) -> bytes:
        """The whole request: head, content-length and body, for one send()."""
        return b"%b%d\r\n\r\n%b" % (self._head, len(body), body)

    async def connect(self) -> _Connection:
        connection = await _connect(self.origin, self.connect_timeout_s)
        self._open.add(connection)
        connection.on_close = self._open.discard
        return connection

    async def _sweep(self) -> None:
        """Fail every request past its deadline, checked a few times per timeout."""
        loop = asyncio.get_running_loop()
        interval = min(1.0, max(0.01, self.timeout_s / 20))
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for connection in [c for c in self._open if c.deadline < now]:
                connection.expire(self.timeout_s)

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for connection in list(self._open):
            connection.close()


def status_probe(
    headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None
) -> Callable[[str, float], Awaitable[int | None]]:
    """probe(url, timeout_s): the status a GET of url answers, or None when nothing answered
    in time (the readiness poller's view of the target, on a connection of its own)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())

    async def probe(url: str, timeout_s: float) -> int | None:
        origin = Origin(url, tls)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"GET {target} HTTP/1.1\r\nhost: {origin.authority}\r\n{extra}\r\n"
        connection = None
        try:
            connection = await _connect(origin, timeout_s)
            waiter = connection.request(head.encode("latin-1"), Response(), timeout_s)
            return (await asyncio.wait_for(waiter, timeout_s)).status
        except (ConnectionError, TimeoutError, asyncio.TimeoutError):
            return None
        finally:
            if connection is not None:
                connection.close()

    return probe


async def _connect(origin: Origin, timeout_s: float) -> _Connection:
    loop = asyncio.get_running_loop()
    try:
        _, connection = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Connection(loop),
                origin.host,
                origin.port,
                ssl=origin.tls,
                server_hostname=origin.host if origin.tls else None,
            ),
            timeout_s,
        )
    except (OSError, asyncio.TimeoutError) as exc:
        # refused, unreachable, every address of a name failed (a plain OSError), timed out
        what = str(exc) or f"no connection within {timeout_s:g} s"
        raise ConnectError(f"{origin.authority}: {what}") from None
    return connection


class Sender:
    """One task's connection to the origin, opened on first use and again after it closed."""

    __slots__ = ("_client", "_connection")

    def __init__(self, client: HttpClient) -> None:
        self._client = client
        self._connection: _Connection | None = None

    async def post(self, body: bytes, response: Response | None = None) -> Response:
        """POST the encoded body; the whole answer, or ConnectionError / TimeoutError."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = self._connection = await self._client.connect()
        client = self._client
        try:
            return await connection.request(
                client.encode(body), response or Response(), client.timeout_s
            )
        except asyncio.CancelledError:
            connection.abort()  # its answer, if any, must not be taken for the next request's
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it (no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._framed = False  # the answer has a content-length or is chunked
        self._headers_done = False
        self.closed = False
        self.deadline = math.inf
        self.on_close = None

    def request(
        self, data: bytes, response: Response, timeout_s: float
    ) -> asyncio.Future[Response]:
        waiter = self._waiter = self._loop.create_future()
        self._response = response
        self._framed = self._headers_done = False
        self.deadline = self._loop.time() + timeout_s
        assert self._transport is not None
        self._transport.write(data)
        return waiter

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._response is None:
            self._fail(RemoteProtocolError("the server sent data nobody asked for"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback of ours raised, wrapped by httptools
            if not isinstance(cause, RemoteProtocolError):
                cause = RemoteProtocolError(f"not an HTTP answer: {exc}")
            self._fail(cause)

    def eof_received(self) -> bool:
        return False  # close our side too: a half-closed connection is no use to a sender

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline = math.inf
        if self.on_close is not None:
            self.on_close(self)
        if self._waiter is None or self._waiter.done():
            return
        response = self._response
        if exc is None and self._headers_done and not self._framed and response is not None:
            self._complete(response)  # an answer delimited by the close itself
        elif isinstance(exc, ConnectionError):
            self._fail(exc)
        elif exc is not None:
            self._fail(RemoteProtocolError(f"{type(exc).__name__}: {exc}"))
        else:
            self._fail(RemoteProtocolError("the server closed the connection without answering"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response._header_list.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value):
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self._response is not None
        self._headers_done = True
        self._response.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        response = self._response
        assert response is not None
        response.size += len(body)
        if response.size > MAX_BODY_BYTES:
            raise RemoteProtocolError(f"an answer over {MAX_BODY_BYTES:,} bytes")
        response.feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        assert response is not None
        if 100 <= response.status < 200:  # an interim answer: the real one follows
            self._response = type(response)()
            return
        keep_alive = self._parser.should_keep_alive()
        self._complete(response)
        if not keep_alive:
            self.close()

    # internals

    def _complete(self, response: Response) -> None:
        waiter, self._waiter, self._response = self._waiter, None, None
        self.deadline = math.inf
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter, self._response = self._waiter, None, None
        self.deadline = math.inf
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def expire(self, timeout_s: float) -> None:
        self._fail(ReadTimeout(f"no whole answer within {timeout_s:g} s"))

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
