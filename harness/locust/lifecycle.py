"""The plugin's event hooks: run directory and target at init, samplers and manifest per test, the
report when Locust quits.

Only the master (or a local runner) owns the run directory, starts the embedded server, samples
and writes; workers learn the host and the shared settings from the spawn jobs Locust sends them.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import sys
import time
from typing import Any

import httpx
from locust import events
from locust.env import Environment
from locust.exception import StopTest

import generators
from generators import DatasetError
from harness.arrivals import LagStats, trace_extent
from harness.calibration import measure
from harness.driver.dataset import from_file
from harness.errors import UserError
from harness.locust import stopping
from harness.locust.chaos import import_deaths, supervised_url
from harness.locust.context import (
    SHARED_ADMIN_TOKEN,
    SHARED_SCHEDULE_START,
    SHARED_SUPERVISED,
    SHARED_WORKERS,
    RunContext,
    run_context,
)
from harness.locust.curves import DEFAULT_RUN_TIME_S
from harness.locust.failures import Rejections
from harness.locust.openloop import OpenLoop, process_cap
from harness.locust.options import CHAOS_USER, Settings, add_arguments, exposure_warnings
from harness.locust.probe import check_apis, probe
from harness.locust.readiness import GeventReadiness, detect_health_url
from harness.locust.records import RunLog
from harness.locust.selfcheck import SelfCheck
from harness.locust.shape import LoadShape
from harness.locust.target import EmbeddedTarget
from harness.net import is_loopback_url, listening_pid
from harness.rundir import MANIFEST, EventKind, RunDir, utc_iso
from harness.supervision.samplers import LoadSampler, SamplerLoop, start_sampling
from harness.supervision.supervisor import ADMIN_TOKEN_ENV

logger = logging.getLogger(__name__)
_SCHEDULE_LEAD_S = 0.25  # from test start to the first arrival: workers get the spawn job first
READY_TIMEOUT_S = 120.0  # a target not back within this stops the test, as harness scale does

events.init_command_line_parser.add_listener(add_arguments)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    context = RunContext(environment, RunLog(environment))
    environment.harness = context
    stopping.register(environment)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the /metrics scraper, every tick
    options = environment.parsed_options
    if context.is_worker or options is None:
        return
    for warning in exposure_warnings(options):
        logger.warning(warning)
    _bound_the_load(environment)
    if options.supervisor and not environment.host:
        try:
            environment.host = options.host = supervised_url(options.supervisor)
        except UserError as exc:
            logger.error(str(exc))
            sys.exit(2)
    if environment.host:
        _prepare_or_exit(context)  # a wrong --host stops here, before a run directory exists
    run_dir = RunDir(options.run_dir) if options.run_dir else RunDir.create("runs", prefix="locust")
    options.run_dir = str(run_dir.path)
    context.run_dir = run_dir
    logger.info(f"Run directory: {run_dir.path}")
    if environment.host:
        setattr(options, SHARED_ADMIN_TOKEN, os.environ.get(ADMIN_TOKEN_ENV))
        setattr(options, SHARED_SUPERVISED, bool(options.supervisor))  # its records are copied
        context.log.attach(run_dir)
    else:
        context.server = server = _start_embedded_server(environment, run_dir)
        environment.host = server.url
        setattr(options, SHARED_ADMIN_TOKEN, server.admin_token)
        setattr(options, SHARED_SUPERVISED, True)
        context.log.attach(run_dir, lambda line: server.note_request(line["ok"], line["t_end"]))
        _prepare_or_exit(context)


def _prepare_or_exit(context: RunContext) -> None:
    try:
        _prepare(context)
    except UserError as exc:
        logger.error(str(exc))
        sys.exit(2)  # atexit stops the embedded server


def _bound_the_load(environment: Environment) -> None:
    """Load stops by itself: the shape ends tests; without one, headless runs get a run time."""
    options = environment.parsed_options
    if environment.shape_class is None and options.load_shape != "steady":
        environment.shape_class = LoadShape()  # a single locustfile was given, without the shape
        environment.shape_class.runner = environment.runner
    if environment.shape_class is None and options.headless and not options.run_time:
        if options.trace:
            logger.info("No --run-time given: the test ends when the trace does")
            return
        options.run_time = int(DEFAULT_RUN_TIME_S)
        logger.info(f"No --run-time given: the test stops after {DEFAULT_RUN_TIME_S:g} s (set -t)")


def _start_embedded_server(environment: Environment, run_dir: RunDir) -> EmbeddedTarget:
    """`harness serve` under a supervisor on a free loopback port, sampled until Locust quits."""
    options = environment.parsed_options
    server_args = shlex.split(options.server_args or "")
    chaos = bool(options.chaos_every) or any(
        user.__name__ == CHAOS_USER for user in environment.user_classes
    )
    if chaos and not any(arg.startswith("--oom") for arg in server_args):
        server_args += ["--oom", "kill"]  # an injected OOM is a SIGKILL, as from the OOM killer
    logger.info(f"Starting the embedded reference server: harness serve {shlex.join(server_args)}")
    try:
        server = EmbeddedTarget(run_dir.path, server_args, options.sample_interval)
    except UserError as exc:
        logger.error(str(exc))
        sys.exit(2)
    atexit.register(server.stop)  # also when Locust exits without firing quitting
    logger.info(f"Embedded reference server ready at {server.url}")
    return server


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    context = run_context(environment)
    if context.schedule_pending:
        _report_schedule(context)  # the previous test's, now that the workers' lines are in
    stopping.reset(environment)
    context.rejections = Rejections()
    try:
        _prepare(context)
    except UserError as exc:
        environment.process_exit_code = 2
        raise StopTest(str(exc)) from None  # the test does not start; Locust logs why
    options = environment.parsed_options
    if context.is_master:
        workers = environment.runner.worker_count
        setattr(options, SHARED_WORKERS, workers)
        if context.settings.arrivals is not None and int(options.num_users or 1) < workers:
            environment.process_exit_code = 2
            raise StopTest(  # a worker without users would never send its share of arrivals
                f"-u {options.num_users} is fewer than the {workers} workers: with --rate or "
                f"--trace each worker sends its share of the arrivals, so give -u {workers} or more"
            )
    if not context.is_worker:
        context.log.lag = LagStats()
        context.schedule_running = context.settings.arrivals is not None
        _start_sampling(context)
        _write_manifest(context)
        # last: users spawn (here, or on the workers the spawn job reaches) right after this
        setattr(options, SHARED_SCHEDULE_START, time.time() + _SCHEDULE_LEAD_S)
    if not context.is_master:
        _start_open_loop(context)
        _start_checks(context)
    if environment.shape_class is not None:
        environment.shape_class.reset_time()  # -t counts from here, once the harness is ready


def _start_open_loop(context: RunContext) -> None:
    """This process's share of the arrivals (--rate, --trace), from the shared start time."""
    settings = context.settings
    if settings.arrivals is None:
        context.open_loop = None
        return
    part, parts = context.part()
    start_t = float(context.shared(SHARED_SCHEDULE_START) or time.time())
    environment = context.environment
    context.open_loop = OpenLoop(
        settings.arrivals,
        start_t,
        part=part,
        parts=parts,
        cap=process_cap(settings.max_concurrency, parts),
        on_drained=lambda sent: stopping.schedule_drained(environment, sent),
    )
    if not context.is_worker:
        logger.info(
            f"Open loop: {settings.arrivals.describe()}; at most {context.open_loop.cap} "
            "requests in flight"
        )


