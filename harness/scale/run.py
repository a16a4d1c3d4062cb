"""`harness scale`: a whole batch through a server as production sends it, surviving OOMs.

Generates (or reuses by sha256) the dataset, opens the target (scale.target), samples memory
throughout, injects the requested OOM kills at points of progress (scale.progress, scale.oom),
drives every request (client-side or through the Batch API), checks that every custom_id has
exactly one result, and writes the run directory (and the report, when the reporter is installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

import psutil

from generators import DatasetError
from harness.arrivals import ArrivalSpec
from harness.calibration import measure
from harness.cost import CpuMeter
from harness.driver.batch_api import BatchApiDriver, BatchConfig
from harness.driver.checkpoint import (
    RESULTS,
    Checkpoint,
    IdSet,
    completed_ids,
    results_paths,
    verify,
)
from harness.driver.client import ClientDriver, DriverConfig, DriverStats, TargetRejected
from harness.driver.dataset import (
    Dataset,
    HashInBackground,
    as_batch_file,
    check_unchanged,
    dataset_format,
    from_file,
    generated,
)
from harness.driver.loop import run as run_loop
from harness.driver.monitor import LoopMonitor
from harness.driver.payloads import dataset_ids, pending
from harness.driver.ready import TargetUnavailable
from harness.driver.shards import ShardFailed, ShardPlan, ShardPool
from harness.errors import UserError
from harness.rundir import (
    MANIFEST,
    EventKind,
    RemovedOnFailure,
    RunDir,
    WriteFailed,
    new_run_id,
    read_json_file,
    repair_jsonl,
    utc_iso,
)
from harness.scale.config import (
    ScaleConfig,
    ScaleOutcome,
    config_from_settings,
    config_settings,
    validate_config,
)
from harness.scale.console import Console
from harness.scale.progress import Progress
from harness.scale.story import simulated_story
from harness.scale.target import TargetHandle, TargetOpening, settle_model, shown_command
from harness.supervision.redact import MASK
from harness.supervision.supervisor import TARGET_LOG


def run_scale(config: ScaleConfig, *, out: TextIO = sys.stderr) -> ScaleOutcome:
    """A new scale run in a new (or empty) run directory."""
    validate_config(config)
    path = _new_run_path(config)
    console = Console(out)
    if config.dataset is not None:
        dataset_format(config.dataset)  # a file that is no dataset fails before anything starts
    with RemovedOnFailure(path) as guard:
        run_dir = RunDir(path)
        opening = TargetOpening(config, run_dir, console)  # may boot while the dataset is read
        try:
            dataset = open_dataset(config, console)
            n = dataset.n if config.n is None else config.n
            if n > dataset.n:
                raise UserError(
                    f"--limit {n:,} is more than the {dataset.n:,} requests in {dataset.path}"
                )
            config = replace(config, n=n, run_dir=str(run_dir.path))
            target_url = config.target or (
                shown_command(config.serve) if config.serve else "embedded"
            )
            run_dir.write_manifest(
                kind="scale",
                target_url=target_url,
                dataset=dataset.manifest(),
                seed=config.seed,
                scale=config_settings(config),
                **({"slo": config.slo} if config.slo else {}),
            )
        except BaseException:
            opening.close()
            raise
        return _drive_and_verify(config, run_dir, dataset, console, opening, guard, resumed=False)


def resume_scale(
    path: str | os.PathLike[str],
    *,
    concurrency: int | None = None,
    processes: int | None = None,
    target: str | None = None,
    api_key: str | None = None,
    report: bool | None = None,
    out: TextIO = sys.stderr,
) -> ScaleOutcome:
    """Finish an interrupted run: send only the custom_ids that have no result yet."""
    manifest = read_json_file(Path(path) / MANIFEST)  # nothing made where there is no run
    if manifest is None or "scale" not in manifest:
        raise UserError(
            f"{path} is not a harness scale run directory (no manifest.json with a scale block); "
            "pass the directory a scale run printed"
        )
    config = config_from_settings(manifest["scale"])
    if MASK in config.serve or any(part.endswith("=" + MASK) for part in config.serve):
        raise UserError(
            f"the --serve command of {path} held a secret, which was not stored, so it cannot be "
            "started again; give the server its secret in an environment variable (e.g. "
            "VLLM_API_KEY) and start a new run"
        )
    if concurrency is not None:
        config = replace(config, concurrency=concurrency)
    if processes is not None:  # another process count: each id is still sent once
        config = replace(config, processes=processes)
    if target is not None:
        config = replace(config, target=target)
    if report is not None:
        config = replace(config, report=report)
    config = replace(config, api_key=api_key)
    validate_config(config)
    console = Console(out)
    run_dir = RunDir(path)
    dataset = check_unchanged(manifest["dataset"])
    if dataset.sha256 is None:
        console.say(
            "the run stopped before its dataset's sha256 was recorded; checked its size, mtime "
            "and sampled blocks instead, and hashing it now"
        )
    checkpoints = {path.name for path in results_paths(run_dir.path)}
    for name in os.listdir(run_dir.path):  # a killed run may have torn any of its logs
        if name.endswith(".jsonl") and name not in checkpoints:  # those are repaired and counted
            repair_jsonl(run_dir.path / name)
    resumes = [*manifest.get("resumes", []), {"time": utc_iso(), "pid": os.getpid()}]
    run_dir.update_manifest(resumes=resumes, end_time=None)
    with RemovedOnFailure(run_dir.path) as guard:  # it holds a run: never removed
        opening = TargetOpening(config, run_dir, console)
        return _drive_and_verify(config, run_dir, dataset, console, opening, guard, resumed=True)


def open_dataset(config: ScaleConfig, console: Console) -> Dataset:
    """The run's dataset: the user's --dataset file, or the cached generated one for (n, seed)."""
    if config.dataset is not None:  # --limit N reads N records, no more; hashed while sending
        return from_file(config.dataset, limit=config.n, hashed=False)
    assert config.n is not None
    cache = Path(config.cache_dir or Path(config.runs_root) / "datasets")
    started = time.monotonic()
    with console.bar(f"gen {config.n:,} candidates", config.n) as advance:
        dataset, reused = generated(config.n, config.seed, cache, progress=advance)
    took = time.monotonic() - started
    how = "reused" if reused else f"generated in {took:.1f} s,"
    console.say(f"dataset {how} {dataset.path} (sha256 {dataset.sha256[:16]})")
    return dataset


def _hash_while_sending(
    dataset: Dataset, run_dir: RunDir, console: Console
) -> HashInBackground | None:
    """Hash a dataset not hashed yet on a thread, off the path to the first request, and record
    its sha256 in the manifest when done (a resume checks it)."""
    if dataset.sha256 is not None:
        return None

    def record(digest: str) -> None:
        run_dir.update_manifest(dataset={**dataset.manifest(), "sha256": digest})
        console.say(f"dataset sha256 {digest[:16]} (hashed while sending)")

    return HashInBackground(dataset, record)


def _new_run_path(config: ScaleConfig) -> Path:
    """Where the new run goes; refuses a directory that already holds one."""
    if config.run_dir is None:
        return Path(config.runs_root) / new_run_id("scale")
    path = Path(config.run_dir)
    if (path / RESULTS).exists() or (path / MANIFEST).exists():
        raise UserError(
            f"{path} already holds a run; finish it with harness scale --resume {path}, "
            "or pick another --run-dir"
        )
    return path


def _drive_and_verify(
    config: ScaleConfig,
    run_dir: RunDir,
    dataset: Dataset,
    console: Console,
    opening: TargetOpening,
    guard: RemovedOnFailure,
    *,
    resumed: bool,
) -> ScaleOutcome:
    """Open the target, send every request without a result, verify exactly once, and record
    the outcome in the manifest (and the report). The run directory is kept from the moment
    sending begins, or when the target failed to start (its log says why)."""
    assert config.n is not None
    completed = IdSet()
    if resumed:  # every process's checkpoint, whatever process count wrote it
        torn = sum(repair_jsonl(path) for path in results_paths(run_dir.path))
        completed = completed_ids(run_dir.path)
        run_dir.event(
            EventKind.CHECKPOINT, action="resume", completed=len(completed), torn_bytes=torn
        )
        console.say(f"resuming {run_dir.path}: {len(completed):,} of {config.n:,} already done")
    progress = Progress(config.n, len(completed), run_dir, console)
    hashing: HashInBackground | None = None
    started = time.monotonic()
    try:
        try:
            target = opening.open()
        except UserError:
            if (run_dir.path / TARGET_LOG).exists():
                guard.keep()  # the error points at the target's log
            raise
        try:
            config = settle_model(config, target, dataset, run_dir, console)
            progress.plan_ooms(config.oom_at, target)
            guard.keep()  # sending begins: from here on the run can be resumed
            hashing = _hash_while_sending(dataset, run_dir, console)
            supervisor = target.supervisor
            meter = CpuMeter((lambda: supervisor.pid) if supervisor is not None else None)
            progress.meter = meter
            meter.start()
            try:
                stats = run_loop(
                    _send_requests(config, run_dir, dataset, completed, target, progress)
                )
            finally:
                progress.close()
            run_dir.update_manifest(cost=meter.stop(stats.ok))  # while the target still runs
        finally:
            progress.close()
            opening.close()
    except (TargetUnavailable, TargetRejected, ShardFailed) as exc:
        raise UserError(
            f"{exc}; {progress.done:,} of {config.n:,} results are saved: once the target "
            f"serves again, finish with harness scale --resume {run_dir.path}"
        ) from None
    except WriteFailed as exc:
        raise UserError(
            f"{exc}; every result written before it is whole: free space, then finish with "
            f"harness scale --resume {run_dir.path}"
        ) from None
    except DatasetError as exc:  # every line read whole before the run: the file changed since
        raise UserError(
            f"--dataset: {exc}, though it read whole before the run began: was it changed? "
            f"{progress.done:,} of {config.n:,} results are saved; restore it, then finish with "
            f"harness scale --resume {run_dir.path}"
        ) from None
    except KeyboardInterrupt:
        console.say(f"interrupted; finish with harness scale --resume {run_dir.path}")
        raise
    finally:
        if hashing is not None:
            hashing.wait()  # its sha256 recorded even when the run stops early: a resume checks it
    seconds = time.monotonic() - started
    # the loopback reference (1 s), once the target is stopped: off the path to the first request,
    # on a machine as quiet as before the run; a resumed run's is its last session's
    run_dir.update_manifest(calibration=measure())
    driver_peak = max(progress.driver_peak_rss, psutil.Process().memory_info().rss)
    process_peak = _process_peak_rss()
    expected = itertools.islice(dataset_ids(dataset.path), config.n)
    verification = verify(expected, results_paths(run_dir.path))  # one check over every process
    run_dir.event(EventKind.VERIFICATION, **verification)
    events = list(run_dir.events())
    verdicts = [e for e in events if e["kind"] == EventKind.LOAD_GENERATOR]
    saturated = sum(1 for v in verdicts if v.get("saturated"))
    recoveries = [e for e in events if e["kind"] == EventKind.RECOVERED]
    kills = sum(1 for e in events if e["kind"] == EventKind.EXITED and e.get("cause") == "oom_kill")
    outcome = ScaleOutcome(
        run_dir=run_dir.path,
        mode=config.mode,
        n=config.n,
        seconds=seconds,
        verification=verification,
        failures=dict(stats.failures),
        oom_kills=kills,
        recoveries=recoveries,
        driver_peak_rss_bytes=driver_peak,
        max_failed_rate=config.max_failed_rate,
        resumed_from=progress.start_done,
        processes=config.processes,
        saturated_processes=saturated,
    )
    run_dir.update_manifest(
        end_time=utc_iso(),
        verification=verification,
        outcome={
            "ok": outcome.ok,
            "seconds": round(seconds, 3),
            "sent": progress.done - progress.start_done,
            "requests_per_s": round((progress.done - progress.start_done) / seconds, 2)
            if seconds > 0
            else None,
            "attempts": stats.attempts,
            "failures": outcome.failures,
            "oom_kills": kills,
            "driver_peak_rss_bytes": driver_peak,
            "process_peak_rss_bytes": process_peak,
            "processes": config.processes,
            "client_saturated": saturated > 0,
        },
    )
    if not resumed and config.target is None and not config.serve:  # one session, embedded
        outcome.simulated = simulated_story(run_dir.path, config.speed)
        if outcome.simulated is not None:
            run_dir.update_manifest(simulated=outcome.simulated)
    if config.report:
        outcome.report = _report(run_dir, console)
    run_dir.close()
    console.summary(outcome)
    return outcome


async def _send_requests(
    config: ScaleConfig,
    run_dir: RunDir,
    dataset: Dataset,
    completed: IdSet,
    target: TargetHandle,
    progress: Progress,
) -> DriverStats:
    """Run the driver of the configured mode (in --processes N processes: a ShardPool) with a
    `load` sample each interval."""
    assert config.n is not None
    driver_config = DriverConfig(
        url=target.url,
        concurrency=config.concurrency,
        health_url=target.health_url,
        api_key=config.api_key,
        request_timeout_s=config.request_timeout_s,
        ready_timeout_s=config.ready_timeout_s,
        stream=config.stream,
    )
    if config.mode == "client" and config.processes > 1:
        pool = ShardPool(
            ShardPlan(
                run_dir=str(run_dir.path),
                dataset=str(dataset.path),
                n=config.n,
                shards=config.processes,
                driver=asdict(driver_config),
                model=config.model,
                max_tokens=config.max_tokens,
                window_s=config.sample_interval,
                # a generated dataset holds exactly n requests: no read to find their end
                end=dataset.path.stat().st_size if config.dataset is None else None,
                arrivals=_arrivals(config),
            ),
            on_done=progress.advance,
            on_attempt=target.note_request,
            event=run_dir.event,
        )
        progress.pause, progress.precise = pool.pause, pool.precise
        async with _sampling(run_dir, progress, pool, config.sample_interval):
            return await pool.run()
    with contextlib.closing(Checkpoint(run_dir.path)) as checkpoint:
        if config.mode == "client":
            driver = ClientDriver(
                replace(driver_config, schedule=_schedule(config)),
                run_dir,
                checkpoint,
                on_attempt=target.note_request,
                on_result=progress.result,
            )
            progress.pause = driver.pause
            requests = pending(
                dataset.path,
                config.n,
                completed,
                model=config.model,
                max_tokens=config.max_tokens,
            )
            async with _sampling(run_dir, progress, driver, config.sample_interval):
                return await driver.run(requests)
        batches = BatchApiDriver(
            BatchConfig(
                url=target.url,
                chunk_size=config.chunk_size,
                health_url=target.health_url,
                api_key=config.api_key,
                ready_timeout_s=config.ready_timeout_s,
                model=config.model,
                max_tokens=config.max_tokens,
            ),
            run_dir,
            checkpoint,
            on_progress=target.note_request,  # a poll that saw progress: the target serves
            on_result=progress.result,
            on_running=progress.running,
        )
        cache = config.cache_dir or Path(config.runs_root) / "datasets"
        async with _sampling(run_dir, progress, batches, config.sample_interval):
            batch_file = await asyncio.to_thread(as_batch_file, dataset, cache)
            return await batches.run(batch_file.path, config.n, completed)


@contextlib.asynccontextmanager
async def _sampling(
    run_dir: RunDir,
    progress: Progress,
    driver: ClientDriver | BatchApiDriver | ShardPool,
    interval: float,
) -> Any:
    """`load` samples while the driver runs; the Batch API driver's loop is watched here (the
    client driver and each driver process watch their own)."""
    monitor = LoopMonitor() if isinstance(driver, BatchApiDriver) else None
    watch = asyncio.create_task(monitor.watch()) if monitor is not None else None
    sampler = asyncio.create_task(_sample_load(run_dir, progress, driver, monitor, interval))
    try:
        yield
    finally:
        sampler.cancel()
        if watch is not None and monitor is not None:
            watch.cancel()
            run_dir.event(EventKind.LOAD_GENERATOR, pid=os.getpid(), **monitor.verdict())


def _arrivals(config: ScaleConfig) -> ArrivalSpec | None:
    """Open loop: the schedule of --rate or --trace; None for a closed loop."""
    if config.rate is None and config.trace is None:
        return None
    return ArrivalSpec(
        rate=config.rate,
        arrival=config.arrival,
        burstiness=config.burstiness,
        seed=config.seed,
        trace=config.trace,
    )


def _schedule(config: ScaleConfig) -> Iterator[float] | None:
    """Open loop in one process: the schedule's send offsets; None for a closed loop."""
    arrivals = _arrivals(config)
    return None if arrivals is None else arrivals.offsets()


