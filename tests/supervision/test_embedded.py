"""The reference server under the supervisor: an OOM kill, the restart, and samples that go on."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from harness.errors import UserError
from harness.rundir import RunDir
from harness.supervision.embedded import EmbeddedServer

from .helpers import events, samples, wait_for

LOAD_TIME_S = 0.5
INTERVAL_S = 0.1
HARNESS = [sys.executable, "-m", "harness"]
CHAT = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _traffic(server: EmbeddedServer, stop: threading.Event, statuses: list[int | None]) -> None:
    """Real chat requests, each result told to the supervisor, until stopped."""
    with httpx.Client(timeout=2.0) as client:
        while not stop.is_set():
            try:
                status: int | None = client.post(
                    f"{server.url}/v1/chat/completions", json=CHAT
                ).status_code
            except httpx.HTTPError:
                status = None
            statuses.append(status)
            server.supervisor.note_request(status == 200)
            stop.wait(0.02)


def test_oom_kill_restart_and_continuous_samples(run_dir: RunDir) -> None:
    args = ["--oom", "kill", "--speed", "max", "--load-time", str(LOAD_TIME_S)]
    with EmbeddedServer(run_dir, server_args=args, sample_interval=INTERVAL_S) as server:
        first_pid = server.supervisor.pid
        stop, statuses = threading.Event(), []
        sender = threading.Thread(target=_traffic, args=(server, stop, statuses))
        sender.start()
        try:
            wait_for(lambda: statuses.count(200) >= 3, what="successful requests")
            server.inject({"fault": "oom"})
            recovered = wait_for(lambda: events(run_dir, "recovered"), 30, "recovery")[0]
            # the chaos CLI finds the same target through target.json and the token in its env
            options = [
                "--fault",
                "error-burst",
                "--rate",
                "1",
                "--seconds",
                "1s",
                "--every",
                "0.1s",
            ]
            burst = subprocess.run(
                [*HARNESS, "chaos", "--run-dir", str(run_dir.path), *options, "--count", "1"],
                env={**os.environ, "HARNESS_ADMIN_TOKEN": server.admin_token},
                capture_output=True,
                text=True,
                timeout=30,
            )
            wait_for(lambda: 500 in statuses[-5:], what="the error burst")
        finally:
            stop.set()
            sender.join()
    assert burst.returncode == 0, burst.stderr

    exited = events(run_dir, "exited")[0]
    assert (exited["pid"], exited["cause"], exited["injected"]) == (first_pid, "oom_kill", True)
    assert "CUDA out of memory" in exited["oom_line"]
    assert recovered["seconds_to_ready"] >= recovered["seconds_to_up"] + LOAD_TIME_S
    assert recovered["seconds_to_first_success"] >= recovered["seconds_to_ready"] - 0.06
    assert recovered["requests_failed"] >= 1
    assert [e["fault"] for e in events(run_dir, "fault_injected")] == ["oom", "error-burst"]

    ram = samples(run_dir, "ram")
    pids = [row["pid"] for row in ram if row["pid"] is not None]
    assert pids[0] == first_pid and pids[-1] != first_pid  # one series across the pid change
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(ram)]
    # a busy machine delays a tick or two; a hole across the restart lasts its load time at least
    assert max(gaps) < LOAD_TIME_S, "the RAM series has a hole"
    server_rows = samples(run_dir, "server")
    assert any(row["t"] < exited["t"] for row in server_rows)
    assert any(row["t"] > recovered["t"] for row in server_rows)
    assert all(row["sim_vram_total_bytes"] > 0 for row in server_rows)


def test_arguments_the_server_refuses_stop_at_once_with_its_reason(run_dir: RunDir) -> None:
    """A server that exits 2 (bad arguments) would do so at every restart: no waiting out the
    ready timeout, its own one-line error instead."""
    server = EmbeddedServer(run_dir, server_args=["--set", "no_such_field=1"], ready_timeout=120)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"refused its arguments: .*no_such_field"):
        server.start()
    assert time.monotonic() - started < 60  # a restart backoff at most, never the timeout
    assert server.supervisor.finished


def test_the_servers_last_counters_are_read_when_sampling_stops(run_dir: RunDir) -> None:
    """Sampling every 30 s, a 5-request run would record none of them: the reading taken at
    stop, while the server still runs, has every one (a run's final engine counters)."""
    server = EmbeddedServer(run_dir, server_args=["--speed", "max"], sample_interval=30.0)
    with server:
        for _ in range(5):
            assert httpx.post(f"{server.url}/v1/chat/completions", json=CHAT).status_code == 200
    last = samples(run_dir, "server")[-1]
    done = sum(v for k, v in last.items() if k.startswith("request_success_total"))
    assert done == 5
