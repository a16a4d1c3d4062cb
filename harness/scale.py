"""`harness scale`: a whole batch through a server as production sends it, surviving OOMs.

Generates (or reuses by sha256) the dataset, starts the supervised reference server unless a
target is given, samples memory throughout, injects the requested OOM kills at points of progress,
drives every request (client-side or through the Batch API), checks that every custom_id has
exactly one result, and writes the run directory (and the report, when the reporter is installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import resource
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson
import psutil

import generators
from harness.calibration import measure
from harness.driver.batch_api import BatchApiDriver, BatchConfig
from harness.driver.checkpoint import RESULTS, Checkpoint, IdSet, dataset_ids, verify
from harness.driver.client import ClientDriver, DriverConfig, DriverStats, TargetRejected
from harness.driver.dataset import (
    Dataset,
    as_batch_file,
    check_unchanged,
    from_file,
    generated,
)
from harness.driver.incidents import import_supervisor_incidents
from harness.driver.ladder import extrapolate, ladder_table, rung_figures
from harness.driver.loop import run as run_loop
from harness.driver.payloads import pending
from harness.driver.ready import TargetUnavailable
from harness.errors import UserError
from harness.net import listening_pid, require_loopback_url, url_origin
from harness.progress import interactive
from harness.rundir import (
    MANIFEST,
    SUMMARY,
    RunDir,
    WriteFailed,
    new_run_id,
    repair_jsonl,
    utc_iso,
    write_json_atomic,
)
from harness.supervision.redact import MASK, redact_command
from harness.supervision.supervisor import ADMIN_TOKEN_ENV, Supervisor
from harness.supervision.victim import DEFAULT_VICTIM
from harness.targets import (
    Target,
    choose_model,
    probe,
    serve_context,
    serve_health_path,
    serve_url,
)

MODES = ("client", "batch-api")
_RUNG_ENV = "HARNESS_LADDER_RUNG"


@dataclass
class ScaleConfig:
    """One scale run; stored in the manifest under `scale` so `--resume` can finish it."""

    n: int | None = 10_000  # None with a dataset: all of it
    mode: str = "client"
    target: str | None = None  # None: the embedded reference server (or the --serve command's)
    serve: tuple[str, ...] = ()  # a server command scale starts and supervises itself
    supervisor: str | None = None  # the run directory of a separate `harness supervise`
    dataset: str | None = None  # None: generated for (n, seed) and cached
    seed: int = 0
    oom_at: tuple[float, ...] = ()  # fractions of the batch, e.g. (0.25, 0.6)
    victim: str | int = DEFAULT_VICTIM  # whom an --oom-at kill hits in a supervised tree
    speed: float | None = None  # embedded server latency divisor; None: no simulated delay
    concurrency: int = 64
    chunk_size: int = 5_000  # batch-api: requests per uploaded batch
    model: str | None = None
    max_tokens: int | None = None  # None: what the dataset says
    api_key: str | None = None
    server_args: tuple[str, ...] = ()
    sample_interval: float = 0.5
    request_timeout_s: float = 300.0
    ready_timeout_s: float = 120.0
    max_failed_rate: float = 0.0
    runs_root: str = "runs"
    cache_dir: str | None = None  # generated datasets; default <runs_root>/datasets
    run_dir: str | None = None
    report: bool = True


@dataclass
class ScaleOutcome:
    """What a run found; `ok` when nothing was lost or duplicated and failures stayed in bounds."""

    run_dir: Path
    mode: str
    n: int
    seconds: float
    verification: dict[str, int]
    failures: dict[str, int]
    oom_kills: int
    recoveries: list[dict[str, Any]]
    driver_peak_rss_bytes: int
    max_failed_rate: float
    report: Path | None = None
    resumed_from: int = 0

    @property
    def ok(self) -> bool:
        v = self.verification
        allowed = self.max_failed_rate * max(1, v["expected"])
        return v["lost"] == 0 and v["duplicated"] == 0 and v["failed"] <= allowed


def run_scale(config: ScaleConfig, *, out: TextIO = sys.stderr) -> ScaleOutcome:
    """A new scale run in a new (or empty) run directory."""
    _check(config)
    path = _new_run_path(config)
    console = _Console(out)
    dataset = _dataset(config, console)
    n = dataset.n if config.n is None else config.n
    if n > dataset.n:
        raise UserError(f"--limit {n:,} is more than the {dataset.n:,} requests in {dataset.path}")
    run_dir = RunDir(path)
    config = replace(config, n=n, run_dir=str(run_dir.path))
    run_dir.write_manifest(
        kind="scale",
        target_url=config.target or (_shown(config.serve) if config.serve else "embedded"),
        dataset=dataset.manifest(),
        seed=config.seed,
        calibration=measure(),
        scale=_stored(config),
    )
    return _execute(config, run_dir, dataset, console, resumed=False)


def resume_scale(
    path: str | os.PathLike[str],
    *,
    concurrency: int | None = None,
    target: str | None = None,
    api_key: str | None = None,
    report: bool | None = None,
    out: TextIO = sys.stderr,
) -> ScaleOutcome:
    """Finish an interrupted run: send only the custom_ids that have no result yet."""
    run_dir = RunDir(path)
    manifest = run_dir.read_json(MANIFEST)
    if manifest is None or "scale" not in manifest:
        raise UserError(
            f"{path} is not a harness scale run directory (no manifest.json with a scale block); "
            "pass the directory a scale run printed"
        )
    known = {f.name for f in fields(ScaleConfig)}
    stored = {k: v for k, v in manifest["scale"].items() if k in known}
    stored["oom_at"] = tuple(stored.get("oom_at") or ())
    stored["server_args"] = tuple(stored.get("server_args") or ())
    stored["serve"] = tuple(stored.get("serve") or ())
    if MASK in stored["serve"] or any(part.endswith("=" + MASK) for part in stored["serve"]):
        raise UserError(
            f"the --serve command of {path} held a secret, which was not stored, so it cannot be "
            "started again; give the server its secret in an environment variable (e.g. "
            "VLLM_API_KEY) and start a new run"
        )
    config = ScaleConfig(**stored)
    if concurrency is not None:
        config = replace(config, concurrency=concurrency)
    if target is not None:
        config = replace(config, target=target)
    if report is not None:
        config = replace(config, report=report)
    config = replace(config, api_key=api_key)
    _check(config)
    dataset = check_unchanged(manifest["dataset"])
    for name in os.listdir(run_dir.path):  # a killed run may have torn any of its logs
        if name.endswith(".jsonl") and name != RESULTS:  # the checkpoint repairs (and reports) it
            repair_jsonl(run_dir.path / name)
    resumes = [*manifest.get("resumes", []), {"time": utc_iso(), "pid": os.getpid()}]
    run_dir.update_manifest(resumes=resumes, end_time=None)
    return _execute(config, run_dir, dataset, _Console(out), resumed=True)


def run_ladder(
    sizes: list[int], config: ScaleConfig, *, target_n: int = 170_000, out: TextIO = sys.stderr
) -> dict[str, Any]:
    """Run each size in its own process and sub run directory, fit each figure against N, and
    extrapolate to target_n. Writes ladder.json beside the rungs and prints the table."""
    try:
        from reports.report import write_summary
    except ImportError:
        raise UserError("--ladder needs the reporter (the reports package) installed") from None
    if len(set(sizes)) < 2:
        raise UserError("--ladder needs at least two sizes, e.g. --ladder 5k,10k,50k")
    _check(config)
    root = Path(config.run_dir or Path(config.runs_root) / new_run_id("ladder"))
    console = _Console(out)
    if config.dataset is None:  # generated here, so no rung's peak RSS includes generating it
        for n in sorted(set(sizes)):
            _dataset(replace(config, n=n), console)
    rungs = []
    for n in sorted(set(sizes)):
        run_dir = root / f"n{n}"
        console.say(f"ladder rung N={n:,} in {run_dir}")
        # Its own process, so its memory figures are its own, not what earlier rungs left.
        rung = replace(config, n=n, run_dir=str(run_dir))
        done = subprocess.run(
            [sys.executable, "-c", "import sys, harness.scale as s; sys.exit(s._rung_main())"],
            env={**os.environ, _RUNG_ENV: orjson.dumps(asdict(rung)).decode()},
            check=False,
        )
        outcome = (_load_json(run_dir / MANIFEST) or {}).get("outcome")
        if outcome is None:
            raise UserError(f"ladder rung N={n:,} did not finish (exit {done.returncode})")
        summary = _load_json(run_dir / SUMMARY) or write_summary(run_dir).summary
        figures = rung_figures(summary, outcome["seconds"], outcome["process_peak_rss_bytes"])
        rungs.append({"n": n, "run_dir": str(run_dir), "ok": outcome["ok"], **figures})
    document = {
        "kind": "scale-ladder",
        "mode": config.mode,
        "target_n": target_n,
        "rungs": rungs,
        "fits": extrapolate(rungs, target_n),
        "time": utc_iso(),
    }
    write_json_atomic(root / "ladder.json", document)
    for line in ladder_table(document):
        print(line, file=out)
    console.say(f"ladder written to {root / 'ladder.json'}")
    return document


def _rung_main() -> int:
    """One ladder rung in a fresh process; its settings come in an environment variable (which,
    unlike the command line, other users cannot read), as the API key may be among them."""
    stored = orjson.loads(os.environ[_RUNG_ENV])
    stored["oom_at"] = tuple(stored["oom_at"])
    stored["server_args"] = tuple(stored["server_args"])
    stored["serve"] = tuple(stored["serve"])
    try:
        return 0 if run_scale(ScaleConfig(**stored)).ok else 1
    except UserError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2


def _load_json(path: Path) -> dict[str, Any] | None:
    """A JSON document of the run directory, or None when it is missing or torn."""
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def _check(config: ScaleConfig) -> None:
    if config.mode not in MODES:
        raise UserError(f"--mode {config.mode!r} is unknown; use client or batch-api")
    if config.n is not None and config.n <= 0:
        raise UserError(f"--n must be a positive number of requests, got {config.n}")
    if config.concurrency < 1:
        raise UserError(f"--concurrency must be 1 or more, got {config.concurrency}")
    if config.chunk_size < 1:
        raise UserError(f"--chunk-size must be 1 or more, got {config.chunk_size}")
    if config.max_tokens is not None and config.max_tokens < 1:
        raise UserError(f"--max-tokens must be 1 or more, got {config.max_tokens}")
    if config.serve and config.supervisor is not None:
        raise UserError("--serve starts its own supervisor; drop --supervisor (or --serve)")
    if config.target is not None:
        require_loopback_url(config.target, "--target")
    if config.serve and config.target is None and serve_url(config.serve) is None:
        raise UserError(
            f"cannot tell where {config.serve[0]!r} will listen; give its URL with --target "
            "http://127.0.0.1:PORT (or put --port PORT in its command)"
        )
    external = config.target is not None and not config.serve and config.supervisor is None
    if external and config.oom_at and not os.environ.get(ADMIN_TOKEN_ENV):
        raise UserError(
            f"--oom-at with --target needs the server under a supervisor: start it with "
            f"--serve -- COMMAND, or point --supervisor at the run directory of its "
            f"`harness supervise` (or give the reference server's admin token in {ADMIN_TOKEN_ENV})"
        )
    if any(not 0 < p < 1 for p in config.oom_at):
        raise UserError("--oom-at points must lie strictly between 0% and 100%, e.g. 25%,60%")


def _new_run_path(config: ScaleConfig) -> Path:
    """Where the new run goes; refuses a directory that already holds one."""
    if config.run_dir is None:
        return Path(config.runs_root) / new_run_id("scale")
    path = Path(config.run_dir)
    if (path / "results.jsonl").exists() or (path / MANIFEST).exists():
        raise UserError(
            f"{path} already holds a run; finish it with harness scale --resume {path}, "
            "or pick another --run-dir"
        )
    return path


def _dataset(config: ScaleConfig, console: _Console) -> Dataset:
    if config.dataset is not None:
        return from_file(config.dataset, limit=config.n)  # --limit N reads N records, no more
    assert config.n is not None
    cache = Path(config.cache_dir or Path(config.runs_root) / "datasets")
    started = time.monotonic()
    with console.bar(f"gen {config.n:,} candidates", config.n) as advance:
        dataset, reused = generated(config.n, config.seed, cache, progress=advance)
    took = time.monotonic() - started
    how = "reused" if reused else f"generated in {took:.1f} s,"
    console.say(f"dataset {how} {dataset.path} (sha256 {dataset.sha256[:16]})")
    return dataset


def _stored(config: ScaleConfig) -> dict[str, Any]:
    stored = asdict(config)
    stored.pop("api_key")  # a secret does not belong in a file that gets shared
    stored["serve"] = redact_command(config.serve)  # nor does `--api-key K` of a server command
    return stored


def _shown(command: tuple[str, ...]) -> str:
    """A server command as logs and the manifest show it: its secrets masked."""
    return shlex.join(redact_command(command))


def _execute(
    config: ScaleConfig, run_dir: RunDir, dataset: Dataset, console: _Console, *, resumed: bool
) -> ScaleOutcome:
    assert config.n is not None
    checkpoint = Checkpoint(run_dir.path)
    completed = checkpoint.completed() if resumed else IdSet()
    if resumed:
        run_dir.event(
            "checkpoint",
            action="resume",
            completed=len(completed),
            torn_bytes=checkpoint.torn_bytes,
        )
        console.say(f"resuming {run_dir.path}: {len(completed):,} of {config.n:,} already done")
    progress = _Progress(config.n, len(completed), run_dir, console)
    started = time.monotonic()
    try:
        with _open_target(config, run_dir, console) as target:
            config = _settle_model(config, target, dataset, run_dir, console)
            progress.plan_ooms(config.oom_at, target)
            try:
                stats = run_loop(
                    _drive(config, run_dir, checkpoint, dataset, completed, target, progress)
                )
            finally:
                progress.close()
    except (TargetUnavailable, TargetRejected) as exc:
        raise UserError(
            f"{exc}; {progress.done:,} of {config.n:,} results are saved: once the target "
            f"serves again, finish with harness scale --resume {run_dir.path}"
        ) from None
    except WriteFailed as exc:
        raise UserError(
            f"{exc}; every result written before it is whole: free space, then finish with "
            f"harness scale --resume {run_dir.path}"
        ) from None
    except KeyboardInterrupt:
        console.say(f"interrupted; finish with harness scale --resume {run_dir.path}")
        raise
    seconds = time.monotonic() - started
    driver_peak = max(progress.driver_peak_rss, psutil.Process().memory_info().rss)
    process_peak = _process_peak_rss()
    checkpoint.close()
    verification = verify(itertools.islice(dataset_ids(dataset.path), config.n), checkpoint.path)
    run_dir.event("verification", **verification)
    events = list(run_dir.events())
    recoveries = [e for e in events if e["kind"] == "recovered"]
    kills = sum(1 for e in events if e["kind"] == "exited" and e.get("cause") == "oom_kill")
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
        },
    )
    if config.report:
        outcome.report = _report(run_dir, console)
    run_dir.close()
    console.summary(outcome)
    return outcome


async def _drive(
    config: ScaleConfig,
    run_dir: RunDir,
    checkpoint: Checkpoint,
    dataset: Dataset,
    completed: IdSet,
    target: _Target,
    progress: _Progress,
) -> DriverStats:
    """Run the driver of the configured mode with a `load` sample each interval."""
    assert config.n is not None
    if config.mode == "client":
        driver: ClientDriver | BatchApiDriver = ClientDriver(
            DriverConfig(
                url=target.url,
                concurrency=config.concurrency,
                health_url=target.health_url,
                api_key=config.api_key,
                request_timeout_s=config.request_timeout_s,
                ready_timeout_s=config.ready_timeout_s,
            ),
            run_dir,
            checkpoint,
            on_attempt=target.note_request,
            on_result=progress.result,
        )
    else:
        driver = BatchApiDriver(
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
    if isinstance(driver, ClientDriver):
        progress.pause = driver.pause
    sampler = asyncio.create_task(_sample_load(run_dir, progress, driver, config.sample_interval))
    try:
        if isinstance(driver, ClientDriver):
            requests = pending(
                dataset.path,
                config.n,
                completed,
                model=config.model,
                max_tokens=config.max_tokens,
            )
            return await driver.run(requests)
        cache = config.cache_dir or Path(config.runs_root) / "datasets"
        batch_file = await asyncio.to_thread(as_batch_file, dataset, cache)
        return await driver.run(batch_file.path, config.n, completed)
    finally:
        sampler.cancel()


async def _sample_load(
    run_dir: RunDir, progress: _Progress, driver: ClientDriver | BatchApiDriver, interval: float
) -> None:
    """A `load` sample each interval: progress, concurrency (requests, or batches queued on the
    server), and the driver's own CPU and RSS."""
    me = psutil.Process()
    me.cpu_percent(None)
    while True:
        await asyncio.sleep(interval)
        rss = me.memory_info().rss
        progress.driver_peak_rss = max(progress.driver_peak_rss, rss)
        run_dir.sample(
            "load",
            users=driver.concurrency,
            completed=progress.done,
            server_side=progress.server_side,
            total=progress.total,
            cpu_percent=me.cpu_percent(None),
            driver_rss_bytes=rss,
        )


