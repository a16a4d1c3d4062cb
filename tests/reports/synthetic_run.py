"""Synthetic run directories with known answers, written in the run-directory format producers use.

A target that serves `requests_per_s` with known latencies, gets OOM-killed at given times (the
supervisor's events around each death, requests failing while it is down), and whose RSS follows a
chosen shape (flat, a steady leak, or a rise that levels off) plus noise.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from harness.rundir import write_json_atomic

MB = 1_000_000
T0 = 1_700_000_000.0
CALIBRATION = {"requests_per_cpu_s": 6000.0, "workload": "harness-loopback-http/2"}


@dataclass
class SyntheticRun:
    """What was written, so tests can check the report against it."""

    path: Path
    t0: float
    kills: list[float] = field(default_factory=list)
    recoveries: list[dict] = field(default_factory=list)
    requests: int = 0
    failed: int = 0
    peak_rss: float = 0.0
    spike_t: float | None = None


def _lines(records: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in records)


def write_synthetic_run(
    path: Path,
    *,
    duration_s: float = 600.0,
    interval_s: float = 0.5,
    rss_base: float = 400 * MB,
    leak_mb_per_h: float = 0.0,
    plateau_mb: float = 0.0,
    noise_mb: float = 0.5,
    kills_at: tuple[float, ...] = (0.5,),
    downtime_s: float = 6.0,
    requests_per_s: float = 5.0,
    latency_s: float = 0.4,
    load_cpu_percent: float = 30.0,
    spike_at: float | None = None,
    sim_vram: bool = True,
    gpu: bool = False,
    disk: bool = False,
    torn: bool = False,
    calibration: dict | None = CALIBRATION,
    verification: dict | None = None,
    seed: int = 0,
) -> SyntheticRun:
    """Write manifest.json, samples.jsonl, events.jsonl and requests.jsonl into path.

    `kills_at`: fractions of the run at which the target is OOM-killed. `spike_at`: a fraction
    where one RAM sample jumps 300 MB above the curve (a peak downsampling must keep). `gpu`:
    also NVML-style `vram` samples of one GPU; `disk`: `disk` samples.
    """
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    run = SyntheticRun(path=path, t0=T0)
    kills = [T0 + f * duration_s for f in kills_at]
    run.kills = kills
    manifest = {
        "run_id": path.name,
        "target_url": "http://127.0.0.1:8000",
        "dataset": {"path": "data/candidates.jsonl", "sha256": "0" * 64, "format": "jsonl", "n": 0},
        "seed": seed,
        "host": {"gpus": {"available": False, "reason": "no NVIDIA driver"}},
        "start_time": "2023-11-14T22:13:20.000Z",
    }
    if calibration is not None:
        manifest["calibration"] = calibration

    def down(t: float) -> bool:
        return any(k <= t < k + downtime_s for k in kills)

    def lifetime_start(t: float) -> float:
        return max([T0] + [k + downtime_s for k in kills if k + downtime_s <= t])

    events = [{"t": T0, "kind": "started", "pid": 100}, {"t": T0 + 1.0, "kind": "ready"}]
    for n, k in enumerate(kills, 1):
        up, ready, first = 1.0 + n * 0.1, 4.0 + n * 0.2, downtime_s + 0.3
        failed = 7 + n
        events += [
            {"t": k - 0.01, "kind": "fault_injected", "fault": "oom"},
            {
                "t": k,
                "kind": "exited",
                "returncode": -9,
                "signal": 9,
                "cause": "oom_kill",
                "message": "CUDA out of memory. Tried to allocate 512 MiB",
                "injected": True,
            },
            {"t": k + 0.5, "kind": "restarting", "attempt": n, "backoff_s": 0.5},
            {"t": k + up, "kind": "started", "pid": 100 + n},
            {"t": k + ready, "kind": "ready"},
            {
                "t": k + first,
                "kind": "recovered",
                "seconds_to_up": up,
                "seconds_to_ready": ready,
                "seconds_to_first_success": first,
                "requests_failed": failed,
                "death_t": k,
            },
        ]
        run.recoveries.append({"up": up, "ready": ready, "first": first, "failed": failed})
    events += [{"t": T0 + duration_s * f, "kind": "trim"} for f in (0.2, 0.7)]
    if verification is not None:
        events.append({"t": T0 + duration_s, "kind": "verification", **verification})
    events.append({"t": T0 + duration_s, "kind": "exited", "cause": "stopped", "returncode": 0})
    events.sort(key=lambda e: e["t"])

    ticks = T0 + np.arange(0, duration_s, interval_s)
    completed = np.floor((ticks - T0) * requests_per_s)
    samples = []
    for i, t in enumerate(ticks):
        alive = not down(t)
        age = t - lifetime_start(t)
        rss = None
        if alive:
            rss = rss_base + leak_mb_per_h * MB * age / 3600
            rss += plateau_mb * MB * (1 - np.exp(-age / (duration_s / 10)))
            rss += rng.normal(0, noise_mb * MB)
            if spike_at is not None and i == int(spike_at * len(ticks)):
                rss += 300 * MB
                run.spike_t = float(t)
            run.peak_rss = max(run.peak_rss, rss)
        samples.append(
            {
                "t": t,
                "source": "ram",
                "system_used_bytes": 8e9 + (rss or 0),
                "system_total_bytes": 16e9,
                "rss_bytes": rss,
                "pss_bytes": rss and rss * 0.9,
                "pid": 100,
                "nprocs": 2,
            }
        )
        if sim_vram and alive:
            samples.append(
                {
                    "t": t,
                    "source": "server",
                    "sim_vram_bytes": 9e9 + 1e8 * np.sin(i / 50),
                    "sim_vram_total_bytes": 11e9,
                    "num_requests_running": 4,
                }
            )
        if gpu:
            samples.append(
                {
                    "t": t,
                    "source": "vram",
                    "gpu": 0,
                    "used_bytes": (7e9 if alive else 5e8) + 1e7 * np.cos(i / 30),
                    "total_bytes": 11.5e9,
                    "temperature_c": 61,
                    "process_used_bytes": 6.5e9 if alive else None,
                }
            )
        if disk:
            samples.append(
                {"t": t, "source": "disk", "free_bytes": 1e11 - i * 1e3, "total_bytes": 5e11}
            )
        samples.append(
            {
                "t": t,
                "source": "load",
                "users": 8,
                "completed": float(completed[i]),
                "total": duration_s * requests_per_s,
                "cpu_percent": load_cpu_percent + rng.normal(0, 1),
            }
        )

    sent = T0 + np.sort(rng.uniform(0, duration_s - 2, int(duration_s * requests_per_s)))
    requests = []
    for t in sent:
        if down(t):
            requests.append(
                {
                    "t": t,
                    "t_end": t + 0.01,
                    "id": f"c{len(requests)}",
                    "ok": False,
                    "status": None,
                    "error": "connection",
                    "latency_s": 0.01,
                    "ttft_s": None,
                    "itl_mean_s": None,
                    "tpot_s": None,
                    "prompt_tokens": None,
                    "output_tokens": None,
                    "attempt": 1,
                }
            )
            continue
        latency = latency_s * rng.uniform(0.8, 1.2)
        requests.append(
            {
                "t": t,
                "t_end": t + latency,
                "id": f"c{len(requests)}",
                "ok": True,
                "status": 200,
                "error": None,
                "latency_s": latency,
                "ttft_s": latency * 0.25,
                "itl_mean_s": 0.01,
                "tpot_s": 0.012,
                "prompt_tokens": 2000,
                "output_tokens": 60,
                "attempt": 1,
            }
        )
    run.requests = len(requests)
    run.failed = sum(1 for r in requests if not r["ok"])

    write_json_atomic(path / "manifest.json", manifest)
    torn_tail = b'{"t": 1700000999.0, "source": "ram", "rss_by' if torn else b""
    (path / "samples.jsonl").write_bytes(_lines(samples) + torn_tail)
    (path / "events.jsonl").write_bytes(_lines(events) + (b'{"t": 17000' if torn else b""))
    (path / "requests.jsonl").write_bytes(_lines(requests) + (b'{"t": 1700000' if torn else b""))
    return run


def write_locust_csvs(path: Path) -> None:
    """Locust's `--csv load` files of a 20-second run: 1000 requests, 10 failed, p95 700 ms."""
    percentiles = [
        "50%",
        "66%",
        "75%",
        "80%",
        "90%",
        "95%",
        "98%",
        "99%",
        "99.9%",
        "99.99%",
        "100%",
    ]
    with open(path / "load_stats.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "Type",
                "Name",
                "Request Count",
                "Failure Count",
                "Median Response Time",
                "Average Response Time",
                "Min Response Time",
                "Max Response Time",
                "Average Content Size",
                "Requests/s",
                "Failures/s",
                *percentiles,
            ]
        )
        writer.writerow(
            [
                "POST",
                "/v1/chat/completions",
                1000,
                10,
                400,
                410,
                100,
                2000,
                900,
                10.0,
                0.1,
                400,
                450,
                500,
                520,
                600,
                700,
                800,
                900,
                1500,
                2000,
                2000,
            ]
        )
        writer.writerow(
            [
                "",
                "Aggregated",
                1000,
                10,
                400,
                410,
                100,
                2000,
                900,
                10.0,
                0.1,
                400,
                450,
                500,
                520,
                600,
                700,
                800,
                900,
                1500,
                2000,
                2000,
            ]
        )
    with open(path / "load_stats_history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "Timestamp",
                "User Count",
                "Type",
                "Name",
                "Requests/s",
                "Failures/s",
                *percentiles,
                "Total Request Count",
                "Total Failure Count",
            ]
        )
        for i in range(20):
            writer.writerow(
                [
                    1_700_000_000 + i,
                    min(i, 8),
                    "",
                    "Aggregated",
                    10.0,
                    0.1,
                    *([400 + i] * len(percentiles)),
                    i * 10,
                    0,
                ]
            )
