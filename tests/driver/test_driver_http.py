"""The driver's HTTP/1.1 client against a real socket server that answers in every framing."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator

import pytest

from harness.driver import http
from harness.driver.errors import classify_exception
from harness.driver.http import HttpClient, Origin, RemoteProtocolError

# answer(request_head, body, n_on_this_connection) -> bytes to send, then keep or close
Answer = Callable[[bytes, bytes, int], tuple[bytes, bool]]


class RawServer:
    """Reads each request whole and writes the raw bytes `answer` gives; counts connections."""

    def __init__(self, answer: Answer) -> None:
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                reader = self.request.makefile("rb")
                served = 0
                while True:
                    head = b""
                    while (line := reader.readline()) not in (b"\r\n", b""):
                        head += line
                    if not head:
                        return
                    length = next(
                        int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                        if k.lower() == b"content-length"
                    )  # fmt: skip
                    body = reader.read(length)
                    outer.requests.append((head, body))
                    served += 1
                    data, keep = answer(head, body, served)
                    if data:
                        self.request.sendall(data)
                    if not keep:
                        self.request.shutdown(socket.SHUT_RDWR)
                        return

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Answer], RawServer]]:
    servers: list[RawServer] = []

    def make(answer: Answer) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _ok(body: bytes = b'{"ok":true}') -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)


def _posts(url: str, bodies: list[bytes], timeout: float = 5.0, headers=None) -> list:
    """Each body POSTed in turn by one sender; the answers, or the errors raised."""

    async def run() -> list:
        client = HttpClient(Origin(url), "/v1/chat/completions", headers=headers, timeout_s=timeout)
        sender = client.sender()
        outcomes = []
        for body in bodies:
            try:
                response = await sender.post(body)
                outcomes.append((response.status, response.content, response.headers))
            except (ConnectionError, TimeoutError) as exc:
                outcomes.append(exc)
        await client.aclose()
        return outcomes

    return asyncio.run(run())


def test_one_connection_carries_many_requests_with_their_exact_bytes(raw_server):
    server = raw_server(lambda head, body, n: (_ok(b"echo " + body), True))
    bodies = [b'{"n":%d}' % i for i in range(5)]
    answers = _posts(server.url, bodies, headers={"authorization": "Bearer k"})
    assert [content for _, content, _ in answers] == [b"echo " + b for b in bodies]
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"host: {server.url.removeprefix('http://')}".encode() in head
    assert b"authorization: Bearer k" in head and body == bodies[0]


def test_chunked_close_delimited_and_interim_answers_are_read_whole(raw_server):
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    answers = {
        1: (chunked + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", True),
        2: (b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"after interim"), True),
        3: (b"HTTP/1.1 200 OK\r\nx-request-id: r-9\r\n\r\nuntil the close", False),
    }  # fmt: skip
    server = raw_server(lambda head, body, n: answers[n])
    first, second, third = _posts(server.url, [b"1", b"2", b"3"])
    assert first[1] == b"abcde" and second[1] == b"after interim"
    assert third[1] == b"until the close" and third[2]["x-request-id"] == "r-9"


def test_a_connection_the_server_closes_is_replaced_before_the_next_request(raw_server):
    # `connection: close` after each answer: every request needs a fresh connection
    close = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    server = raw_server(lambda head, body, n: (close, False))
    assert [a[1] for a in _posts(server.url, [b"1", b"2", b"3"])] == [b"ok"] * 3
    assert server.connections == 3


def test_no_answer_cut_connections_and_garbage_are_connection_failures(raw_server):
    script = {b"1": (b"", False), b"2": (b"SSH-2.0-OpenSSH\r\n\r\n", True), b"3": (_ok(), True)}
    server = raw_server(lambda head, body, n: script[body])
    silent, garbage, fine = _posts(server.url, [b"1", b"2", b"3"])
    assert isinstance(silent, RemoteProtocolError) and "without answering" in str(silent)
    assert isinstance(garbage, RemoteProtocolError) and "not an HTTP answer" in str(garbage)
    assert classify_exception(silent).cause == classify_exception(garbage).cause == "connection"
    assert fine[0] == 200  # a fresh connection after each broken one


def test_a_late_answer_is_a_timeout_and_never_taken_for_the_next_request(raw_server):
    release = threading.Event()

    def answer(head: bytes, body: bytes, n: int) -> tuple[bytes, bool]:
        if body == b"slow":
            release.wait(5)
            return _ok(b"slow answer"), True
        return _ok(b"fast answer"), True

    server = raw_server(answer)
    slow, fast = _posts(server.url, [b"slow", b"fast"], timeout=0.2)
    release.set()
    assert isinstance(slow, TimeoutError) and classify_exception(slow).cause == "timeout"
    assert fast[1] == b"fast answer" and server.connections == 2


def test_an_endless_answer_is_cut_at_the_limit(raw_server, monkeypatch):
    monkeypatch.setattr(http, "MAX_BODY_BYTES", 1000)
    server = raw_server(lambda head, body, n: (_ok(b"x" * 5000), True))
    [outcome] = _posts(server.url, [b"1"])
    assert isinstance(outcome, RemoteProtocolError) and "over" in str(outcome)


def test_a_refused_connection_is_a_connect_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    [outcome] = _posts(f"http://127.0.0.1:{port}", [b"1"])
    assert isinstance(outcome, http.ConnectError)
    assert classify_exception(outcome).message.startswith("ConnectError: 127.0.0.1:")
