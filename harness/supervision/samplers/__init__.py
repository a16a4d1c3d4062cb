"""Samplers: RAM, VRAM, server metrics, disk and load progress, on one drift-free loop.

    loop = start_sampling(run_dir, interval=0.5, pid=lambda: supervisor.pid,
                          metrics_url="http://127.0.0.1:8000/metrics")
    ...
    loop.stop()

Rows go to the run directory's samples.jsonl (see docs/supervisor.md for the fields).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.errors import UserError
from harness.gpu import GpuUnavailable
from harness.rundir import EventKind, RunDir
from harness.supervision.samplers.base import Notices, Sampler, Tick
from harness.supervision.samplers.disk import DiskSampler
from harness.supervision.samplers.load import LoadSampler
from harness.supervision.samplers.loop import SamplerLoop
from harness.supervision.samplers.ram import RamSampler
from harness.supervision.samplers.server import ServerSampler, normalise_metric_name, parse_metrics
from harness.supervision.samplers.vram import VramSampler

__all__ = [
    "DiskSampler",
    "LoadSampler",
    "RamSampler",
    "Sampler",
    "SamplerLoop",
    "ServerSampler",
    "Tick",
    "VramSampler",
    "normalise_metric_name",
    "parse_metrics",
    "start_sampling",
]

MIN_INTERVAL_S = 0.01


def start_sampling(
    run_dir: RunDir,
    *,
    interval: float = 0.5,
    pid: int | Callable[[], int | None] | None = None,
    metrics_url: str | None = None,
    gpu: bool = True,
    disk: bool = True,
    extra: Callable[[], dict[str, Any]] | None = None,
    metrics_grace_s: float = 0.0,
) -> SamplerLoop:
    """Start sampling into run_dir; `pid` may be a callable so a restarted target stays one series.

    metrics_grace_s: a target still starting up is not reported unreachable for this long.

    Without a usable GPU, prints "VRAM: unavailable: <reason>" once, records a
    `source_unavailable` event and writes no VRAM rows (never zeros).
    """
    if not interval >= MIN_INTERVAL_S:
        raise UserError(
            f"sampling interval {interval} s is too short; use {MIN_INTERVAL_S} s or more"
        )
    notices = Notices()
    samplers: list[Sampler] = [RamSampler(pss_interval_s=max(interval, 1.0))]
    if gpu:
        try:
            samplers.append(VramSampler(notices))
        except GpuUnavailable as exc:
            notices.once("vram-unavailable", f"VRAM: unavailable: {exc}")
            run_dir.event(EventKind.SOURCE_UNAVAILABLE, source="vram", reason=str(exc))
    if disk:
        samplers.append(DiskSampler(run_dir.path))
    if extra is not None:
        samplers.append(LoadSampler(extra))
    background: list[Sampler] = []
    if metrics_url is not None:
        background.append(
            ServerSampler(
                metrics_url,
                timeout=max(1.0, interval),
                notices=notices,
                startup_grace_s=metrics_grace_s,
            )
        )
    target = pid if callable(pid) or pid is None else (lambda: pid)
    loop = SamplerLoop(
        run_dir, samplers, interval=interval, pid=target, background=background, notices=notices
    )
    return loop.start()
