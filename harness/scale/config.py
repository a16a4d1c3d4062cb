"""The settings of one scale run (`ScaleConfig`), their checks, what a run found (`ScaleOutcome`),
and the settings as the manifest stores them, so that `--resume` can finish the run."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.net import require_loopback_url
from harness.supervision.redact import redact_command
from harness.supervision.supervisor import ADMIN_TOKEN_ENV
from harness.supervision.victim import DEFAULT_VICTIM
from harness.targets import serve_url
from harness.units import format_speed, parse_speed

MODES = ("client", "batch-api")


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
    speed: float = math.inf  # embedded server latency divisor; inf ("max"): no simulated delay
    concurrency: int = 64  # in all: driver processes share it
    processes: int = 1  # client mode: driver processes sharing the run (--processes)
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
    stream: bool = False  # SSE answers: TTFT, TTST, ITL, TPOT and every gap per request
    rate: float | None = None  # open loop: requests per second (concurrency caps those in flight)
    arrival: str = "poisson"  # constant | poisson | gamma (harness/arrivals.py)
    burstiness: float = 1.0
    trace: str | None = None  # open loop: replay a trace's send times instead of a rate
    slo: str | None = None  # objectives the report judges (reports/slo.py), kept in the manifest


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
    processes: int = 1
    saturated_processes: int = 0  # driver processes whose own check found them saturated
    simulated: dict[str, Any] | None = None  # the embedded server's simulated timeline (story)

    @property
    def ok(self) -> bool:
        v = self.verification
        allowed = self.max_failed_rate * max(1, v["expected"])
        return v["lost"] == 0 and v["duplicated"] == 0 and v["failed"] <= allowed


def validate_config(config: ScaleConfig) -> None:
    """UserError for settings that cannot make a run, before anything starts."""
    if config.mode not in MODES:
        raise UserError(f"--mode {config.mode!r} is unknown; use client or batch-api")
    if config.n is not None and config.n <= 0:
        raise UserError(f"--n must be a positive number of requests, got {config.n}")
    if config.concurrency < 1:
        raise UserError(f"--concurrency must be 1 or more, got {config.concurrency}")
    if config.processes < 1:
        raise UserError(f"--processes must be 1 or more (or auto), got {config.processes}")
    if config.processes > 1 and config.mode != "client":
        raise UserError("--processes applies to client mode; the Batch API driver only uploads")
    if config.processes > config.concurrency:
        raise UserError(
            f"--processes {config.processes} is more than --concurrency {config.concurrency}: "
            "each driver process needs at least one request in flight"
        )
    if config.chunk_size < 1:
        raise UserError(f"--chunk-size must be 1 or more, got {config.chunk_size}")
    if config.max_tokens is not None and config.max_tokens < 1:
        raise UserError(f"--max-tokens must be 1 or more, got {config.max_tokens}")
    if not config.speed > 0:
        raise UserError(f"--speed must be positive, got {config.speed}")
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
    _validate_load(config)


def _validate_load(config: ScaleConfig) -> None:
    """Streaming, the open loop and SLOs: client mode only, a drawable schedule, valid SLOs."""
    from harness.arrivals import check_rate

    open_loop = config.rate is not None or config.trace is not None
    if config.mode != "client" and (open_loop or config.stream):
        raise UserError("--stream, --rate and --trace drive requests one by one: use --mode client")
    if config.trace is not None and config.processes > 1:
        raise UserError(
            "--trace replays its send times in one driver process: use --processes 1 "
            "(a --rate schedule is shared between processes)"
        )
    if config.rate is not None and config.trace is not None:
        raise UserError("--rate and --trace both set the send times; give one")
    if config.rate is not None:
        check_rate(config.rate, config.arrival, config.burstiness)
    elif config.arrival != "poisson" or config.burstiness != 1.0:
        raise UserError("--arrival and --burstiness shape a --rate schedule; add --rate R")
    if config.trace is not None and not Path(config.trace).is_file():
        raise UserError(f"--trace {config.trace}: no such file")
    if config.slo is not None:
        from reports.slo import parse_slo

        parse_slo(config.slo)


def config_settings(config: ScaleConfig, *, keep_secrets: bool = False) -> dict[str, Any]:
    """The settings as JSON. For the manifest, without secrets: no API key, and the server
    command's secret arguments masked; keep_secrets for a ladder rung's own process."""
    settings = asdict(config)
    settings["speed"] = format_speed(config.speed)  # JSON has no infinity
    if not keep_secrets:
        settings.pop("api_key")
        settings["serve"] = redact_command(config.serve)
    return settings


def config_from_settings(settings: dict[str, Any]) -> ScaleConfig:
    """The ScaleConfig that config_settings wrote (keys it does not know are ignored)."""
    known = {f.name for f in fields(ScaleConfig)}
    chosen = {k: v for k, v in settings.items() if k in known}
    for name in ("oom_at", "server_args", "serve"):
        chosen[name] = tuple(chosen.get(name) or ())
    speed = chosen.get("speed")
    chosen["speed"] = math.inf if speed is None else parse_speed(str(speed))  # None: older runs
    return ScaleConfig(**chosen)
