"""The server a scale run drives, opened for the run and closed after it: the embedded reference
server, the user's `--serve` command under a supervisor, or a running `--target` (optionally kept
alive by a separate `harness supervise`); and the model and context it serves."""

from __future__ import annotations

import contextlib
import itertools
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

import generators
from harness.driver.dataset import Dataset
from harness.driver.incidents import import_supervisor_incidents
from harness.errors import UserError
from harness.net import listening_pid, require_loopback_url, url_origin
from harness.rundir import EventKind, RunDir
from harness.scale.config import ScaleConfig, config_settings
from harness.scale.console import Console
from harness.scale.oom import admin_oom_injector
from harness.supervision.redact import redact_command
from harness.supervision.supervisor import Supervisor
from harness.targets import (
    Target,
    choose_model,
    probe,
    serve_context,
    serve_health_path,
    serve_url,
)
from harness.units import format_speed


def shown_command(command: tuple[str, ...]) -> str:
    """A server command as logs and the manifest show it: its secrets masked."""
    return shlex.join(redact_command(command))


@dataclass
class TargetHandle:
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
def open_target(config: ScaleConfig, run_dir: RunDir, console: Console) -> Iterator[TargetHandle]:
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
def _embedded_target(config: ScaleConfig, run_dir: RunDir) -> Iterator[TargetHandle]:
    from harness.supervision.embedded import EmbeddedServer

    server_args = ["--oom", "kill", "--speed", format_speed(config.speed), *config.server_args]
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

        yield TargetHandle(
            url=server.url,
            health_url=server.url + "/health/ready",
            inject=inject,
            supervisor=server.supervisor,
        )


@contextlib.contextmanager
def _served_target(
    config: ScaleConfig, run_dir: RunDir, console: Console
) -> Iterator[TargetHandle]:
    """The user's own server command, started and kept alive by a Supervisor; an OOM is
    rehearsed as the kernel does it: SIGKILL, no warning, recorded as an injected oom_kill."""
    from harness.supervision.samplers import start_sampling

    url = (config.target or serve_url(config.serve) or "").rstrip("/")
    require_loopback_url(url, "the --serve command's URL")
    health_url = url + serve_health_path(config.serve)
    supervisor = Supervisor(
        config.serve, run_dir, health_url=health_url, max_restarts=10 + len(config.oom_at)
    )
    console.say(f"starting {shown_command(config.serve)}; ready when {health_url} answers 200")
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

        yield TargetHandle(
            url=url, health_url=health_url, inject=inject, supervisor=supervisor, info=info
        )
    finally:
        if sampler is not None:
            sampler.stop()
        supervisor.stop()


@contextlib.contextmanager
def _external_target(
    config: ScaleConfig, run_dir: RunDir, console: Console
) -> Iterator[TargetHandle]:
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
    inject = admin_oom_injector(url, run_dir)
    if supervisor_dir is not None:
        sup = supervisor_dir

        def inject() -> None:
            _wait_target_ready(sup, config.ready_timeout_s)
            chaos_inject(sup, "kill", victim=config.victim)  # copied here after the run

    try:
        yield TargetHandle(
            url=url, health_url=health_url or info.health_url, inject=inject, info=info
        )
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


def settle_model(
    config: ScaleConfig, target: TargetHandle, dataset: Dataset, run_dir: RunDir, console: Console
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
        run_dir.update_manifest(scale=config_settings(config))
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
    run_dir.event(EventKind.CONTEXT_CHECK, **asdict(check))
    console.say(check.line())
    if check.exceeding == check.requests:
        raise UserError(f"no request fits the model's context: {check.line()}")
    return config