def _start_checks(context: RunContext) -> None:
    """In a process that sends load: the driver's readiness poller and loop monitor."""
    if context.readiness is None:
        host = context.environment.host.rstrip("/")
        context.readiness = GeventReadiness(
            detect_health_url(host) or host + "/v1/models",
            deadline_s=READY_TIMEOUT_S,
            event=context.log.event,
        )
    if context.selfcheck is not None:
        context.selfcheck.finish(context.log)
    context.selfcheck = SelfCheck()


def _report_schedule(context: RunContext) -> None:
    """The test's schedule lag as an event (`behind_schedule` or `schedule_kept`) and a line."""
    context.schedule_pending = False
    verdict = context.log.lag.verdict(context.settings.schedule_lag_limit)
    kind = EventKind.BEHIND_SCHEDULE if verdict["behind"] else EventKind.SCHEDULE_KEPT
    context.log.event(kind, **verdict)
    if not verdict["arrivals"]:
        logger.warning("Open loop: no scheduled request finished")
        return

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    figures = (
        f"schedule lag p50 {ms(verdict['lag_p50_s'])}, p99 {ms(verdict['lag_p99_s'])}, "
        f"max {ms(verdict['lag_max_s'])} over {verdict['arrivals']} requests"
    )
    if verdict["behind"]:
        logger.warning(
            f"Behind schedule: {figures} (limit p99 {ms(verdict['limit_s'])}): requests left "
            "later than scheduled (a busy load generator, or --max-concurrency); SCHEDULED "
            "entries and scheduled_latency_s time them from when they were due"
        )
    else:
        logger.info(f"Schedule kept: {figures}")