# -- the target ----------------------------------------------------------------------------


@dataclass
class _Target:
    """Where requests go, how to tell its supervisor about them, and how to inject an OOM."""

    url: str
    health_url: str | None
    inject: Callable[[], None] | None = None
    supervisor: Supervisor | None = None
    info: Target | None = None  # what the probe learned; None for the embedded server

    def note_request(self, ok: bool, t: float) -> None:
        """Feed the supervisor's recovery timing (first success after a death)."""
        if self.supervisor is not None:
            self.supervisor.note_request(ok, t)


@contextlib.contextmanager
def _open_target(config: ScaleConfig, run_dir: RunDir, console: _Console) -> Iterator[_Target]:
    if config.serve:
        with _served_target(config, run_dir, console) as target:
            yield target
    elif config.target is None and config.supervisor is None:
        with _embedded_target(config, run_dir) as target:
            yield target
    else:
        with _external_target(config, run_dir, console) as target:
            yield target


@contextlib.contextmanager
def _embedded_target(config: ScaleConfig, run_dir: RunDir) -> Iterator[_Target]:
    from harness.supervision.embedded import EmbeddedServer

    speed = "max" if config.speed is None else repr(config.speed)
    server_args = ["--oom", "kill", "--speed", speed, *config.server_args]
    with EmbeddedServer(
        run_dir,
        server_args=server_args,
        sample_interval=config.sample_interval,
        ready_timeout=config.ready_timeout_s,
        max_restarts=10 + len(config.oom_at),  # rehearsed deaths do not use up real ones
    ) as server:

        def inject() -> None:
            supervisor = server.supervisor
            supervisor.wait_ready(config.ready_timeout_s)
            victim = supervisor.pid
            if server.inject({"fault": "oom"}).get("mode") == "error":
                return  # --oom error: in-flight requests failed, the server lives on
            _wait_successor(supervisor, victim, config.ready_timeout_s)

        yield _Target(
            url=server.url,
            health_url=server.url + "/health/ready",
            inject=inject,
            supervisor=server.supervisor,
        )


