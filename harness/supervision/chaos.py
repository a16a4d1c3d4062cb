"""Fault injection against a supervised target, found through the run directory's target.json.

Faults: `kill` (SIGKILL the child: what an OOM kill looks like, for any server), `hang` (SIGSTOP the
group, SIGCONT after N s), and through the reference server's /admin/faults: `oom` (a simulated
CUDA OOM, following its --oom mode) and `error-burst` (a share of requests answer 500 for N s).
Each injection is a `fault_injected` event; the supervisor times the recovery from a death
(`recovered`), chaos the end of a hang (`resumed`: stop -> health answering 200 again).
Bounded in count and time; HTTP only to loopback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import psutil

from harness.admin_faults import post_fault
from harness.errors import UserError
from harness.net import require_loopback_url, url_origin
from harness.rundir import EVENTS, EventKind, RunDir
from harness.supervision.supervisor import ADMIN_TOKEN_ENV, TARGET_FILE
from harness.supervision.victim import DEFAULT_VICTIM, pick_victim

FAULTS = ("kill", "oom", "hang", "error-burst")
MAX_INJECTIONS = 1000
_POLL_S = 0.05
_HTTP_TIMEOUT_S = 5.0
_RECOVERY_WAIT_S = 120.0  # after the last injection, how long to wait to report its recovery


@dataclass(frozen=True)
class Target:
    """The supervised child as target.json describes it."""

    state: str
    pid: int | None
    pgid: int | None
    pid_create_time: float | None
    health_url: str | None
    admin_url: str | None
    admin_token_env: str | None
    supervisor_pid: int | None

    @property
    def ready(self) -> bool:
        return self.pid is not None and self.state in ("ready", "running")


def read_target(run_dir: RunDir) -> Target:
    """The current target; UserError when the run directory has none or its supervisor is gone."""
    document = run_dir.read_json(TARGET_FILE)
    if document is None:
        raise UserError(
            f"no supervised target in {run_dir.path}: start one with "
            f"`harness supervise --run-dir {run_dir.path} -- COMMAND`, then run chaos against it"
        )
    target = Target(
        state=document.get("state", "unknown"),
        pid=document.get("pid"),
        pgid=document.get("pgid"),
        pid_create_time=document.get("pid_create_time"),
        health_url=document.get("health_url"),
        admin_url=document.get("admin_url"),
        admin_token_env=document.get("admin_token_env"),
        supervisor_pid=document.get("supervisor_pid"),
    )
    if target.supervisor_pid is not None and not psutil.pid_exists(target.supervisor_pid):
        raise UserError(
            f"{run_dir.path / TARGET_FILE} is stale: its supervisor (pid {target.supervisor_pid}) "
            "is not running; start `harness supervise` again"
        )
    return target


def inject(
    run_dir: RunDir,
    fault: str,
    *,
    seconds: float = 5.0,
    error_rate: float = 0.5,
    admin_token: str | None = None,
    stop: threading.Event | None = None,
    victim: str | int = DEFAULT_VICTIM,
) -> dict[str, Any]:
    """Inject one fault now; returns the `fault_injected` event (a hang returns when resumed).

    seconds: how long a hang or an error burst lasts; error_rate: the burst's share of 500s;
    victim: whom a kill hits (pick_victim: "largest" as the OOM killer, "leader", or a pid).
    """
    if fault not in FAULTS:
        raise UserError(f"unknown fault {fault!r}; choose one of {', '.join(FAULTS)}")
    target = read_target(run_dir)
    if fault in ("kill", "hang"):
        pid = _live_pid(target)
        if fault == "kill":
            killed = pick_victim(pid, victim)
            event = run_dir.event(
                EventKind.FAULT_INJECTED,
                fault="kill",
                signal="SIGKILL",
                pid=pid,
                victim_pid=killed,
                injected=True,
                cause="oom_kill",
                by="chaos",
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(killed, signal.SIGKILL)
            return event
        return _hang(run_dir, target, pid, seconds, stop or threading.Event())
    body: dict[str, Any] = {"fault": "oom"}
    if fault == "error-burst":
        body = {"fault": "error_rate", "rate": error_rate, "seconds": seconds}
    url, token = _admin(target, fault, admin_token)
    # Recorded before the request: an OOM in kill mode may end the server before it answers.
    event = run_dir.event(
        EventKind.FAULT_INJECTED, fault=fault, pid=target.pid, by="chaos", admin=body
    )
    _post_admin(url, token, body)
    return event


def run_chaos(
    run_dir: RunDir,
    fault: str,
    *,
    every_s: float,
    count: int,
    duration_s: float | None = None,
    seconds: float = 5.0,
    error_rate: float = 0.5,
    admin_token: str | None = None,
    stop: threading.Event | None = None,
    victim: str | int = DEFAULT_VICTIM,
) -> list[dict[str, Any]]:
    """Inject `fault` every `every_s` (first after one interval), at most `count` times and within
    `duration_s`; waits for the target to be ready before each and reports each recovery
    (after the last one, for up to two minutes)."""
    if not 1 <= count <= MAX_INJECTIONS:
        raise UserError(f"--count {count} is out of range; use 1 to {MAX_INJECTIONS}")
    if every_s <= 0:
        raise UserError("--every must be positive, e.g. 60s")
    stop = stop or threading.Event()
    started = time.monotonic()
    deadline = started + (duration_s if duration_s is not None else every_s * (count + 1))
    read_target(run_dir)  # fail now, not after the first interval, when there is no target
    injected: list[dict[str, Any]] = []
    for k in range(1, count + 1):
        due = started + k * every_s
        if due > deadline or stop.wait(max(0.0, due - time.monotonic())):
            break
        until = min(due + every_s, deadline)
        if not _wait_ready(run_dir, until, stop):
            _say(f"target not ready; skipping injection {k}/{count}")
            continue
        offset = _size(run_dir)
        event = inject(
            run_dir,
            fault,
            seconds=seconds,
            error_rate=error_rate,
            admin_token=admin_token,
            stop=stop,
            victim=victim,
        )
        injected.append(event)
        _say(f"injected {fault} into pid {event.get('victim_pid', event.get('pid'))} ({k}/{count})")
        if fault in ("kill", "oom"):
            last = k == count or due + every_s > deadline
            watch_until = time.monotonic() + _RECOVERY_WAIT_S if last else due + every_s
            _report_recovery(run_dir, offset, watch_until, stop)
    return injected


def _live_pid(target: Target) -> int:
    """The target's pid, checked to still be the same process (pids are reused)."""
    if target.pid is None:
        raise UserError(f"the target is not running (state: {target.state}); try again later")
    try:
        process = psutil.Process(target.pid)
        same = (
            target.pid_create_time is None
            or abs(process.create_time() - target.pid_create_time) < 0.01
        )
    except psutil.NoSuchProcess:
        same = False
    if not same:
        raise UserError(f"target pid {target.pid} has exited; try again once it is restarted")
    return target.pid