def _prepare(context: RunContext) -> None:
    """Settings, target and prompts for a test; UserError says what cannot work.

    Called at init too, so command-line mistakes end Locust at once with exit code 2; again at
    each test start for what the web UI may have changed since.
    """
    environment = context.environment
    context.settings = Settings.from_options(environment.parsed_options)
    if not context.is_worker:
        if not is_loopback_url(environment.host or ""):
            raise UserError(
                f"host {environment.host!r} is not a loopback http(s) URL; the harness only sends "
                "load to this machine (use http://127.0.0.1:PORT)"
            )
        _check_target(context)
        _check_trace(context)
    if not context.is_master:
        try:
            context.prepare_prompts()
        except (LookupError, DatasetError) as exc:
            raise UserError(f"no prompts: {exc}") from None


def _start_sampling(context: RunContext) -> None:
    """The load generator's own samples; the target's too unless the embedded server's run."""
    if context.sampler is not None:
        return
    interval = context.environment.parsed_options.sample_interval
    if context.server is not None:  # already samples its process tree and /metrics
        load = LoadSampler(lambda: _load_fields(context))
        context.sampler = SamplerLoop(context.run_dir, [load], interval=interval).start()
        return
    host = context.environment.host
    context.sampler = start_sampling(
        context.run_dir,
        interval=interval,
        pid=listening_pid(host),
        metrics_url=_metrics_url(host),
        extra=lambda: _load_fields(context),
    )


def _load_fields(context: RunContext) -> dict[str, Any]:
    """The `load` sample: users, requests so far and, distributed, the busiest worker's CPU."""
    runner = context.environment.runner
    fields: dict[str, Any] = {
        "users": runner.user_count,
        "completed": runner.stats.total.num_requests,
        "failed": runner.stats.total.num_failures,
    }
    if context.is_master:
        workers = list(runner.clients.values())
        fields["workers"] = len(workers)
        fields["cpu_percent"] = max((w.cpu_usage for w in workers), default=None)
    return fields


def _metrics_url(url: str) -> str | None:
    """The target's Prometheus /metrics when it has one (vLLM, our server), else None."""
    metrics = url.rstrip("/") + "/metrics"
    try:
        response = httpx.get(metrics, timeout=5, trust_env=False)
        ok = response.status_code == 200 and "# TYPE" in response.text
    except httpx.HTTPError:
        ok = False
    if not ok:
        logger.info(f"{metrics} does not answer Prometheus text: no server samples")
    return metrics if ok else None