@contextlib.contextmanager
def _served_target(config: ScaleConfig, run_dir: RunDir, console: _Console) -> Iterator[_Target]:
    """The user's own server command, started and kept alive by a Supervisor; an OOM is
    rehearsed as the kernel does it: SIGKILL, no warning, recorded as an injected oom_kill."""
    from harness.supervision.samplers import start_sampling

    url = (config.target or serve_url(config.serve) or "").rstrip("/")
    require_loopback_url(url, "the --serve command's URL")
    health_url = url + serve_health_path(config.serve)
    supervisor = Supervisor(
        config.serve, run_dir, health_url=health_url, max_restarts=10 + len(config.oom_at)
    )
    console.say(f"starting {_shown(config.serve)}; ready when {health_url} answers 200")
    supervisor.start()
    sampler = None
    try:
        if not supervisor.wait_ready(config.ready_timeout_s):
            last = supervisor.last_exit
            why = f"it exited ({last['message']})" if last else "it did not answer"
            raise UserError(
                f"the --serve command was not ready within {config.ready_timeout_s:g} s: {why}; "
                f"see its log, {supervisor.log_path}"
            )
        info = probe(url, model=config.model, api_key=config.api_key)
        context = serve_context(config.serve)
        if info.max_model_len is None and context is not None:
            info = replace(info, max_model_len=context[0], max_model_len_source=context[1])
        console.say(f"target {info.describe()}")
        sampler = start_sampling(
            run_dir,
            interval=config.sample_interval,
            pid=lambda: supervisor.pid,
            metrics_url=info.metrics_url,
            metrics_grace_s=config.ready_timeout_s,
        )

        def inject() -> None:
            supervisor.wait_ready(config.ready_timeout_s)
            leader = supervisor.pid
            if supervisor.inject_oom_kill(config.victim) is not None:
                _wait_successor(supervisor, leader, config.ready_timeout_s)

        yield _Target(
            url=url, health_url=health_url, inject=inject, supervisor=supervisor, info=info
        )
    finally:
        if sampler is not None:
            sampler.stop()
        supervisor.stop()