def _hang(
    run_dir: RunDir, target: Target, pid: int, seconds: float, stop: threading.Event
) -> dict[str, Any]:
    """SIGSTOP the group for `seconds`, always SIGCONT it, then time until health answers 200."""
    group = target.pgid or pid
    event = run_dir.event(
        EventKind.FAULT_INJECTED, fault="hang", seconds=seconds, pid=pid, by="chaos"
    )
    try:
        os.killpg(group, signal.SIGSTOP)
        stop.wait(seconds)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGCONT)
    if target.health_url is not None:
        answered = _wait_health(target.health_url, time.monotonic() + 30.0, stop)
        if answered is not None:
            run_dir.event(
                EventKind.RESUMED,
                t=answered,
                fault="hang",
                pid=pid,
                hang_t=event["t"],
                seconds_to_health=round(answered - event["t"], 6),
            )
            _say(f"hang over: health answered {answered - event['t']:.2f} s after it began")
    return event


def _admin(target: Target, fault: str, admin_token: str | None) -> tuple[str, str]:
    """The /admin/faults URL and token, or UserError saying how to provide them."""
    if target.admin_url is None:
        raise UserError(
            f"fault {fault!r} needs the reference server's /admin/faults, and this target has no "
            "health URL to find it from; supervise with --health, or use --fault kill|hang"
        )
    url = require_loopback_url(target.admin_url, "admin URL")
    token = admin_token or os.environ.get(target.admin_token_env or ADMIN_TOKEN_ENV)
    if not token:
        raise UserError(
            f"/admin/faults needs the server's admin token: pass --admin-token or set "
            f"{ADMIN_TOKEN_ENV} (the same token `harness serve` got)"
        )
    return url, token


def _post_admin(url: str, token: str, body: dict[str, Any]) -> None:
    answer = post_fault(url_origin(url), token, body, timeout_s=_HTTP_TIMEOUT_S)
    if answer is None and body["fault"] != "oom":  # in kill mode an OOM may end it first
        raise UserError(f"{url} did not answer; is the target up?")


def _wait_ready(run_dir: RunDir, until: float, stop: threading.Event) -> bool:
    while time.monotonic() < until:
        if read_target(run_dir).ready:
            return True
        if stop.wait(_POLL_S):
            return False
    return False


def _wait_health(url: str, until: float, stop: threading.Event) -> float | None:
    """Unix time when url first answers 200 before `until` (monotonic), else None."""
    require_loopback_url(url, "health URL")
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < until:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return time.time()
            if stop.wait(_POLL_S):
                return None
    return None


def _report_recovery(run_dir: RunDir, offset: int, until: float, stop: threading.Event) -> None:
    """Print the supervisor's `recovered` event for this injection, when it comes in time."""
    while time.monotonic() < until:
        for event in _events_since(run_dir, offset):
            if event.get("kind") == EventKind.RECOVERED:
                _say(
                    f"recovered: up {_fmt(event.get('seconds_to_up'))}, ready "
                    f"{_fmt(event.get('seconds_to_ready'))}, first success "
                    f"{_fmt(event.get('seconds_to_first_success'))} after the death"
                )
                return
            if event.get("kind") == EventKind.GAVE_UP:
                _say("the supervisor gave up restarting the target")
                return
        if stop.wait(0.1):
            return


def _events_since(run_dir: RunDir, offset: int) -> list[dict[str, Any]]:
    try:
        with open(run_dir.path / EVENTS, "rb") as handle:
            handle.seek(offset)
            lines = handle.read().splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        with contextlib.suppress(orjson.JSONDecodeError):
            events.append(orjson.loads(line))
    return events


def _size(run_dir: RunDir) -> int:
    try:
        return (run_dir.path / EVENTS).stat().st_size
    except OSError:
        return 0


def _fmt(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def _say(message: str) -> None:
    print(f"harness: chaos: {message}", file=sys.stderr, flush=True)
