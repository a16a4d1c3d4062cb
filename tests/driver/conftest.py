"""A tiny real HTTP/1.1 server for the driver tests: each path answers as a failing target would."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator

import orjson
import pytest

OOM_BODY = orjson.dumps(
    {
        "error": {
            "message": "CUDA out of memory. Tried to allocate 512.00 MiB (GPU 0; 11.00 GiB total "
            "capacity; 10.60 GiB already allocated; 0 bytes free)",
            "type": "server_error",
            "code": 500,
        }
    }
)


def completion(custom: str = "ok") -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": custom}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        }
    )


# An action: (status, headers, body) to answer, or "close", "reset" or "hang".
Action = tuple[int, dict[str, str], bytes] | str


def default_routes(path: str) -> Action:
    routes: dict[str, Action] = {
        "/oom": (500, {}, OOM_BODY),
        "/busy": (429, {"retry-after": "2"}, b'{"error": {"message": "slow down"}}'),
        "/bad": (400, {}, b'{"error": {"message": "messages: field required"}}'),
        "/unavailable": (503, {}, b"upstream gone"),
        "/close": "close",
        "/reset": "reset",
        "/hang": "hang",
    }
    return routes.get(path, (200, {}, completion()))


class TinyServer:
    """Threaded server on 127.0.0.1 answering every request with route(path, body)."""

    def __init__(self, route: Callable[[str, bytes], Action] = lambda p, b: default_routes(p)):
        self.route = route
        self.requests = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.request_queue_size = 128
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        while True:
            request_line = reader.readline()
            if not request_line:
                return
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = reader.read(length) if length else b""
            with self._lock:
                self.requests += 1
            path = request_line.split()[1].decode()
            action = self.route(path, body)
            if action == "close":
                conn.close()
                return
            if action == "reset":  # RST instead of FIN: what a killed process's socket does
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            if action == "hang":
                time.sleep(5)
                conn.close()
                return
            status, headers, payload = action
            head = [f"HTTP/1.1 {status} X", f"content-length: {len(payload)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def tiny_server() -> Iterator[TinyServer]:
    server = TinyServer()
    yield server
    server.close()


class ServerFactory:
    """Makes TinyServers for one test (all shut down after it) and holds the canned bodies."""

    OOM_BODY = OOM_BODY
    completion = staticmethod(completion)

    def __init__(self) -> None:
        self.servers: list[TinyServer] = []

    def __call__(self, route: Callable[[str, bytes], Action]) -> TinyServer:
        self.servers.append(TinyServer(route))
        return self.servers[-1]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    factory = ServerFactory()
    yield factory
    for server in factory.servers:
        server.close()
