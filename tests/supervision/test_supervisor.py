"""The supervisor against real child processes: deaths, restarts, recovery timings, no orphans."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from harness.errors import UserError
from harness.net import free_port
from harness.rundir import RunDir
from harness.supervision.samplers import start_sampling
from harness.supervision.supervisor import Supervisor

from .helpers import alive, events, program, samples, wait_for

LOAD_TIME_S = 0.4


def _health_server(
    run_dir: RunDir, supervisors: list[Supervisor], *args: object, **options: object
) -> tuple[Supervisor, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    supervisor = Supervisor(
        program("health_server.py", port, *args),
        run_dir,
        health_url=f"{url}/health",
        backoff_initial_s=0.2,
        **options,  # type: ignore[arg-type]
    )
    supervisors.append(supervisor)
    supervisor.start()
    return supervisor, url


class _Traffic:
    """Real requests every 20 ms, each reported to the supervisor, until stopped."""

    def __init__(self, supervisor: Supervisor, url: str) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(supervisor, url), daemon=True)
        self._thread.start()

    def _run(self, supervisor: Supervisor, url: str) -> None:
        with httpx.Client(timeout=0.5) as client:
            while not self._stop.is_set():
                try:
                    ok = client.get(f"{url}/work").status_code == 200
                except httpx.HTTPError:
                    ok = False
                supervisor.note_request(ok)
                self.sent += 1
                self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_sigkill_restart_is_health_gated_and_timed(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    supervisor, url = _health_server(run_dir, supervisors, "--load-time", LOAD_TIME_S)
    assert supervisor.wait_ready(10)
    first_pid = supervisor.pid
    traffic = _Traffic(supervisor, url)
    wait_for(lambda: traffic.sent >= 3, what="traffic")
    assert supervisor.kill() == first_pid
    recovered = wait_for(lambda: events(run_dir, "recovered"), what="recovered")[0]
    traffic.stop()

    exited = events(run_dir, "exited")[0]
    assert exited["pid"] == first_pid and exited["returncode"] == -9
    assert exited["cause"] == "oom_kill" and exited["injected"] is True
    assert exited["message"].startswith("killed by SIGKILL, as the kernel OOM killer does")
    assert events(run_dir, "restarting")[0]["backoff_s"] == 0.0  # it served: no crash loop
    assert supervisor.pid != first_pid and supervisor.restarts == 1
    # up, then ready only after the simulated load, then a real request succeeded
    assert 0 < recovered["seconds_to_up"] < recovered["seconds_to_ready"]
    assert recovered["seconds_to_ready"] - recovered["seconds_to_up"] >= LOAD_TIME_S
    assert recovered["seconds_to_first_success"] >= recovered["seconds_to_ready"] - 0.05
    assert recovered["requests_failed"] >= 3  # the downtime and the load both failed requests
    assert recovered["death_t"] == exited["t"]
    # a request may succeed a moment before the health gate passes: target.json follows the gate
    target = wait_for(
        lambda: (t := run_dir.read_json("target.json")) and t["state"] == "ready" and t,
        what="target.json to say ready",
    )
    assert target["pid"] == supervisor.pid


def test_failures_reported_before_the_death_is_recorded_count_for_it(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    # A request can fail the moment its server dies, before the monitor thread has recorded
    # the death: those failures still belong to the incident.
    supervisor, _ = _health_server(run_dir, supervisors)
    assert supervisor.wait_ready(10)
    now = time.time()
    supervisor.note_request(False, now - 2)  # settled by the success after it
    supervisor.note_request(True, now - 1)
    supervisor.note_request(False, now - 0.5)  # before the death: not this incident's
    for _ in range(3):  # dated after the kill below, reported before it is recorded
        supervisor.note_request(False, now + 5)
    supervisor.kill()
    wait_for(lambda: supervisor.restarts == 1 and supervisor.wait_ready(0), what="a restart")
    supervisor.note_request(True, now + 6)
    recovered = wait_for(lambda: events(run_dir, "recovered"), what="recovered")[0]
    assert recovered["requests_failed"] == 3


def test_memory_limit_kills_the_tree_as_an_oom_kill_and_rss_curve_is_sampled(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    limit = 120 << 20
    supervisor = Supervisor(
        program("alloc.py", 16, 30, 0.08), run_dir, memory_limit_bytes=limit, max_restarts=0
    )
    supervisors.append(supervisor)
    supervisor.start()
    sampler = start_sampling(run_dir, interval=0.05, pid=lambda: supervisor.pid, gpu=False)
    assert supervisor.wait(20), "the memory limit never killed the allocating child"
    sampler.stop()

    exceeded = events(run_dir, "memory_limit_exceeded")[0]
    assert exceeded["pss_bytes"] > limit == exceeded["limit_bytes"]
    assert exceeded["rss_bytes"] >= exceeded["pss_bytes"]
    exited = events(run_dir, "exited")[0]
    assert (exited["cause"], exited["returncode"], exited["signal"]) == ("oom_kill", -9, "SIGKILL")
    assert "passed --memory-limit 120.0 MiB" in exited["message"]
    assert exited["injected"] is False
    assert events(run_dir, "gave_up")
    curve = [s["rss_bytes"] for s in samples(run_dir, "ram") if s["pid"] == exited["pid"]]
    assert len(set(curve)) >= 4, curve
    assert curve[-1] > curve[0] + (48 << 20)  # it grew step by step on the way to the limit


def test_memory_limit_counts_shared_pages_once_not_summed_rss(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    limit = 200 << 20  # 3 processes sharing 100 MB: RSS sums ~300 MB, PSS ~100 MB
    supervisor = Supervisor(
        program("shared_alloc.py", 100, 2), run_dir, memory_limit_bytes=limit, max_restarts=0
    )
    supervisors.append(supervisor)
    supervisor.start()
    sampler = start_sampling(run_dir, interval=0.05, pid=lambda: supervisor.pid, gpu=False)

    def over_by_rss() -> list[dict[str, object]]:
        return [
            s
            for s in samples(run_dir, "ram")
            if s["nprocs"] == 3 and s["rss_bytes"] and s["rss_bytes"] > limit
        ]

    def measured_pss() -> list[int]:
        return [row["pss_bytes"] for row in over_by_rss() if row["pss_bytes"] is not None]

    # the watchdog checks every 0.1 s; PSS is sampled once a second: two PSS samples while RSS
    # is over the limit span about ten of the watchdog's checks
    pss = wait_for(lambda: len(measured_pss()) >= 2 and measured_pss(), what="PSS samples")
    sampler.stop()
    assert max(pss) < limit
    assert not events(run_dir, "memory_limit_exceeded") and not events(run_dir, "exited")
    assert supervisor.pid is not None


def test_oom_text_in_output_is_an_oom_error(run_dir: RunDir, supervisors: list[Supervisor]) -> None:
    line = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; ...)"
    supervisor = Supervisor(program("exit_with.py", 1, line), run_dir, max_restarts=0)
    supervisors.append(supervisor)
    supervisor.start()
    assert supervisor.wait(10)
    exited = events(run_dir, "exited")[0]
    assert exited["cause"] == "oom_error" and exited["oom_line"] == line
    log = (run_dir.path / "target.log").read_text()
    assert line in log and "target exited: OOM error (exit 1)" in log


def test_backoff_doubles_then_gives_up(run_dir: RunDir, supervisors: list[Supervisor]) -> None:
    supervisor = Supervisor(
        program("exit_with.py", 3), run_dir, max_restarts=3, backoff_initial_s=0.05
    )
    supervisors.append(supervisor)
    supervisor.start()
    assert supervisor.wait(10)
    assert [e["backoff_s"] for e in events(run_dir, "restarting")] == [0.05, 0.1, 0.2]
    assert [e["cause"] for e in events(run_dir, "exited")] == ["crash"] * 4
    starts = [e["t"] for e in events(run_dir, "started")]
    deaths = [e["t"] for e in events(run_dir, "exited")]
    for death, start, backoff in zip(deaths[:-1], starts[1:], [0.05, 0.1, 0.2], strict=True):
        assert start - death >= backoff
    assert events(run_dir, "gave_up")[0]["restarts"] == 3
    assert supervisor.last_exit is not None and supervisor.last_exit["returncode"] == 3


def test_backoff_is_for_crash_loops_a_healthy_stretch_from_ready_restarts_at_once(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    # healthy_reset 2 s < load time 2.5 s: a kill right after ready is up 2.5 s since start but
    # healthy ~0 s, so it still backs off (measured from ready, not start). The 2 s leave a busy
    # machine room to deschedule this thread between ready and the kill.
    supervisor, _ = _health_server(run_dir, supervisors, "--load-time", 2.5, healthy_reset_s=2.0)
    for healthy_first in (False, False, True, False):
        assert supervisor.wait_ready(15)
        ready_t = events(run_dir, "ready")[-1]["t"]
        if healthy_first:
            wait_for(lambda t=ready_t: time.time() - t > 2.05, what="a healthy stretch")
        supervisor.kill()
        wait_for(lambda n=supervisor.restarts: supervisor.restarts > n, what="a restart")
    assert [e["backoff_s"] for e in events(run_dir, "restarting")] == [0.2, 0.4, 0.0, 0.2]


def test_a_target_that_served_requests_since_ready_restarts_at_once(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    # the hour-7 death: a server dies under load after serving; only one that never served backs off
    supervisor, _ = _health_server(run_dir, supervisors, healthy_reset_s=60.0)
    for served in (True, True, False, True):
        assert supervisor.wait_ready(10)
        if served:
            supervisor.note_request(True)
        supervisor.kill()
        wait_for(lambda n=supervisor.restarts: supervisor.restarts > n, what="a restart")
    assert [e["backoff_s"] for e in events(run_dir, "restarting")] == [0.0, 0.0, 0.2, 0.0]


def test_completed_target_is_not_restarted(run_dir: RunDir, supervisors: list[Supervisor]) -> None:
    supervisor = Supervisor(program("exit_with.py", 0), run_dir)
    supervisors.append(supervisor)
    supervisor.start()
    assert supervisor.wait(10)
    assert [e["cause"] for e in events(run_dir, "exited")] == ["completed"]
    assert supervisor.restarts == 0 and not events(run_dir, "restarting")


def test_stop_ends_the_whole_tree_even_a_child_in_its_own_session(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    supervisor, _ = _health_server(run_dir, supervisors, "--children", 2, "--grandchild-session")
    assert supervisor.wait_ready(10)
    tree = wait_for(lambda: len(supervisor.pids()) == 4 and supervisor.pids(), what="4 processes")
    assert len([pid for pid in tree if os.getsid(pid) != supervisor.pid]) == 1  # out of the group
    supervisor.stop(timeout=15.0, sig=signal.SIGINT)  # room for a busy machine: never SIGKILL
    assert not [pid for pid in tree if alive(pid)]
    exited = events(run_dir, "exited")[-1]
    assert exited["cause"] == "stopped" and exited["signal"] in ("SIGINT", None)
    assert run_dir.read_json("target.json")["state"] == "stopped"  # type: ignore[index]


def test_a_dead_leaders_workers_are_cleaned_up_before_restart(
    run_dir: RunDir, supervisors: list[Supervisor]
) -> None:
    supervisor, _ = _health_server(run_dir, supervisors, "--children", 2)
    assert supervisor.wait_ready(10)
    old = wait_for(lambda: len(supervisor.pids()) == 3 and supervisor.pids(), what="3 processes")
    supervisor.kill()  # the leader only, as the OOM killer picks one process
    assert wait_for(lambda: supervisor.restarts == 1 and supervisor.wait_ready(5), what="restart")
    assert not [pid for pid in old if alive(pid)]


def test_bad_command_and_non_loopback_health_are_user_errors(run_dir: RunDir) -> None:
    unstartable = Supervisor(["/nonexistent/server"], run_dir)
    with pytest.raises(UserError, match="cannot start"):
        unstartable.start()
    unstartable.stop()  # harmless, as the CLI's cleanup calls it
    assert unstartable.finished
    with pytest.raises(UserError, match="not a loopback"):
        Supervisor(["true"], run_dir, health_url="http://10.1.2.3:8000/health")
    with pytest.raises(UserError, match="no command"):
        Supervisor([], run_dir)
