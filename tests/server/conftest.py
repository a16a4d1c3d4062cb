"""Real `harness serve` processes on 127.0.0.1 for the server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"
MODEL = "llama3.1:8b"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll until predicate() is truthy; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Server:
    """One `python -m harness serve` subprocess; its stderr goes to a log file."""

    def __init__(self, data_dir: Path, args: tuple[str, ...], ready: bool = True) -> None:
        self.data_dir = data_dir
        self.args = args
        self.log_path = data_dir.parent / f"{data_dir.name}-{time.monotonic_ns()}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start(ready)

    def start(self, ready: bool = True) -> None:
        command = [sys.executable, "-m", "harness", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), *self.args]
        env = {**os.environ, "HARNESS_ADMIN_TOKEN": ADMIN_TOKEN}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stderr=log, env=env)
        wait_for(self._alive, 30, f"{self.url}/health")
        if ready:
            wait_for(self.is_ready, 30, f"{self.url}/health/ready")

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"server exited {self.process.returncode}: {self.stderr()}")
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def is_ready(self) -> bool:
        try:
            return httpx.get(self.url + "/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, fault: dict, token: str = ADMIN_TOKEN) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"}
        return httpx.post(self.url + "/admin/faults", json=fault, headers=headers, timeout=10)

    def metric(self, name: str) -> float:
        """The value of one unlabelled-by-extra-labels sample of /metrics."""
        for line in httpx.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in /metrics")

    def kill9(self) -> int:
        os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: start_server(*args, data_dir=None, ready=True) -> Server, stopped after the test."""
    servers: list[Server] = []

    def start(*args: str, data_dir: Path | None = None, ready: bool = True) -> Server:
        server = Server(data_dir or tmp_path / f"data{len(servers)}", args, ready)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A zero-latency server shared by a module's tests."""
    shared = Server(tmp_path_factory.mktemp("shared") / "data", ("--speed", "max"))
    yield shared
    shared.stop()


@pytest.fixture(scope="module")
def paced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with simulated delays (10x faster than real time), for streaming timing."""
    shared = Server(tmp_path_factory.mktemp("paced") / "data", ("--speed", "10"))
    yield shared
    shared.stop()