async def _sample_load(
    run_dir: RunDir,
    progress: Progress,
    driver: ClientDriver | BatchApiDriver | ShardPool,
    monitor: LoopMonitor | None,
    interval: float,
) -> None:
    """A `load` sample each interval: progress, concurrency (requests, or batches queued on the
    server), the driver's own CPU and RSS, and its event loop's figures (driver processes: the
    busiest one's CPU and loop, their RSS added up)."""
    me = psutil.Process()
    me.cpu_percent(None)
    if isinstance(driver, ClientDriver):
        monitor = driver.monitor
    while True:
        await asyncio.sleep(interval)
        rss = me.memory_info().rss
        if progress.meter is not None:
            progress.meter.sample()
        fields: dict[str, Any] = {"cpu_percent": me.cpu_percent(None)}
        if isinstance(driver, ShardPool):
            window = driver.window()
            rss += window.pop("driver_rss_bytes", 0)
            fields.update(window)
        elif monitor is not None and monitor.latest is not None:
            fields.update(monitor.latest.sample())
        progress.driver_peak_rss = max(progress.driver_peak_rss, rss)
        run_dir.sample(
            "load",
            users=driver.concurrency,
            completed=progress.done,
            server_side=progress.server_side,
            total=progress.total,
            driver_rss_bytes=rss,
            **fields,
        )


def _report(run_dir: RunDir, console: Console) -> Path | None:
    """Run the reporter when it is installed; its failure does not lose the run."""
    try:
        from reports.report import write_report
    except ImportError:
        return None
    try:
        return write_report(run_dir.path).html_path
    except Exception as exc:
        console.say(f"report failed: {type(exc).__name__}: {exc}")
        return None


def _process_peak_rss() -> int:
    """This process's RSS high-water mark: VmHWM (ru_maxrss would include a parent's RSS when
    forked and exec'd), or ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