@contextlib.contextmanager
def _external_target(config: ScaleConfig, run_dir: RunDir, console: _Console) -> Iterator[_Target]:
    """A server already running; with --supervisor, the one a separate `harness supervise` keeps
    alive, whose deaths scale then times against its own requests (one incident, one record)."""
    from harness.supervision.chaos import inject as chaos_inject
    from harness.supervision.chaos import read_target
    from harness.supervision.samplers import start_sampling

    supervisor_dir = None
    health_url = None
    if config.supervisor is not None:
        if not (Path(config.supervisor) / "target.json").is_file():
            raise UserError(
                f"--supervisor {config.supervisor}: no target.json there; pass the --run-dir of "
                "a running `harness supervise`"
            )
        supervisor_dir = RunDir(config.supervisor)
        health_url = read_target(supervisor_dir).health_url
    url = (config.target or (url_origin(health_url) if health_url else "")).rstrip("/")
    if not url:
        raise UserError("the supervised target has no health URL; give its URL with --target")
    require_loopback_url(url, "--target")
    info = probe(url, model=config.model, api_key=config.api_key)
    console.say(f"target {info.describe()}")
    sampler = start_sampling(
        run_dir,
        interval=config.sample_interval,
        pid=_ListeningPid(url),  # the target's process tree, as Locust samples it
        metrics_url=info.metrics_url,
        metrics_grace_s=config.ready_timeout_s,
    )
    started_t = time.time()
    inject = _admin_inject(url, run_dir)
    if supervisor_dir is not None:
        sup = supervisor_dir

        def inject() -> None:
            _wait_target_ready(sup, config.ready_timeout_s)
            chaos_inject(sup, "kill", victim=config.victim)  # copied here after the run

    try:
        yield _Target(url=url, health_url=health_url or info.health_url, inject=inject, info=info)
    finally:
        sampler.stop()
        if supervisor_dir is not None:
            deaths = import_supervisor_incidents(supervisor_dir.path, run_dir, started_t)
            console.say(
                f"{deaths} target death(s) recorded by the supervisor in {config.supervisor}"
            )


