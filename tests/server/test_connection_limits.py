"""Slow and idle clients cannot hold the server: head, body and keep-alive timeouts, and a
connection cap that closes idle connections first and sheds the rest with 503 (issue 17)."""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import sys
import threading
import time

import httpx

from .conftest import ROOT, free_port, wait_for

TIMEOUTS = ("--speed", "max", "--header-timeout", "1", "--body-timeout", "1")
TIMEOUTS += ("--timeout-keep-alive", "1")


def _closed(sock: socket.socket) -> bytes | None:
    """What the server sent before closing, or None while the connection is still open."""
    sock.setblocking(False)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except BlockingIOError:
        return None
    except OSError:
        pass
    return data or b"closed"


def test_trickled_headers_get_a_408_and_are_closed(start_server):
    server = start_server(*TIMEOUTS)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")

    def trickle() -> bytes | None:
        with contextlib.suppress(OSError):
            sock.sendall(b"X")  # a byte at a time, never ending the head
        return _closed(sock)

    answer = wait_for(trickle, 20, "the trickled head to be cut off")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request_timeout"' in answer
    sock.close()


def test_a_one_byte_per_step_body_gets_a_408(start_server):
    server = start_server(*TIMEOUTS)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-length: 1000\r\n\r\n{")

    def drip() -> bytes | None:
        with contextlib.suppress(OSError):
            sock.sendall(b" ")
        return _closed(sock)

    answer = wait_for(drip, 20, "the slow body to be cut off")
    assert answer.startswith(b"HTTP/1.1 408 ")
    sock.close()
    assert httpx.get(server.url + "/health").status_code == 200


def test_idle_connections_are_closed(start_server):
    server = start_server(*TIMEOUTS)
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
    kept = socket.create_connection(("127.0.0.1", server.port))
    kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: b"200" in kept.recv(1000), 10, "the first answer")
    for sock in [*silent, kept]:
        wait_for(lambda s=sock: _closed(s), 20, "an idle connection to be closed")
        sock.close()


def _serve_with_nofile(tmp_path, nofile: int) -> tuple[subprocess.Popen, int]:
    port = free_port()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    command = [sys.executable, "-m", "harness", "serve", "--port", str(port), "--speed", "max"]
    command += ["--data-dir", str(tmp_path / "data"), "--header-timeout", "60"]
    command += ["--body-timeout", "60"]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(command, cwd=ROOT, stderr=log, preexec_fn=limit)
    url = f"http://127.0.0.1:{port}/health"

    def up() -> bool:
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, url)
    return process, port


def test_under_a_low_nofile_limit_idle_sockets_do_not_starve_health(tmp_path):
    """ulimit -n 256: 400 idle sockets (more than fit) and /health still answers 200."""
    process, port = _serve_with_nofile(tmp_path, 256)
    socks = []
    try:
        for _ in range(400):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        assert process.poll() is None
    finally:
        for sock in socks:
            sock.close()
        process.terminate()
        process.wait(10)


def test_when_every_connection_is_busy_a_newcomer_gets_503(tmp_path):
    """Busy connections (a request mid-body) are not evicted: past the cap the answer is 503."""
    process, port = _serve_with_nofile(tmp_path, 256)
    busy = []
    try:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{"
        for _ in range(260):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head)
            busy.append(sock)
        shed = socket.create_connection(("127.0.0.1", port))
        shed.settimeout(10)
        answer = shed.recv(1000)
        shed.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b'"code":"overloaded"' in answer
    finally:
        for sock in busy:
            sock.close()
    # once the busy ones are gone, health answers again
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200,
        20,
        "health after the burst",
    )
    process.terminate()
    process.wait(10)


def test_health_answers_while_a_64_mb_header_is_sent(server):
    """One huge head is read no further than the limit, so health is not stalled meanwhile."""
    answers: list[int] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            answers.append(httpx.get(server.url + "/health", timeout=10).status_code)
            time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(64):
                    sock.sendall(b"a" * (1 << 20))
            except OSError:
                pass
            answer = sock.recv(100)
    finally:
        done.set()
        prober.join()
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answers and set(answers) == {200}
