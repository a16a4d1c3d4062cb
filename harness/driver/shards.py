"""Driver processes: `harness scale --processes N` splits a run by custom_id across N of them.

Each process runs the same ClientDriver over its share of the dataset (`payloads.Share`),
checkpoints to its own results file (`checkpoint.results_path`) and appends its attempts and
events to the run's shared logs (JsonlWriter's lock keeps each line whole across processes).
The parent's ShardPool starts them, gathers their progress (so OOM points and the console see
the whole run), pauses them at an OOM point, feeds their outcomes to the supervisor's recovery
timing, and merges their stats and load figures (each writes its own `load_generator` verdict
event). A process killed outright loses only
what it had not written: a resume (with any process count) sends exactly what is missing. In an
open loop, process k sends at every shards-th arrival of the one schedule from the k-th.

Messages are JSON lines on the children's stdout; the parent writes `pause`, `resume`,
`precise` and `coarse` lines to their stdin, and closes it to stop them (as its own death does).
A child reports its progress every REPORT_INTERVAL_S, or every FLUSH_INTERVAL_S while the parent
asks for precision (near an OOM point, so that it fires where it was set); a success after a
failure is reported at once (the supervisor's recovery timing waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from harness.arrivals import ArrivalSpec
from harness.driver.client import DriverStats
from harness.driver.journal import FLUSH_INTERVAL_S
from harness.driver.payloads import request_end
from harness.driver.ready import TargetUnavailable
from harness.errors import UserError
from harness.interpreter import python_command
from harness.rundir import EventKind, WriteFailed

_ENV = "HARNESS_DRIVER_SHARD"  # a child's plan: the environment, as it may hold the API key
MAX_AUTO = 8
# Progress every 50 ms: each message wakes the parent (~60 us), and at 5 ms they were about a
# tenth of the CPU of two processes; near an OOM point the parent asks for FLUSH_INTERVAL_S.
REPORT_INTERVAL_S = 0.05


def driver_processes(value: str | int) -> int:
    """--processes: a count, or `auto`: half the CPUs this process may use (the target is on
    this machine too: loopback only), at most MAX_AUTO."""
    if value == "auto":
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return max(1, min(MAX_AUTO, (usable or os.cpu_count() or 2) // 2))
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--processes {value!r}: give a number of processes or auto") from None
    if count < 1:
        raise UserError(f"--processes must be 1 or more (or auto), got {count}")
    return count


@dataclass
class ShardPlan:
    """What every driver process of a run shares; each adds its own index."""

    run_dir: str
    dataset: str
    n: int
    shards: int
    driver: dict[str, Any]  # DriverConfig's fields; its concurrency is split between processes
    model: str | None = None
    max_tokens: int | None = None
    window_s: float = 0.5  # how often each process reports its load figures
    end: int | None = None  # payloads.request_end of (dataset, n), found by the pool
    # open loop: process k sends at every shards-th arrival of this schedule from the k-th
    arrivals: ArrivalSpec | None = None


class ShardFailed(UserError):
    """A driver process died or stopped with an error the others did not share."""


@dataclass
class _Child:
    index: int
    process: asyncio.subprocess.Process
    done: int = 0
    window: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] | None = None


class ShardPool:
    """Runs a plan's driver processes to the end; call `run()` on the loop that reads them."""

    def __init__(
        self,
        plan: ShardPlan,
        *,
        on_done: Callable[[int], None] | None = None,
        on_attempt: Callable[[bool, float], None] | None = None,
        event: Callable[..., Any] | None = None,
    ) -> None:
        self.plan = plan
        self._on_done = on_done
        self._on_attempt = on_attempt
        self._event = event
        self._children: list[_Child] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pids(self) -> list[int]:
        """The driver processes' pids, in process order (once started)."""
        return [child.process.pid for child in self._children]

    @property
    def concurrency(self) -> int:
        """Requests in flight allowed, summed over the processes (each halves on an OOM)."""
        return sum(int(c.window.get("users") or 0) for c in self._children)

    async def run(self) -> DriverStats:
        """Start every process, follow them to their end; their merged stats."""
        self._loop = asyncio.get_running_loop()
        plan = asdict(self.plan)
        if plan["end"] is None and self.plan.model is None and self.plan.max_tokens is None:
            plan["end"] = await asyncio.to_thread(request_end, self.plan.dataset, self.plan.n)
        shards = self.plan.shards
        total = int(plan["driver"].get("concurrency") or 32)
        for index in range(shards):
            # --concurrency is what the target sees in all: each process takes its part
            driver = {
                **plan["driver"],
                "concurrency": max(1, (total + shards - 1 - index) // shards),
            }
            child = {**plan, "driver": driver, "shard": index}
            env = {**os.environ, _ENV: orjson.dumps(child).decode()}
            process = await asyncio.create_subprocess_exec(
                *python_command("harness.driver.shards"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            self._children.append(_Child(index, process))
        try:
            await asyncio.gather(*(self._follow(child) for child in self._children))
        finally:
            for child in self._children:
                if child.process.returncode is None:
                    _close(child)
            for child in self._children:
                with contextlib.suppress(ProcessLookupError):
                    await child.process.wait()
        return self._stats()

    def precise(self, on: bool) -> None:
        """Progress from every process at the journal's pace (on) or every REPORT_INTERVAL_S."""
        self._tell(b"precise\n" if on else b"coarse\n")

    def pause(self) -> Callable[[], None]:
        """Every process sends nothing new until resume() (callable from any thread)."""
        self._tell(b"pause\n")
        loop = self._loop
        assert loop is not None
        resumed = False

        def resume() -> None:
            nonlocal resumed
            if not resumed:
                resumed = True
                with contextlib.suppress(RuntimeError):  # the loop has closed: nothing waits
                    loop.call_soon_threadsafe(self._tell, b"resume\n")

        return resume

    def window(self) -> dict[str, Any]:
        """The latest load figures of the processes, merged: the worst of each (a run is only
        as unsaturated as its busiest process), CPU and RSS of the busiest and in total."""
        windows = [c.window for c in self._children if c.window]
        if not windows:
            return {}
        worst = max(windows, key=lambda w: w.get("cpu_percent") or 0.0)
        lags = [w["loop_lag_p99_s"] for w in windows if w.get("loop_lag_p99_s") is not None]
        return {
            "cpu_percent": worst.get("cpu_percent"),
            "cpu_percent_total": sum(w.get("cpu_percent") or 0.0 for w in windows),
            "driver_rss_bytes": sum(w.get("driver_rss_bytes") or 0 for w in windows),
            "loop_busy": max(w.get("loop_busy") or 0.0 for w in windows),
            "loop_lag_p99_s": max(lags) if lags else None,
            "loop_lag_max_s": max(w.get("loop_lag_max_s") or 0.0 for w in windows),
            "client_saturated": any(w.get("client_saturated") for w in windows),
            "processes": len(windows),
        }

    # internals

    def _tell(self, line: bytes) -> None:
        for child in self._children:
            stdin = child.process.stdin
            if stdin is not None and not stdin.is_closing():
                with contextlib.suppress(ConnectionError, RuntimeError):
                    stdin.write(line)

    async def _follow(self, child: _Child) -> None:
        stdout = child.process.stdout
        assert stdout is not None
        while line := await stdout.readline():
            message = orjson.loads(line)
            if "done" in message:
                delta, child.done = message["done"] - child.done, message["done"]
                self._attempts(message)
                if delta and self._on_done is not None:
                    self._on_done(delta)
            elif "window" in message:
                child.window = message["window"]
            elif "final" in message:
                child.final = message["final"]
        code = await child.process.wait()
        if code != 0 and (child.final is None or child.final.get("error") is None):
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
            child.final = {"error": f"driver process {child.index} died ({how})", "kind": "died"}
            if self._event is not None:
                self._event(EventKind.DRIVER_PROCESS_DIED, process=child.index, exit=code)
        if child.final and child.final.get("kind") in ("TargetRejected", "TargetUnavailable"):
            for other in self._children:  # the target refuses them all: stop the others too
                if other is not child and other.process.returncode is None:
                    _close(other)

    def _attempts(self, message: dict[str, Any]) -> None:
        note = self._on_attempt
        if note is None:
            return
        for t in message.get("fail_t") or ():
            note(False, t)
        for t in message.get("ok_t") or ():
            note(True, t)

    def _stats(self) -> DriverStats:
        stats = DriverStats()
        errors: list[dict[str, Any]] = []
        for child in self._children:
            final = child.final or {}
            part = final.get("stats")
            if part is not None:
                stats.done += part["done"]
                stats.ok += part["ok"]
                stats.failed += part["failed"]
                stats.attempts += part["attempts"]
                stats.failures += Counter(part["failures"])
                stats.outages += part["outages"]
                stats.seconds = max(stats.seconds, part["seconds"])
            if final.get("error"):
                errors.append(final)
        from generators import DatasetError  # the parent has read the dataset already

        for kinds, error in (
            (("TargetRejected", "TargetUnavailable"), TargetUnavailable),
            (("WriteFailed",), WriteFailed),
            (("DatasetError",), DatasetError),
        ):
            first = next((e for e in errors if e["kind"] in kinds), None)
            if first is not None:
                raise error(first["error"])
        if errors:
            raise ShardFailed("; ".join(e["error"] for e in errors))
        return stats


def _close(child: _Child) -> None:
    """Stop a process: it finishes writing what it has and exits (its stdin's end says so)."""
    stdin = child.process.stdin
    if stdin is not None and not stdin.is_closing():
        stdin.close()


# -- the child ------------------------------------------------------------------------------


class _Reporter:
    """A child's messages to the parent: progress and outcomes at most once per interval (the
    journal's while the parent asks for precision), load figures each window, the final stats."""

    def __init__(self) -> None:
        self.done = 0
        self.interval = REPORT_INTERVAL_S
        self._ok_first = math.inf  # the earliest and latest success of the step
        self._ok_last = -math.inf
        self._fail_t: list[float] = []
        self._failing = False  # a failure was seen since the last success
        self._scheduled: asyncio.TimerHandle | None = None

    def precise(self, on: bool) -> None:
        self.interval = FLUSH_INTERVAL_S if on else REPORT_INTERVAL_S
        if on and self._scheduled is not None:  # not a coarse interval more: what waits goes now
            self.flush()

    def result(self, custom_id: str, ok: bool) -> None:
        self.done += 1
        if self._scheduled is None:
            self._schedule()

    def attempt(self, ok: bool, t: float) -> None:
        # called for every attempt: comparisons, no calls (a success's result, written within
        # the journal's interval, schedules the report that carries it)
        if ok:
            if t < self._ok_first:
                self._ok_first = t
            if t > self._ok_last:
                self._ok_last = t
            if self._failing:  # the target serves again: the parent hears it now
                self._failing = False
                self.flush()
            return
        self._fail_t.append(t)
        self._failing = True
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        ok_t = [self._ok_first, self._ok_last] if self._ok_last >= self._ok_first else None
        self.send({"done": self.done, "ok_t": ok_t, "fail_t": self._fail_t or None})
        self._ok_first, self._ok_last, self._fail_t = math.inf, -math.inf, []

    @staticmethod
    def send(message: dict[str, Any]) -> None:
        data = memoryview(orjson.dumps(message) + b"\n")
        while data:
            data = data[os.write(1, data) :]


def _child() -> int:
    """One driver process: its share of the plan, to the end or to the parent's stop."""
    from harness.driver.checkpoint import Checkpoint, completed_ids
    from harness.driver.client import ClientDriver, DriverConfig, TargetRejected
    from harness.driver.loop import run as run_loop
    from harness.driver.payloads import Share, pending
    from harness.rundir import RunDir

    plan = orjson.loads(os.environ[_ENV])
    shard, shards = plan["shard"], plan["shards"]
    run_dir = RunDir(plan["run_dir"])
    checkpoint = Checkpoint(run_dir.path, shard=shard)
    requests = pending(
        plan["dataset"],
        plan["n"],
        completed_ids(run_dir.path),
        model=plan["model"],
        max_tokens=plan["max_tokens"],
        share=Share(shard, shards, plan["end"]),
    )
    reporter = _Reporter()
    schedule = None
    if plan["arrivals"] is not None:
        arrivals = ArrivalSpec(**plan["arrivals"]).part(shard, shards)
        schedule = (offset for _, offset in arrivals)
    driver = ClientDriver(
        DriverConfig(**{**plan["driver"], "schedule": schedule}),
        run_dir,
        checkpoint,
        on_attempt=reporter.attempt,
        on_result=reporter.result,
    )
    final: dict[str, Any]
    try:
        stats = run_loop(_drive(driver, requests, reporter, plan["window_s"]))
        final = {
            "stats": {**vars(stats), "failures": dict(stats.failures)}
        }  # asdict breaks Counter
    except (TargetRejected, TargetUnavailable, WriteFailed, UserError) as exc:
        final = {"error": str(exc), "kind": type(exc).__name__}
    except Exception as exc:
        from generators import DatasetError  # loaded already when a reader raised it

        if not isinstance(exc, DatasetError):
            raise
        final = {"error": str(exc), "kind": "DatasetError"}
    except asyncio.CancelledError:
        final = {"error": f"driver process {shard} was stopped", "kind": "stopped"}
    finally:
        checkpoint.close()
        run_dir.close()
    reporter.flush()
    _Reporter.send({"final": final})
    return 0 if "stats" in final else 2


async def _drive(driver: Any, requests: Any, reporter: _Reporter, window_s: float) -> Any:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    threading.Thread(target=_control, args=(loop, driver, reporter, main), daemon=True).start()
    windows = asyncio.create_task(_windows(driver, window_s))
    try:
        return await driver.run(requests)
    finally:
        windows.cancel()


def _control(
    loop: asyncio.AbstractEventLoop, driver: Any, reporter: _Reporter, main: asyncio.Task[Any]
) -> None:
    """The parent's orders on stdin; its end (closed, or the parent died) stops this process."""
    resumes: list[Callable[[], None]] = []

    def pause() -> None:
        resumes.append(driver.pause())

    def resume() -> None:
        if resumes:
            resumes.pop(0)()

    orders = {
        b"pause": pause,
        b"resume": resume,
        b"precise": lambda: reporter.precise(True),
        b"coarse": lambda: reporter.precise(False),
    }
    pending = b""
    # os.read, not sys.stdin: a thread blocked in a buffered read would stall interpreter exit
    while chunk := os.read(0, 4096):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            order = orders.get(line)
            if order is not None:
                with contextlib.suppress(RuntimeError):  # the loop has ended
                    loop.call_soon_threadsafe(order)
    with contextlib.suppress(RuntimeError):  # the loop has ended: nothing to stop
        loop.call_soon_threadsafe(main.cancel)


async def _windows(driver: Any, window_s: float) -> None:
    """This process's load figures each window: CPU, RSS, concurrency and the loop monitor's."""
    import psutil

    me = psutil.Process()
    me.cpu_percent(None)
    while True:
        await asyncio.sleep(window_s)
        window = driver.monitor.latest
        _Reporter.send(
            {
                "window": {
                    "t": time.time(),
                    "users": driver.concurrency,
                    "cpu_percent": me.cpu_percent(None),
                    "driver_rss_bytes": me.memory_info().rss,
                    **(window.sample() if window is not None else {}),
                }
            }
        )


if __name__ == "__main__":
    code = _child()
    sys.stdout.flush()
    sys.stderr.flush()
    # as multiprocessing's children end: the run's files are closed, and tearing the
    # interpreter down would only free memory (10-30 ms of CPU a process)
    os._exit(code)