class _ListeningPid:
    """The pid listening on the URL's port, looked up again only once that process is gone."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._process: psutil.Process | None = None

    def __call__(self) -> int | None:
        if self._process is not None and self._process.is_running():
            return self._process.pid
        pid = listening_pid(self._url)
        try:
            self._process = psutil.Process(pid) if pid is not None else None
        except psutil.Error:
            self._process = None
        return pid


def _wait_successor(supervisor: Supervisor, leader: int | None, timeout_s: float) -> None:
    """Return once the killed child is gone, so the next injection hits its successor."""
    deadline = time.monotonic() + timeout_s
    while leader is not None and supervisor.pid == leader and time.monotonic() < deadline:
        time.sleep(0.02)


def _wait_target_ready(supervisor_dir: RunDir, timeout_s: float) -> None:
    from harness.supervision.chaos import read_target

    deadline = time.monotonic() + timeout_s
    while not read_target(supervisor_dir).ready and time.monotonic() < deadline:
        time.sleep(0.05)


def _settle_model(
    config: ScaleConfig, target: _Target, dataset: Dataset, run_dir: RunDir, console: _Console
) -> ScaleConfig:
    """The model a real target serves (one: use it; several: ask), and whether the requests fit
    its context; stored in the manifest so a resume sends the same."""
    info = target.info
    if info is None:
        return config
    model = config.model
    if model is None:
        first = next(generators.iter_requests(dataset.path), None)
        dataset_model = first[1].get("model") if first else None
        if dataset_model not in info.models:
            model = choose_model(info, None)
            console.say(f"model {model} (the one {info.url} serves)")
    if model != config.model:
        config = replace(config, model=model)
        run_dir.update_manifest(scale=_stored(config))
    from harness.driver.limits import check_context

    assert config.n is not None
    requests = itertools.islice(
        generators.iter_requests(dataset.path, model=model, max_tokens=config.max_tokens),
        config.n,
    )
    check = check_context(info, model or "", requests, api_key=config.api_key)
    if check is None:
        console.say("max_model_len: unknown (the target does not say); prompts not checked")
        return config
    run_dir.event("context_check", **asdict(check))
    console.say(check.line())
    if check.exceeding == check.requests:
        raise UserError(f"no request fits the model's context: {check.line()}")
    return config


def _admin_inject(url: str, run_dir: RunDir) -> Callable[[], None] | None:
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        return None

    def inject() -> None:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            _wait_ready(client, url + "/health/ready", deadline_s=120.0)  # back from the last one
            try:
                response = client.post(
                    url + "/admin/faults",
                    json={"fault": "oom"},
                    headers={"authorization": f"Bearer {token}"},
                )
            except httpx.TransportError:
                return  # it died before it could answer: that is the fault
            if response.status_code != 200:
                raise UserError(
                    f"{url}/admin/faults answered {response.status_code}: {response.text}"
                )
        run_dir.event("fault_injected", fault="oom", by="scale")

    return inject


def _wait_ready(client: httpx.Client, health_url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if client.get(health_url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)


# -- progress ------------------------------------------------------------------------------


class _Progress:
    """Counts results; a bar on a terminal, a line per 5% in logs; fires the OOM points.

    Position = results checkpointed + completions a server reported for batches not yet collected.
    """

    def __init__(self, total: int, done: int, run_dir: RunDir, console: _Console) -> None:
        self.total = total
        self.done = self.start_done = done
        self.server_side = 0
        self.driver_peak_rss = 0  # sampled each interval: this run's own peak, even in a ladder
        self._run_dir = run_dir
        self._console = console
        self._started = time.monotonic()
        self._next_step = done * 20 // total + 1
        self._ooms: list[float] = []
        self._injector: _Injector | None = None
        # the client driver's pause(): nothing new is sent until an OOM point's kill is in
        self.pause: Callable[[], Callable[[], None]] | None = None
        self._bar = console.live_bar("scale", total, done)

    @property
    def position(self) -> int:
        return self.done + self.server_side

    def plan_ooms(self, points: tuple[float, ...], target: _Target) -> None:
        """Inject an OOM as progress passes each point not yet passed (a resume skips old ones)."""
        self._ooms = sorted(p for p in points if p * self.total > self.done)
        if self._ooms and target.inject is not None:
            self._injector = _Injector(target.inject, self._run_dir)

    def result(self, custom_id: str, ok: bool) -> None:
        self.done += 1
        self._moved()

    def running(self, completed: int) -> None:
        """Batch API: completions the server reported in batches still being processed."""
        self.server_side = completed
        self._moved()

    def _moved(self) -> None:
        position = self.position
        self._bar(position)
        while self._ooms and position >= self._ooms[0] * self.total:
            point = self._ooms.pop(0)
            if self._injector is not None:
                resume = self.pause() if self.pause is not None else None
                self._injector.request(point, position, resume)
        if position * 20 >= self._next_step * self.total:
            self._next_step = position * 20 // self.total + 1
            self._run_dir.event("progress", done=position, total=self.total)
            if not self._console.interactive:
                self._console.say(self._line(position))

    def _line(self, position: int) -> str:
        elapsed = time.monotonic() - self._started
        rate = (position - self.start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - position) / rate if rate > 0 else float("inf")
        return (
            f"{100 * position / self.total:3.0f}% {position:,}/{self.total:,} "
            f"{rate:,.0f} req/s ETA {_duration(eta)}"
        )

    def close(self) -> None:
        self._bar(None)
        if self._injector is not None:
            self._injector.close()


class _Injector:
    """Injects OOMs one at a time on a thread, each once the target is ready again."""

    def __init__(self, inject: Callable[[], None], run_dir: RunDir) -> None:
        self._inject = inject
        self._run_dir = run_dir
        self._queue: queue.Queue[tuple[float, int, Callable[[], None] | None] | None] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._run, name="harness-oom-injector", daemon=True)
        self._thread.start()

    def request(self, point: float, done: int, resume: Callable[[], None] | None) -> None:
        """Inject at this point; then resume() the paused driver, if it was paused."""
        self._queue.put((point, done, resume))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            point, done, resume = item
            self._run_dir.event("oom_planned", point=point, done=done)
            try:
                self._inject()
            except Exception as exc:
                self._run_dir.event("inject_failed", point=point, error=str(exc))
            finally:
                if resume is not None:
                    resume()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10.0)


class _Console:
    """Human output on stderr: a live bar on a terminal, plain lines in logs."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.interactive = interactive() and out is sys.stderr

    def say(self, text: str) -> None:
        print(f"scale: {text}", file=self.out, flush=True)

    @contextlib.contextmanager
    def bar(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        """advance(k) for work counted in steps (dataset generation)."""
        show = self.live_bar(label, total, 0)
        count = 0

        def advance(k: int) -> None:
            nonlocal count
            count += k
            show(count)

        try:
            yield advance
        finally:
            show(None)

    def live_bar(self, label: str, total: int, done: int) -> Callable[[int | None], None]:
        """show(position) moves the bar; show(None) removes it. A no-op off a terminal."""
        if not self.interactive:
            return lambda k: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            transient=True,
        )
        task = bar.add_task(label, total=total, completed=done, rate="")
        bar.start()
        started, first = time.monotonic(), done

        def show(position: int | None) -> None:
            if position is None:
                bar.stop()
                return
            elapsed = time.monotonic() - started
            rate = f"{(position - first) / elapsed:,.0f}/s" if elapsed > 0 else ""
            bar.update(task, completed=position, rate=rate)

        return show

    def summary(self, outcome: ScaleOutcome) -> None:
        v = outcome.verification
        sent = v["received"] - outcome.resumed_from
        rate = sent / outcome.seconds if outcome.seconds > 0 else 0.0
        self.say(
            f"{outcome.n:,} requests, {sent:,} sent this session in {outcome.seconds:.1f} s "
            f"({rate:,.0f} req/s), {outcome.mode} mode"
        )
        self.say(
            f"verification: expected {v['expected']:,}, received {v['received']:,}, "
            f"lost {v['lost']:,}, duplicated {v['duplicated']:,}, failed {v['failed']:,}"
        )
        if outcome.failures:
            causes = ", ".join(f"{k} {c:,}" for k, c in sorted(outcome.failures.items()))
            self.say(f"failed attempts (retried): {causes}")
        for r in outcome.recoveries:
            ready = r.get("seconds_to_ready")
            first = r.get("seconds_to_first_success")
            self.say(
                f"recovered from {r.get('cause', 'death')}: ready after {_seconds(ready)}, "
                f"first success after {_seconds(first)}, "
                f"{r.get('requests_failed', 0)} requests failed in between"
            )
        self.say(f"run directory {outcome.run_dir}")
        if outcome.report is not None:
            self.say(f"report {outcome.report}")
        if not outcome.ok:
            self.say("FAILED: results lost, duplicated or failed beyond --max-failed-rate")


def _report(run_dir: RunDir, console: _Console) -> Path | None:
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


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"
