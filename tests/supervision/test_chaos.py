"""Fault injection through target.json: what `harness chaos` does to a supervised target."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psutil
import pytest

from harness.errors import UserError
from harness.net import free_port
from harness.rundir import RunDir, write_json_atomic
from harness.supervision.chaos import inject, read_target
from harness.supervision.supervisor import TARGET_FILE, Supervisor

from .helpers import events, program, wait_for

HARNESS = [sys.executable, "-m", "harness"]


def _supervised(run_dir: RunDir, supervisors: list[Supervisor]) -> Supervisor:
    port = free_port()
    supervisor = Supervisor(
        program("health_server.py", port),
        run_dir,
        health_url=f"http://127.0.0.1:{port}/health",
        backoff_initial_s=0.1,
    )
    supervisors.append(supervisor)
    supervisor.start()
    assert supervisor.wait_ready(10)
    return supervisor


def test_chaos_cli_kills_the_current_child_and_reports_the_recovery(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    supervisor = _supervised(run_dir, supervisors)
    victim = supervisor.pid
    options = ["--fault", "kill", "--every", "0.1s", "--count", "1"]
    chaos = subprocess.run(
        [*HARNESS, "chaos", "--run-dir", str(run_dir.path), *options],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert chaos.returncode == 0, chaos.stderr
    assert f"injected kill into pid {victim} (1/1)" in chaos.stderr
    assert "chaos: recovered: up " in chaos.stderr
    injected = events(run_dir, "fault_injected")[0]
    assert (injected["fault"], injected["pid"], injected["by"]) == ("kill", victim, "chaos")
    exited = events(run_dir, "exited")[0]
    assert exited["cause"] == "oom_kill" and exited["injected"] is True
    assert exited["t"] == injected["t"]  # the death is timed from the injection
    assert supervisor.pid not in (None, victim)


def test_hang_stops_the_group_then_resumes_and_times_it(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    supervisor = _supervised(run_dir, supervisors)
    pid = supervisor.pid
    assert pid is not None
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(psutil.Process(pid).status())
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    inject(run_dir, "hang", seconds=0.3)
    done.set()
    watcher.join()
    assert psutil.STATUS_STOPPED in seen
    assert psutil.Process(pid).status() != psutil.STATUS_STOPPED and supervisor.pid == pid
    resumed = events(run_dir, "resumed")[0]
    assert resumed["fault"] == "hang" and resumed["seconds_to_health"] >= 0.3
    assert not events(run_dir, "exited")  # a hang is not a death


def test_refusals_are_user_errors(
    run_dir: RunDir, supervisors: list[Supervisor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARNESS_ADMIN_TOKEN", raising=False)
    with pytest.raises(UserError, match="no supervised target"):
        read_target(run_dir)
    supervisor = _supervised(run_dir, supervisors)
    with pytest.raises(UserError, match="admin token"):
        inject(run_dir, "oom")
    with pytest.raises(UserError, match="unknown fault"):
        inject(run_dir, "meteor")
    supervisor.stop()
    with pytest.raises(UserError, match="not running"):
        inject(run_dir, "kill")
    forged = {"state": "ready", "pid": os.getpid(), "supervisor_pid": os.getpid()}
    forged["admin_url"] = "http://203.0.113.7:8000/admin/faults"  # type: ignore[assignment]
    write_json_atomic(run_dir.path / TARGET_FILE, forged)
    with pytest.raises(UserError, match="not a loopback"):
        inject(run_dir, "error-burst", admin_token="t")
    forged["supervisor_pid"] = 2**22 + 12345  # no such process: a stale file
    write_json_atomic(run_dir.path / TARGET_FILE, forged)
    with pytest.raises(UserError, match="stale"):
        read_target(run_dir)
    assert not events(run_dir, "fault_injected")  # nothing was injected, nothing recorded


def test_chaos_kill_hits_the_largest_process_and_is_an_injected_oom_kill(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    port = free_port()
    supervisor = Supervisor(
        program("fake_vllm.py", port, "--worker-mib", 128),
        run_dir,
        health_url=f"http://127.0.0.1:{port}/health",
        backoff_initial_s=0.1,
    )
    supervisors.append(supervisor)
    supervisor.start()
    assert supervisor.wait_ready(20)
    leader = supervisor.pid
    assert leader is not None
    (engine,) = psutil.Process(leader).children()
    worker = wait_for(lambda: engine.children(), what="the worker")[0]
    wait_for(lambda: worker.memory_info().rss > 128 << 20, what="the worker's memory")
    options = ["--fault", "kill", "--every", "0.1s", "--count", "1", "--victim", "largest"]
    chaos = subprocess.run(
        [*HARNESS, "chaos", "--run-dir", str(run_dir.path), *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert chaos.returncode == 0, chaos.stderr
    assert f"injected kill into pid {worker.pid} (1/1)" in chaos.stderr
    injected = events(run_dir, "fault_injected")[0]
    assert (injected["pid"], injected["victim_pid"], injected["injected"]) == (
        leader,
        worker.pid,
        True,
    )
    exited = events(run_dir, "exited")[0]
    assert (exited["pid"], exited["returncode"], exited["cause"]) == (leader, 0, "oom_kill")
    assert exited["injected"] is True and exited["descendant_killed"] == f"pid {worker.pid}"
    assert supervisor.pid not in (None, leader)


def test_chaos_rejects_a_victim_that_is_not_leader_largest_or_a_pid(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    _supervised(run_dir, supervisors)
    chaos = subprocess.run(
        [*HARNESS, "chaos", "--run-dir", str(run_dir.path), "--fault", "kill", "--victim", "big"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert chaos.returncode != 0 and "not leader, largest or a pid" in chaos.stderr
    assert "Traceback" not in chaos.stderr
