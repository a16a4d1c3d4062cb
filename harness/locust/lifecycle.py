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
from typing import Any

import httpx
from locust import events
from locust.env import Environment
from locust.exception import StopTest

import generators
from generators import DatasetError
from harness.calibration import measure
from harness.driver.dataset import from_file
from harness.errors import UserError
from harness.locust.context import (
    SHARED_ADMIN_TOKEN,
    SHARED_SUPERVISED,
    SHARED_WORKERS,
    RunContext,
    run_context,
)
from harness.locust.curves import DEFAULT_RUN_TIME_S
from harness.locust.options import CHAOS_USER, Settings, add_arguments, wide_listeners
from harness.locust.records import RunLog
from harness.locust.shape import LoadShape
from harness.locust.target import EmbeddedTarget
from harness.net import is_loopback_url, listening_pid
from harness.rundir import MANIFEST, RunDir, utc_iso
from harness.supervision.samplers import LoadSampler, SamplerLoop, start_sampling
from harness.supervision.supervisor import ADMIN_TOKEN_ENV

logger = logging.getLogger(__name__)

events.init_command_line_parser.add_listener(add_arguments)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    context = RunContext(environment, RunLog(environment))
    environment.harness = context
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the /metrics scraper, every tick
    options = environment.parsed_options
    if context.is_worker or options is None:
        return
    for warning in wide_listeners(options):
        logger.warning(warning)
    _bound_the_load(environment)
    run_dir = RunDir(options.run_dir) if options.run_dir else RunDir.create("runs", prefix="locust")
    options.run_dir = str(run_dir.path)
    context.run_dir = run_dir
    logger.info(f"Run directory: {run_dir.path}")
    if environment.host:
        setattr(options, SHARED_ADMIN_TOKEN, os.environ.get(ADMIN_TOKEN_ENV))
        context.log.attach(run_dir)
    else:
        context.server = server = _start_embedded_server(environment, run_dir)
        environment.host = server.url
        setattr(options, SHARED_ADMIN_TOKEN, server.admin_token)
        setattr(options, SHARED_SUPERVISED, True)
        context.log.attach(run_dir, lambda line: server.note_request(line["ok"], line["t_end"]))
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
    try:
        _prepare(context)
    except UserError as exc:
        environment.process_exit_code = 2
        raise StopTest(str(exc)) from None  # the test does not start; Locust logs why
    if context.is_master:
        setattr(environment.parsed_options, SHARED_WORKERS, environment.runner.worker_count)
    if not context.is_worker:
        _start_sampling(context)
        _write_manifest(context)
    if environment.shape_class is not None:
        environment.shape_class.reset_time()  # -t counts from here, once the harness is ready


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
    """Stop before the load when the target is down, does not speak the users' protocol, or
    does not serve the model the requests will name."""
    environment = context.environment
    settings = context.settings
    host = environment.host.rstrip("/")
    openai, ollama = _probe(f"{host}/v1/models"), _probe(f"{host}/api/tags")
    if isinstance(openai, httpx.TransportError) and isinstance(ollama, httpx.TransportError):
        raise UserError(
            f"{host} does not answer ({type(openai).__name__}: {openai}); start the server or "
            "fix --host"
        )
    apis = {getattr(user, "api", None) or settings.api for user in environment.user_classes}
    if "ollama" in apis and not isinstance(ollama, dict):
        raise UserError(
            f"{host} has no Ollama API (GET /api/tags: {_answer(ollama)}); for an "
            "OpenAI-compatible server use --api openai with ChatUser or StreamingChatUser"
        )
    if "openai" in apis and not isinstance(openai, dict) and isinstance(ollama, dict):
        raise UserError(
            f"{host} looks like Ollama without the OpenAI API (GET /v1/models: "
            f"{_answer(openai)}); use --api ollama"
        )
    try:
        if isinstance(openai, dict):
            served = [m["id"] for m in openai["data"]]
        elif isinstance(ollama, dict):
            served = [m["name"] for m in ollama["models"]]
        else:
            served = []
    except (KeyError, TypeError):
        served = []
    if not served:
        logger.info(f"{host} lists no models (/v1/models, /api/tags): model not checked")
        return
    model = settings.model
    if model is None and settings.dataset:
        model = next(generators.iter_requests(settings.dataset), ("", {}))[1].get("model")
    model = model or generators.DEFAULT_MODEL
    if model not in served:
        raise UserError(
            f"{host} does not serve model {model!r}; it serves {', '.join(served)}: "
            "pass one with --model"
        )


def _probe(url: str) -> Any:
    """The JSON document at url, else its status code (an int), else the transport error;
    straight from the loopback target, never through an http_proxy."""
    try:
        response = httpx.get(url, timeout=10, trust_env=False)
    except httpx.TransportError as exc:
        return exc
    if response.status_code != 200:
        return response.status_code
    try:
        return response.json()
    except ValueError:
        return response.status_code


def _answer(probe: Any) -> str:
    return f"HTTP {probe}" if isinstance(probe, int) else type(probe).__name__


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
        },
    )


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    context = run_context(environment)
    if context.is_worker or context.run_dir is None:
        return
    if context.sampler is not None:
        context.sampler.stop()
        context.sampler = None
    if context.run_dir.read_json(MANIFEST) is not None:
        context.run_dir.update_manifest(end_time=utc_iso())


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    """After Locust's runner has quit (listeners run in reverse): report, then stop the server."""
    context = run_context(environment)
    if context.is_worker or context.run_dir is None:
        return
    if context.sampler is not None:
        context.sampler.stop()
        context.sampler = None
    if context.server is not None:
        atexit.unregister(context.server.stop)
        context.server.stop()
        context.server = None
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
