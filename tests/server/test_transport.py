"""Coalesced writes: a response's head and body leave together, and nothing is lost on close."""

from __future__ import annotations

import asyncio
import socket

import orjson

from harness.server.http import CoalescingTransport

from .conftest import MODEL


class _RecordingTransport:
    """Stands in for uvloop's transport: records each write (one write = one send())."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def _one_loop_step() -> asyncio.Future:
    return asyncio.sleep(0)


def test_writes_of_one_loop_step_leave_as_one_send():
    async def scenario() -> tuple[list[bytes], list[bytes], int]:
        real = _RecordingTransport()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b'{"ok":true}')
        held = list(real.writes)
        buffered = transport.get_write_buffer_size()
        await _one_loop_step()
        transport.write(b"next")
        await _one_loop_step()
        return held, real.writes, buffered

    held, sent, buffered = asyncio.run(scenario())
    assert held == []  # nothing is sent in the middle of the step
    assert buffered == len(b"HTTP/1.1 200 OK\r\n\r\n") + len(b'{"ok":true}')
    assert sent == [b'HTTP/1.1 200 OK\r\n\r\n{"ok":true}', b"next"]


def test_close_sends_what_is_held_first_and_abort_drops_it():
    async def scenario() -> tuple[_RecordingTransport, _RecordingTransport]:
        loop = asyncio.get_running_loop()
        closing, aborting = _RecordingTransport(), _RecordingTransport()
        a, b = CoalescingTransport(closing, loop), CoalescingTransport(aborting, loop)
        a.write(b"last response")
        a.close()
        b.write(b"never sent")
        b.abort()
        await _one_loop_step()
        return closing, aborting

    closing, aborting = asyncio.run(scenario())
    assert closing.writes == [b"last response"] and closing.closed
    assert aborting.writes == [] and aborting.aborted


def test_other_transport_calls_reach_the_real_transport():
    async def scenario() -> str:
        return CoalescingTransport(
            _RecordingTransport(), asyncio.get_running_loop()
        ).get_extra_info("peername")

    assert asyncio.run(scenario()) == "info:peername"


def _raw_request(port: int, body: bytes, connection: str) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {connection}\r\n\r\n"
    ).encode() + body


def test_keep_alive_responses_then_connection_close_arrive_whole(server):
    """Three requests on one connection, the last with Connection: close: three whole replies."""
    body = orjson.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_raw_request(server.port, body, "keep-alive") * 2)
        sock.sendall(_raw_request(server.port, body, "close"))
        received = b""
        while chunk := sock.recv(65536):  # the server closes after the third response
            received += chunk
    responses = received.split(b"HTTP/1.1 ")[1:]
    assert len(responses) == 3
    for response in responses:
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.startswith(b"200 OK")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if b"content-length" in line
        )
        assert len(payload) == length
        assert orjson.loads(payload)["object"] == "chat.completion"