def _check_target(context: RunContext) -> None:
    """Stop before the load when nothing answers, or the target does not speak the users' API
    or serve the model the requests will name."""
    host = context.environment.host.rstrip("/")
    view = probe(host)
    needs: dict[str, list[str]] = {}
    for user_class in context.environment.user_classes:
        if hasattr(user_class, "api"):  # one of ours; a plain Locust user may send anything
            api = user_class.api or context.settings.api
            needs.setdefault(api, []).append(user_class.__name__)
    check_apis(view, needs)
    settings = context.settings
    model = settings.model
    if model is None and settings.dataset:
        model = next(generators.iter_requests(settings.dataset), ("", {}))[1].get("model")
    model = model or generators.DEFAULT_MODEL
    served = view.models
    if served is None:
        logger.info(f"{host} lists no models (/v1/models, /api/tags): model not checked")
    elif served and model not in served:
        raise UserError(
            f"{host} does not serve model {model!r}; it serves {', '.join(served)}: "
            "pass one with --model"
        )


def _check_trace(context: RunContext) -> None:
    """Read a --trace through once before the load: a bad line stops the run now, not later."""
    arrivals = context.settings.arrivals
    if arrivals is None or not arrivals.finite or context.checked_trace == arrivals.trace:
        return
    count, span = trace_extent(arrivals.trace)
    if not count:
        raise UserError(f"--trace {arrivals.trace} has no requests")
    logger.info(f"Trace {arrivals.trace}: {count} requests over {span:g} s")
    context.checked_trace = arrivals.trace


def _get_json(url: str) -> Any:
    """GET a JSON document straight from the loopback target (never through an http_proxy)."""
    return httpx.get(url, timeout=10, trust_env=False).raise_for_status().json()


def _write_manifest(context: RunContext) -> None:
    """The run's manifest, once per run directory (a web UI session may run several tests)."""
    run_dir = context.run_dir
    if run_dir.read_json(MANIFEST) is not None:
        run_dir.update_manifest(end_time=None)
        return
    settings = context.settings
    environment = context.environment
    dataset: dict[str, Any]
    if settings.dataset:
        dataset = from_file(settings.dataset).manifest()
    else:
        dataset = {"path": None, "sha256": None, "format": "generated", "n": settings.candidates}
    run_dir.write_manifest(
        target_url=environment.host,
        target="embedded" if context.server is not None else "external",
        dataset=dataset,
        seed=settings.seed,
        calibration=measure(),
        locust={
            "user_classes": sorted(u.__name__ for u in environment.user_classes),
            "api": settings.api,
            "model": settings.model,
            "max_tokens": settings.max_tokens,
            "load_shape": settings.load_shape,
            "users": environment.parsed_options.num_users,
            "run_time_s": environment.parsed_options.run_time,
            "arrivals": None
            if settings.arrivals is None
            else {**settings.arrivals.manifest(), "max_concurrency": settings.max_concurrency},
        },
    )


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    context = run_context(environment)
    if context.open_loop is not None:
        context.open_loop.stop()
        context.open_loop = None
    if context.selfcheck is not None:  # before a worker's last report leaves
        context.selfcheck.finish(context.log)
        context.selfcheck = None
    if context.is_worker or context.run_dir is None:
        return
    if context.schedule_running:
        context.schedule_running, context.schedule_pending = False, True
        if not context.is_master:  # a master waits for its workers' last lines
            _report_schedule(context)
    if context.sampler is not None:
        context.sampler.stop()
        context.sampler = None
    if context.run_dir.read_json(MANIFEST) is not None:
        context.run_dir.update_manifest(end_time=utc_iso())


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    """After Locust's runner has quit (listeners run in reverse): report, then stop the server."""
    context = run_context(environment)
    if context.readiness is not None:
        context.readiness.close()
        context.readiness = None
    if context.is_worker or context.run_dir is None:
        return
    if context.schedule_pending:
        _report_schedule(context)
    if context.sampler is not None:
        context.sampler.stop()
        context.sampler = None
    if context.server is not None:
        atexit.unregister(context.server.stop)
        context.server.stop()
        context.server = None
    import_deaths(context)
    _write_report(context.run_dir)
    context.run_dir.close()


def _write_report(run_dir: RunDir) -> None:
    from reports import write_report  # numpy and matplotlib: loaded only as Locust exits

    try:
        files = write_report(run_dir.path)
    except UserError as exc:
        logger.warning(f"No report for {run_dir.path}: {exc}")
        return
    logger.info(f"Report: {files.html_path} (summary: {files.summary_path})")
