"""Death is death: a supervised server that loses its worker (vLLM's structure) is an OOM kill,
restarted and timed, even though its leader exits 0."""

from __future__ import annotations

import os
import signal

import httpx
import psutil
import pytest

from harness.errors import UserError
from harness.net import free_port
from harness.rundir import RunDir
from harness.supervision import parse_victim, pick_victim
from harness.supervision.supervisor import Supervisor

from .helpers import events, program, wait_for
from .test_supervisor import _Traffic


def _fake_vllm(
    run_dir: RunDir, supervisors: list[Supervisor], *args: object
) -> tuple[Supervisor, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    supervisor = Supervisor(
        program("fake_vllm.py", port, *args),
        run_dir,
        health_url=f"{url}/health",
        backoff_initial_s=0.1,
    )
    supervisors.append(supervisor)
    supervisor.start()
    assert supervisor.wait_ready(20)
    return supervisor, url


def test_worker_sigkill_is_an_oom_kill_restarted_and_timed_to_first_success(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    supervisor, url = _fake_vllm(run_dir, supervisors)
    leader = supervisor.pid
    wait_for(lambda: len(supervisor.pids()) == 3, what="3 processes")
    worker = _worker(leader)
    traffic = _Traffic(supervisor, url)
    wait_for(lambda: traffic.sent >= 3, what="traffic")
    os.kill(worker, signal.SIGKILL)  # what the kernel OOM killer does to vLLM's largest process
    recovered = wait_for(lambda: events(run_dir, "recovered"), timeout=20, what="recovered")[0]
    traffic.stop()

    exited = events(run_dir, "exited")[0]
    assert exited["pid"] == leader and exited["returncode"] == 0
    assert exited["cause"] == "oom_kill" and exited["injected"] is False
    assert "EngineDeadError" in exited["engine_death_line"]
    assert supervisor.restarts == 1 and supervisor.pid not in (None, leader)
    assert recovered["cause"] == "oom_kill" and recovered["pid"] == supervisor.pid
    assert recovered["seconds_to_first_success"] >= recovered["seconds_to_ready"] > 0
    assert recovered["requests_failed"] >= 1  # the 500s and refusals while it was down


def test_errors_answered_while_the_leader_is_dying_count_as_failed_in_between(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    supervisor, url = _fake_vllm(run_dir, supervisors, "--dying-s", 3)
    leader = supervisor.pid
    wait_for(lambda: len(supervisor.pids()) == 3, what="3 processes")
    worker = _worker(leader)
    wait_for(lambda: psutil.Process(worker).memory_info().rss > 64 << 20, what="worker memory")
    assert supervisor.inject_oom_kill() == worker  # the death is timed from the kill
    wait_for(lambda: _status(f"{url}/health") == 500, what="the dead engine's 500s")
    for _ in range(3):  # requests that got those 500s, before the death is recorded
        assert not events(run_dir, "exited")
        supervisor.note_request(False)
    wait_for(lambda: supervisor.pid not in (None, leader), timeout=20, what="the restart")
    assert supervisor.wait_ready(20)
    supervisor.note_request(True)
    recovered = wait_for(lambda: events(run_dir, "recovered"), what="recovered")[0]
    assert recovered["requests_failed"] == 3


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=0.5).status_code
    except httpx.HTTPError:
        return None


def test_a_supervised_server_exiting_0_unasked_is_restarted(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    port = free_port()
    supervisor = Supervisor(
        program("exit_with.py", 0),
        run_dir,
        health_url=f"http://127.0.0.1:{port}/health",
        backoff_initial_s=0.05,
        max_restarts=1,
    )
    supervisors.append(supervisor)
    supervisor.start()
    assert supervisor.wait(10)
    exits = events(run_dir, "exited")
    assert len(exits) == 2 and {e["cause"] for e in exits} == {"crash"}
    assert events(run_dir, "gave_up")


def _worker(leader: int) -> int:
    """The grandchild: the API server's engine's worker."""
    (engine,) = psutil.Process(leader).children()
    return wait_for(lambda: engine.children(), what="the worker")[0].pid


def _oom_score(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score") as handle:
        return int(handle.read())


def test_largest_victim_is_the_max_oom_score_of_a_3_process_tree_10_of_10(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    supervisor, _ = _fake_vllm(run_dir, supervisors, "--worker-mib", 256, "--engine-mib", 96)
    tree = wait_for(lambda: len(supervisor.pids()) == 3 and supervisor.pids(), what="3 processes")
    leader = tree[0]
    worker = _worker(leader)
    wait_for(lambda: psutil.Process(worker).memory_info().rss > 256 << 20, what="worker memory")
    picks = []
    for _ in range(10):
        scores = {pid: _oom_score(pid) for pid in tree}
        pick = pick_victim(leader, "largest")
        assert scores[pick] == max(scores.values())
        picks.append(pick)
    assert picks == [worker] * 10  # the worker holds the most memory, as vLLM's does
    assert pick_victim(leader, "leader") == leader
    assert pick_victim(leader, worker) == worker
    with pytest.raises(UserError, match="not in the target's process tree"):
        pick_victim(leader, os.getpid())
    with pytest.raises(UserError, match="not leader, largest or a pid"):
        parse_victim("biggest")


def test_inject_oom_kill_kills_the_largest_and_is_an_injected_oom_kill(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    supervisor, url = _fake_vllm(run_dir, supervisors)
    tree = wait_for(lambda: len(supervisor.pids()) == 3 and supervisor.pids(), what="3 processes")
    worker = _worker(tree[0])
    wait_for(lambda: psutil.Process(worker).memory_info().rss > 64 << 20, what="worker memory")
    traffic = _Traffic(supervisor, url)
    wait_for(lambda: traffic.sent >= 3, what="traffic")
    assert supervisor.inject_oom_kill() == worker
    recovered = wait_for(lambda: events(run_dir, "recovered"), timeout=20, what="recovered")[0]
    traffic.stop()

    fault = events(run_dir, "fault_injected")[0]
    assert fault["victim_pid"] == worker and fault["injected"] is True
    exited = events(run_dir, "exited")[0]
    assert exited["cause"] == "oom_kill" and exited["injected"] is True
    assert exited["returncode"] == 0 and exited["descendant_killed"] == f"pid {worker}"
    assert recovered["cause"] == "oom_kill" and recovered["seconds_to_first_success"] > 0


def test_cleaning_up_a_crashed_leaders_workers_is_no_oom_kill_and_leaves_no_zombie(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    port = free_port()
    supervisor = Supervisor(
        program("health_server.py", port, "--children", 2),
        run_dir,
        health_url=f"http://127.0.0.1:{port}/health",
        max_restarts=0,
    )
    supervisors.append(supervisor)
    supervisor.start()
    assert supervisor.wait_ready(10)
    tree = wait_for(lambda: len(supervisor.pids()) == 3 and supervisor.pids(), what="3 processes")
    wait_for(lambda: len(supervisor._child.descendants) == 2, what="the watchdog saw the children")
    os.kill(tree[0], signal.SIGTERM)  # the leader dies alone; the supervisor kills its workers
    assert supervisor.wait(10)
    exited = events(run_dir, "exited")[0]
    assert exited["cause"] == "crash" and "descendant_killed" not in exited
    mine = [p for p in psutil.Process().children() if p.pid in tree]
    assert mine == []  # the workers re-parented to us (subreaper) were reaped, not left zombies
