"""Supervisor: run any command as a child process group, keep it alive, and say why it died.

Restarts a failed child at once when it had been healthy a while, else with capped exponential
backoff (a crash loop), gates
"ready" on a health URL answering 200, times each recovery (death -> up -> ready -> first
successful request), and emulates a container memory limit by SIGKILLing the tree when its RSS
passes it, as the kernel's OOM killer would. Events go to the run directory's events.jsonl, the
child's output to its log, the current child to target.json (for `harness chaos`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import psutil

from harness.admin_faults import faults_url
from harness.errors import UserError
from harness.net import require_loopback_url, url_origin
from harness.rundir import EVENTS, EventKind, RunDir, utc_iso, write_json_atomic
from harness.supervision.cgroup import MemoryCgroup, memory_cgroup, system_oom_kills
from harness.supervision.exits import (
    COMPLETED,
    OOM_KILL,
    ExitVerdict,
    classify_exit,
    find_engine_death_line,
    find_oom_line,
)
from harness.supervision.proctree import ProcessTree, TreeMemory
from harness.supervision.redact import redact_command
from harness.supervision.victim import DEFAULT_VICTIM, pick_victim
from harness.units import format_bytes

TARGET_FILE = "target.json"
ADMIN_TOKEN_ENV = "HARNESS_ADMIN_TOKEN"

_HEALTH_POLL_S = 0.05  # fast while a restart is expected to come up soon ...
_HEALTH_POLL_SLOW_S = 0.25  # ... then gentler during a long model load
_HEALTH_FAST_FOR_S = 10.0
_HEALTH_TIMEOUT_S = 1.0
_MEMORY_CHECK_S = 0.1
_TREE_TRACK_S = 1.0  # how often descendants are noted, so none survives as an orphan
_SURVIVAL_S = 1.0  # without a health URL, up this long counts as recovered (not a crash loop)
_GONE_POLL_S = 0.02
_REAP_S = 1.0  # how long to wait for the cleaned-up workers re-parented to us, to reap them
_DEATH_FAULTS = frozenset({"kill", "oom", "crash"})


@dataclass(eq=False)
class _Child:
    """One generation of the target: its process and what happened to it."""

    proc: subprocess.Popen[bytes]
    attempt: int
    started_t: float
    log_offset: int
    events_offset: int
    cgroup: MemoryCgroup | None
    oom_counts: tuple[int | None, int | None]
    create_time: float | None = None
    ready_t: float | None = None
    served: bool = False  # a request succeeded after ready: its death is no crash loop
    injected_t: float | None = None
    memory_kill: tuple[int, int] | None = None
    memory_kill_t: float | None = None
    stop_signal: int | None = None
    stop_deadline: float = 0.0
    descendants: list[psutil.Process] = field(default_factory=list)
    descendant_killed: str | None = None  # "name (pid N)" of a tree member seen SIGKILLed
    exited: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class _Recovery:
    """Timings of one death until the target serves again (wall-clock seconds)."""

    death_t: float
    cause: str
    pid: int | None = None
    up_t: float | None = None
    ready_t: float | None = None
    first_success_t: float | None = None
    failed: int = 0
    serving: bool = False  # without a health URL: a success came, or it survived a while


class Supervisor:
    """Runs `command` as a process group and keeps it alive; a context manager (start/stop)."""

    def __init__(
        self,
        command: Sequence[str],
        run_dir: RunDir,
        *,
        health_url: str | None = None,
        memory_limit_bytes: int | None = None,
        max_restarts: int = 10,
        env: Mapping[str, str] | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        healthy_reset_s: float = 60.0,
        log_name: str = "target.log",
    ) -> None:
        if not command:
            raise UserError(
                "no command to supervise; put it after --, e.g. harness supervise -- harness serve"
            )
        if health_url is not None:
            require_loopback_url(health_url, "health URL")
        if memory_limit_bytes is not None and memory_limit_bytes <= 0:
            raise UserError(f"memory limit {memory_limit_bytes} must be positive, e.g. 512M")
        self.command = list(command)
        self.shown_command = redact_command(self.command)  # what is recorded: no secrets
        self.run_dir = run_dir
        self.health_url = health_url
        self.memory_limit_bytes = memory_limit_bytes
        self.max_restarts = max_restarts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_reset_s = healthy_reset_s
        self.log_path = run_dir.path / log_name
        self.last_exit: dict[str, Any] | None = None
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._lock = threading.Condition()
        self._child: _Child | None = None
        self._restarts = 0
        self._stopping = False
        self._state = "new"
        self._recovery: _Recovery | None = None
        self._traffic_seen = False
        self._wake = threading.Event()
        self._done = threading.Event()
        self._first_spawn = threading.Event()
        self._spawn_error: UserError | None = None
        self._tree = ProcessTree(rescan_s=0.5 if memory_limit_bytes else _TREE_TRACK_S)
        self._monitor = threading.Thread(target=self._run, name="harness-supervisor", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="harness-watchdog", daemon=True)

    # -- public API -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The current child's pid; None while it is down."""
        child = self._child
        return None if child is None or child.exited.is_set() else child.pid

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def finished(self) -> bool:
        """True once the supervisor stopped, gave up, or the target completed (exit 0)."""
        return self._done.is_set()

    def pids(self) -> list[int]:
        """The current child's process tree (root first); empty while it is down."""
        pid = self.pid
        return ProcessTree(rescan_s=0).pids(pid) if pid is not None else []

    def start(self) -> Supervisor:
        """Start the child (UserError when it cannot start) and monitor it in the background."""
        if self._state != "new":
            raise RuntimeError("a Supervisor starts once")
        self._state = "starting"
        _become_subreaper()
        self._monitor.start()
        self._first_spawn.wait()
        if self._spawn_error is not None:
            raise self._spawn_error
        self._watchdog.start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the current child is ready (health 200; started, without a health URL)."""
        with self._lock:
            return self._lock.wait_for(self._is_ready_or_done, timeout) and self._is_ready()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the supervisor is finished; True when it is."""
        return self._done.wait(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Inject a death: signal the child (not its tree, as the OOM killer picks one process).

        The exit is classified as usual (SIGKILL -> oom_kill) with `injected: true`.
        Returns the pid signalled, or None when no child is running.
        """
        with self._lock:
            child = self._child
            if child is None or child.exited.is_set():
                return None
            child.injected_t = time.time()
            self.run_dir.event(
                EventKind.FAULT_INJECTED,
                t=child.injected_t,
                fault="kill",
                signal=signal.Signals(sig).name,
                pid=child.pid,
                by="supervisor",
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)
            return child.pid

    def inject_oom_kill(self, victim: str | int = DEFAULT_VICTIM) -> int | None:
        """Rehearse a real OOM kill, no admin token needed: SIGKILL the process the kernel would
        pick (pick_victim: "largest" oom_score in the tree, "leader", or a pid).

        Recorded as `fault_injected` (injected: true); the exit that follows is an `oom_kill`
        with `injected: true`, whatever the leader's exit code, and its recovery is timed as
        any other (a real reload). Returns the pid killed, or None when no child is running.
        """
        with self._lock:
            child = self._child
            if child is None or child.exited.is_set():
                return None
            try:
                killed = pick_victim(child.pid, victim)
            except UserError:
                if victim != DEFAULT_VICTIM:
                    raise
                return None  # the leader exited between the check and the pick
            child.injected_t = time.time()
            if killed != child.pid:
                child.descendant_killed = f"pid {killed}"
            self.run_dir.event(
                EventKind.FAULT_INJECTED,
                t=child.injected_t,
                fault="kill",
                signal="SIGKILL",
                pid=child.pid,
                victim_pid=killed,
                injected=True,
                cause=OOM_KILL,
                by="supervisor",
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(killed, signal.SIGKILL)
            return killed

    def note_request(self, ok: bool, t: float | None = None) -> None:
        """Tell the supervisor a request finished (t: when, unix seconds) to time recoveries."""
        t = time.time() if t is None else t
        with self._lock:
            self._traffic_seen = True
            child = self._child
            if ok and child is not None and child.ready_t is not None and t >= child.ready_t:
                child.served = True
            recovery = self._recovery
            if recovery is None or t < recovery.death_t or recovery.first_success_t is not None:
                return
            if ok and recovery.up_t is not None:
                recovery.first_success_t = t
                recovery.serving = True
                self._close_recovery()
            elif not ok:
                recovery.failed += 1

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Stop for good: `sig` to the whole group, SIGKILL after `timeout`; records `stopped`."""
        with self._lock:
            if self._state == "new" or self._stopping:
                self._stopping = True
                return
            self._stopping = True
            self._wake.set()
            child = self._child
            alive = child is not None and not child.exited.is_set()
            if alive:
                assert child is not None
                child.stop_signal = sig
                child.stop_deadline = time.monotonic() + timeout
                with contextlib.suppress(psutil.Error):
                    child.descendants = psutil.Process(child.pid).children(recursive=True)
        if alive:
            assert child is not None
            self._signal_tree(child, sig)
            if not child.exited.wait(timeout + 1.0):
                self._signal_tree(child, signal.SIGKILL)
                child.exited.wait(5.0)
        for thread, timeout_s in ((self._monitor, 10.0), (self._watchdog, 2.0)):
            if thread.ident is not None:  # started (a failed start never starts the watchdog)
                thread.join(timeout_s)

    def escalate(self) -> None:
        """SIGKILL the whole tree now (a second Ctrl-C while stopping)."""
        child = self._child
        if child is not None and not child.exited.is_set():
            self._signal_tree(child, signal.SIGKILL)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the child's life -------------------------------------------------------------------

    def _spawn(self, attempt: int) -> None:
        """Start one generation (caller holds the lock)."""
        with open(self.log_path, "ab") as log:
            shown = shlex.join(self.shown_command)
            log.write(f"[harness] {utc_iso()} start #{attempt + 1}: {shown}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    start_new_session=True,  # its own process group: signals reach the whole tree
                    preexec_fn=_die_with(os.getpid()),
                )
            except OSError as exc:
                raise UserError(
                    f"cannot start {self.command[0]!r}: {exc.strerror or exc}; "
                    "check the command after --"
                ) from exc
            log_offset = log.tell()
        started_t = time.time()
        cgroup = memory_cgroup(proc.pid)
        child = _Child(
            proc=proc,
            attempt=attempt,
            started_t=started_t,
            log_offset=log_offset,
            events_offset=_size(self.run_dir.path / EVENTS),
            cgroup=cgroup,
            oom_counts=(cgroup.oom_kills() if cgroup else None, system_oom_kills()),
        )
        with contextlib.suppress(psutil.Error):
            child.create_time = psutil.Process(proc.pid).create_time()
        self._child = child
        self._state = "starting"
        self.run_dir.event(
            EventKind.STARTED,
            t=started_t,
            pid=proc.pid,
            pgid=proc.pid,
            attempt=attempt,
            command=self.shown_command,
        )
        if self._recovery is not None:
            self._recovery.up_t = started_t
            self._recovery.pid = proc.pid
        if self.health_url is None:
            child.ready_t = started_t  # nothing to gate on: up is as ready as we can tell
            self._state = "running"
        else:
            threading.Thread(
                target=self._probe, args=(child,), name="harness-health", daemon=True
            ).start()
        self._write_target()
        self._lock.notify_all()

    def _run(self) -> None:
        """Monitor thread: spawn, wait for each exit, record it, back off, restart. Every child
        is spawned here, so each dies with this thread (PR_SET_PDEATHSIG) if our process dies."""
        try:
            with self._lock:
                self._spawn(attempt=0)
        except UserError as exc:
            self._spawn_error = exc
            self._done.set()
            return
        finally:
            self._first_spawn.set()
        failures = 0
        while True:
            child = self._child
            assert child is not None
            returncode = self._wait_exit(child)
            death_t, verdict = self._record_exit(child, returncode)
            with self._lock:
                if self._stopping or verdict.cause == COMPLETED:
                    self._state = "stopped" if self._stopping else "completed"
                    break
                # Backoff is for crash loops: one that served requests, or a healthy stretch
                # (measured from ready, not start: a long model load is no health), restarts at
                # once.
                healthy = child.ready_t is not None and (
                    child.served or death_t - child.ready_t >= self.healthy_reset_s
                )
                failures = 0 if healthy else failures + 1
                if self._restarts >= self.max_restarts:
                    self._give_up(verdict.cause, f"the target exited {self._restarts + 1} times")
                    break
                backoff = (
                    0.0
                    if healthy
                    else min(self.backoff_initial_s * 2 ** (failures - 1), self.backoff_max_s)
                )
                self._recovery = _Recovery(death_t=death_t, cause=verdict.cause)
                self._state = "restarting"
                self.run_dir.event(
                    EventKind.RESTARTING,
                    attempt=self._restarts + 1,
                    backoff_s=backoff,
                    cause=verdict.cause,
                )
                self._write_target()
            if self._wake.wait(backoff):
                with self._lock:
                    self._state = "stopped"
                break
            with self._lock:
                if self._stopping:
                    self._state = "stopped"
                    break
                self._restarts += 1
                try:
                    self._spawn(self._restarts)
                except UserError as exc:
                    self._give_up(verdict.cause, str(exc))
                    break
        with self._lock:
            self._close_recovery(final=True)
            self._write_target()
            self._done.set()
            self._lock.notify_all()

    def _wait_exit(self, child: _Child) -> int:
        """Block until the child exits; clean up its group while its zombie still holds the
        group id (so the id cannot have been reused); then reap it and return its code."""
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        self._note_descendant_deaths(child)  # before our own cleanup below SIGKILLs the rest
        if child.stop_signal is not None:  # give the rest of the tree the stop's grace time
            _wait_gone(child.descendants, child.stop_deadline)
        self._signal_tree(child, signal.SIGKILL)  # a dead leader's workers only hold memory/ports
        returncode = child.proc.wait()
        _reap_orphans(child.descendants, time.monotonic() + _REAP_S)
        return returncode

    def _record_exit(self, child: _Child, returncode: int) -> tuple[float, ExitVerdict]:
        death_t = child.injected_t or child.memory_kill_t or time.time()
        injection = self._injected_elsewhere(child)
        external = None if injection is None else float(injection["t"])
        if external is not None and child.injected_t is None:
            death_t = min(death_t, external)
            victim = injection.get("victim_pid", child.pid) if injection else child.pid
            if victim != child.pid and child.descendant_killed is None:
                child.descendant_killed = f"pid {victim}"
        kernel = self._kernel_verdict(child)
        oom_line = find_oom_line(self.log_path, child.log_offset)
        engine_death_line = find_engine_death_line(self.log_path, child.log_offset)
        verdict = classify_exit(
            returncode,
            stopped=child.stop_signal is not None,
            oom_line=oom_line,
            injected=child.injected_t is not None or external is not None,
            memory_limit=child.memory_kill,
            kernel_oom_kill=kernel,
            engine_death_line=engine_death_line,
            descendant_killed=child.descendant_killed,
            supervised=self.health_url is not None,
        )
        fields: dict[str, Any] = {
            "pid": child.pid,
            "returncode": returncode,
            "signal": verdict.signal,
            "cause": verdict.cause,
            "message": verdict.message,
            "injected": child.injected_t is not None or external is not None,
            "attempt": child.attempt,
            "uptime_s": round(death_t - child.started_t, 6),
            "kernel_oom_kill": kernel,
        }
        if oom_line is not None:
            fields["oom_line"] = oom_line
        if engine_death_line is not None:
            fields["engine_death_line"] = engine_death_line
        if child.descendant_killed is not None:
            fields["descendant_killed"] = child.descendant_killed
        if child.memory_kill is not None:
            fields["memory_bytes"], fields["limit_bytes"] = child.memory_kill
        print(f"harness: {verdict.line}", file=sys.stderr, flush=True)
        with open(self.log_path, "ab") as log:
            log.write(f"[harness] {utc_iso()} {verdict.line}\n".encode())
        with self._lock:
            self.run_dir.event(EventKind.EXITED, t=death_t, **fields)
            self.last_exit = fields
            self._close_recovery(final=True)  # an earlier death that never fully recovered
            child.exited.set()
            self._state = "down"
            self._write_target()
            self._lock.notify_all()
        return death_t, verdict

    def _give_up(self, cause: str, why: str) -> None:
        self._state = "gave_up"
        message = f"{why}; giving up (--max-restarts {self.max_restarts}); last cause: {cause}"
        self.run_dir.event(EventKind.GAVE_UP, restarts=self._restarts, cause=cause, message=message)
        print(f"harness: {message}", file=sys.stderr, flush=True)

    # -- readiness, recovery, memory --------------------------------------------------------

    def _probe(self, child: _Child) -> None:
        """Poll the health URL until it answers 200, the child exits, or we stop."""
        assert self.health_url is not None
        began = time.monotonic()
        with httpx.Client(timeout=_HEALTH_TIMEOUT_S, trust_env=False) as client:
            while not child.exited.is_set():
                try:
                    if client.get(self.health_url).status_code == 200:
                        self._on_ready(child)
                        return
                except httpx.HTTPError:
                    pass
                fast = time.monotonic() - began < _HEALTH_FAST_FOR_S
                if child.exited.wait(_HEALTH_POLL_S if fast else _HEALTH_POLL_SLOW_S):
                    return

    def _on_ready(self, child: _Child) -> None:
        with self._lock:
            if child is not self._child or child.exited.is_set():
                return
            child.ready_t = time.time()
            self._state = "ready"
            self.run_dir.event(
                EventKind.READY,
                t=child.ready_t,
                pid=child.pid,
                attempt=child.attempt,
                seconds_to_ready=round(child.ready_t - child.started_t, 6),
            )
            if self._recovery is not None:
                self._recovery.ready_t = child.ready_t
                self._close_recovery()
            self._write_target()
            self._lock.notify_all()

    def _close_recovery(self, final: bool = False) -> None:
        """Record `recovered` once the target is ready and (with traffic) served a success.

        final: the chance to wait is over (a new death, a stop); record what is known, or nothing
        when the target never became ready (that death was not recovered from). Caller holds lock.
        """
        recovery = self._recovery
        if recovery is None:
            return
        confirmed = recovery.ready_t is not None if self.health_url else recovery.serving
        if recovery.up_t is None or not confirmed:
            if final:
                self._recovery = None
            return
        if not final and self._traffic_seen and recovery.first_success_t is None:
            return
        self._recovery = None

        def since_death(t: float | None) -> float | None:
            return None if t is None else round(t - recovery.death_t, 6)

        ready_t = recovery.ready_t
        if ready_t is not None and recovery.first_success_t is not None:
            # traffic can succeed between two health polls: by then the target was ready
            ready_t = min(ready_t, recovery.first_success_t)
        timings = {
            "seconds_to_up": since_death(recovery.up_t),
            "seconds_to_ready": since_death(ready_t),
            "seconds_to_first_success": since_death(recovery.first_success_t),
        }
        self.run_dir.event(
            EventKind.RECOVERED,
            death_t=recovery.death_t,
            cause=recovery.cause,
            pid=recovery.pid,
            requests_failed=recovery.failed,
            **timings,
        )
        said = ", ".join(
            f"{name[len('seconds_to_') :].replace('_', ' ')} {value:.2f} s"
            for name, value in timings.items()
            if value is not None
        )
        print(
            f"harness: recovered from {recovery.cause}: {said} after the death "
            f"({recovery.failed} requests failed in between)",
            file=sys.stderr,
            flush=True,
        )

    def _watch(self) -> None:
        """Watchdog thread: note the tree's members (for cleanup) and enforce --memory-limit."""
        period = _MEMORY_CHECK_S if self.memory_limit_bytes else _TREE_TRACK_S
        while not self._done.wait(period):
            child = self._child
            if child is None or child.exited.is_set() or child.stop_signal is not None:
                continue
            self._note_descendant_deaths(child)
            members = self._tree.processes(child.pid)
            if members:
                child.descendants = members[1:]
            if self.health_url is None:
                self._confirm_survival(child)
            if self.memory_limit_bytes is None or child.memory_kill is not None:
                continue
            memory = self._tree.memory(child.pid)
            if memory is not None and memory.rss_bytes > self.memory_limit_bytes:
                # PSS <= RSS, so the costlier PSS (shared pages counted once, as a cgroup does)
                # is read only once the summed RSS passes the limit
                memory = self._tree.memory(child.pid, pss=True) or memory
                if _counted_bytes(memory) > self.memory_limit_bytes:
                    self._kill_for_memory(child, memory)
        self._tree.close()

    def _note_descendant_deaths(self, child: _Child) -> None:
        """Record a tree member killed by SIGKILL (the OOM killer's signal) while the leader ran:
        read from its zombie's /proc stat, or from reaping it when it was orphaned to us."""
        for process in list(child.descendants):
            status = _descendant_exit_status(process.pid)
            if status is None or status & 0x7F != signal.SIGKILL or child.stop_signal is not None:
                continue
            name = None
            with contextlib.suppress(psutil.Error, ValueError):
                name = process.name()
            killed = f"{name or 'process'} (pid {process.pid})"
            if child.descendant_killed is None:
                child.descendant_killed = killed
                self.run_dir.event(
                    EventKind.DESCENDANT_KILLED, pid=process.pid, leader=child.pid, name=name
                )

    def _confirm_survival(self, child: _Child) -> None:
        """Without a health URL, a restarted child that stays up a while has recovered."""
        with self._lock:
            recovery = self._recovery
            if (
                recovery is not None
                and recovery.up_t is not None
                and child is self._child
                and not child.exited.is_set()
                and time.time() - recovery.up_t >= _SURVIVAL_S
            ):
                recovery.serving = True
                self._close_recovery()

    def _kill_for_memory(self, child: _Child, memory: TreeMemory) -> None:
        assert self.memory_limit_bytes is not None
        with self._lock:
            if child.exited.is_set() or child.stop_signal is not None:
                return
            child.memory_kill = (_counted_bytes(memory), self.memory_limit_bytes)
            child.memory_kill_t = time.time()
            self.run_dir.event(
                EventKind.MEMORY_LIMIT_EXCEEDED,
                t=child.memory_kill_t,
                pid=child.pid,
                rss_bytes=memory.rss_bytes,
                pss_bytes=memory.pss_bytes,
                limit_bytes=self.memory_limit_bytes,
                nprocs=memory.nprocs,
            )
        print(
            f"harness: target tree memory {format_bytes(_counted_bytes(memory))} "
            f"({'PSS' if memory.pss_bytes is not None else 'RSS'}) passed --memory-limit "
            f"{format_bytes(self.memory_limit_bytes)}: killing it with SIGKILL, as the kernel's "
            "OOM killer would",
            file=sys.stderr,
            flush=True,
        )
        self._signal_tree(child, signal.SIGKILL)

    # -- helpers ----------------------------------------------------------------------------

    def _signal_tree(self, child: _Child, sig: int) -> None:
        """Signal the child's process group and every descendant seen (some leave the group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)
        for process in list(child.descendants):
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)  # psutil checks it is still the same process

    def _is_ready(self) -> bool:
        child = self._child
        return child is not None and child.ready_t is not None and not child.exited.is_set()

    def _is_ready_or_done(self) -> bool:
        return self._done.is_set() or self._is_ready()

    def _kernel_verdict(self, child: _Child) -> bool | None:
        """Did the kernel's OOM-kill counters (the cgroup's, the machine's) move during its life?"""
        before_cgroup, before_system = child.oom_counts
        after_cgroup = child.cgroup.oom_kills() if child.cgroup else None
        pairs = ((before_cgroup, after_cgroup), (before_system, system_oom_kills()))
        deltas = [
            after - before for before, after in pairs if before is not None and after is not None
        ]
        return any(delta > 0 for delta in deltas) if deltas else None

    def _injected_elsewhere(self, child: _Child) -> dict[str, Any] | None:
        """The `fault_injected` event of a death `harness chaos` (another process) injected."""
        try:
            with open(self.run_dir.path / EVENTS, "rb") as handle:
                handle.seek(child.events_offset)
                data = handle.read()
        except OSError:
            return None
        for line in data.splitlines():
            if EventKind.FAULT_INJECTED.encode() not in line:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                if (
                    event.get("kind") == EventKind.FAULT_INJECTED
                    and event.get("pid") == child.pid
                    and event.get("fault") in _DEATH_FAULTS
                    and event.get("by") != "supervisor"
                ):
                    return event  # type: ignore[no-any-return]
        return None

    def _write_target(self) -> None:
        """target.json: the current child, for `harness chaos` and people (caller holds lock)."""
        child = self._child
        alive = child is not None and not child.exited.is_set()
        origin = url_origin(self.health_url) if self.health_url else None
        write_json_atomic(
            self.run_dir.path / TARGET_FILE,
            {
                "state": self._state,
                "pid": child.pid if alive and child else None,
                "pgid": child.pid if alive and child else None,
                "pid_create_time": child.create_time if alive and child else None,
                "started_t": child.started_t if child else None,
                "ready_t": child.ready_t if alive and child else None,
                "attempt": child.attempt if child else None,
                "restarts": self._restarts,
                "health_url": self.health_url,
                "admin_url": faults_url(origin) if origin else None,
                "admin_token_env": ADMIN_TOKEN_ENV if ADMIN_TOKEN_ENV in self._env else None,
                "supervisor_pid": os.getpid(),
                "command": self.shown_command,
                "log": self.log_path.name,
                "updated_t": time.time(),
            },
        )


def _counted_bytes(memory: TreeMemory) -> int:
    """What --memory-limit counts: the tree's PSS (each shared page once), RSS where PSS is not
    offered."""
    return memory.pss_bytes if memory.pss_bytes is not None else memory.rss_bytes


def _wait_gone(processes: Sequence[psutil.Process], deadline: float) -> None:
    """Wait until none of processes runs (zombies count as gone: an orphan's zombie waits for
    an init that may never reap it) or time.monotonic() passes deadline."""
    while any(_running(process) for process in processes) and time.monotonic() < deadline:
        time.sleep(_GONE_POLL_S)


def _reap_orphans(processes: Sequence[psutil.Process], deadline: float) -> None:
    """Reap the tree members re-parented to this subreaper, so no zombie is left behind; those
    that are not our children are someone else's to reap (ChildProcessError)."""
    waiting = [process.pid for process in processes]
    while waiting and time.monotonic() < deadline:
        still = []
        for pid in waiting:
            with contextlib.suppress(ChildProcessError):
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG) is None:
                    still.append(pid)  # ours, not dead yet (the SIGKILL is on its way)
        waiting = still
        if waiting:
            time.sleep(_GONE_POLL_S)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PRCTL = _libc_prctl()  # resolved once, never in a forked child


def _die_with(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when the thread that spawned it ends, so
    no target outlives a supervisor that was itself killed (even by SIGKILL). None elsewhere."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


def _become_subreaper() -> None:
    """Orphaned descendants of the target re-parent to this process (not init), so their deaths
    can be reaped and read here (Linux only; harmless elsewhere)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_CHILD_SUBREAPER, 1)


def _descendant_exit_status(pid: int) -> int | None:
    """The wait status of a dead tree member: reaped when it is our (orphaned) child, else read
    from its zombie's /proc/PID/stat exit_code field; None while it runs or once it is gone."""
    with contextlib.suppress(ChildProcessError, OSError):
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
        if result is not None:
            if result.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
                return result.si_status
            return result.si_status << 8
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[-1].split()
    if not fields or fields[0] not in (b"Z", b"X") or len(fields) < 50:
        return None
    return int(fields[-1])


def _size(path: os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
