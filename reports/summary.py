"""summary.json: the figures of one run that people read and `harness compare` checks.

Definitions follow docs/llm-metrics (shared/llm-metrics.md): failed requests are excluded from
latency percentiles and counted by cause; throughput is over the measured window (first request
sent -> last request finished); VRAM measured by NVML and VRAM simulated by the reference server
are kept apart and never mixed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.arrivals import DEFAULT_LAG_LIMIT_S
from harness.errors import UserError
from harness.rundir import EventKind, utc_iso
from reports.engine import engine_summary
from reports.leak import leak_check
from reports.recovery import incidents, recovery_summary
from reports.rundata import Columns, RunData
from reports.slo import Objective, evaluate, parse_slo

SCHEMA = "harness-summary/1"
# Above this share of samples with the load generator over 90% of a core, its latencies are suspect.
CPU_SATURATED_PERCENT = 90.0
CPU_SATURATED_SHARE = 0.05
_PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}
_DEATH_KINDS = (EventKind.EXITED, EventKind.STARTED)

DEFINITIONS = {
    "e2e_s": "request sent -> last byte, successful requests only",
    "ttft_s": "request sent -> first non-empty content chunk (streamed requests only)",
    "itl_s": "per-request mean gap between content chunks after the first; "
    "percentiles across requests",
    "ttst_s": "request sent -> second token (streamed requests only)",
    "itl_max_s": "per-request longest single inter-token gap; percentiles across requests",
    "itl_gap_s": "every single inter-token gap of every successful streamed request, pooled",
    "scheduled_s": "scheduled send time -> last byte (open loop): includes the schedule lag",
    "tpot_s": "(e2e - TTFT) / (output tokens - 1), per request",
    "error_rate": "failed attempts / all attempts (each attempt is one line of requests.jsonl)",
    "engine": "the target's own /metrics (vLLM names): KV-cache usage 0-1 and queue gauges over "
    "samples; preemptions, queue time and prefix-cache hits from counter increases over the run "
    "(a fall or a restart is a reset)",
    "cost": "CPU seconds of the driver's processes and the target's process tree over the drive, "
    "per successful request (target: only when scale supervised it)",
    "slo": "METRIC_pQ=BOUND: a request attains it when METRIC <= BOUND (failed requests attain "
    "nothing); met when at least Q% of the requests attain it (the nearest-rank pQ is within "
    "BOUND); goodput: requests attaining every objective / measured window",
    "leak": "slope after warm-up, MB = 10^6 bytes; verdict needs 95% confidence and growth "
    "that continues into the last third of each process lifetime",
}


def summarize(run: RunData, slo: tuple[Objective, ...] | None = None) -> dict[str, Any]:
    """Compute summary.json's document from a loaded run directory.

    `slo`: objectives to judge; by default those the producer stored in the manifest (`slo`).
    """
    warnings: list[str] = []
    manifest = run.manifest
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": utc_iso(),
        "run": {
            "run_id": manifest.get("run_id") or run.path.name,
            "target_url": manifest.get("target_url"),
            "dataset": manifest.get("dataset"),
            "seed": manifest.get("seed"),
            "start_time": manifest.get("start_time"),
            "end_time": manifest.get("end_time"),
            "git_commit": manifest.get("git_commit"),
        },
        "calibration": manifest.get("calibration"),
        "window": _window(run),
    }
    if "_error" in manifest:
        warnings.append(manifest["_error"])
    if not summary["calibration"]:
        warnings.append(
            "no calibration in manifest.json: timing metrics will be compared unnormalised"
        )
    summary.update(_traffic(run, warnings))
    summary["memory"] = _memory(run, warnings)
    summary["engine"] = engine_summary(run)
    summary["leak"] = _leaks(run)
    found = incidents(run.events)
    summary["recovery"] = recovery_summary(found)
    summary["events"] = _event_counts(run, found)
    summary["results"] = _results(run)
    summary["load_generator"] = _load_generator(run, warnings)
    summary["slo"] = _slo(run, slo, warnings)
    summary["schedule"] = _schedule(run, warnings)
    summary["cost"] = _cost(run)
    summary["warnings"] = warnings
    summary["definitions"] = DEFINITIONS
    return _plain(summary)


def _plain(node: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, tuples as lists, NaN and inf as None."""
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(value) for value in node]
    if isinstance(node, (bool, np.bool_)):
        return bool(node)
    if isinstance(node, (int, np.integer)):
        return int(node)
    if isinstance(node, (float, np.floating)):
        return float(node) if np.isfinite(node) else None
    return node


def distribution(values: np.ndarray) -> dict[str, float] | None:
    """n, mean, p50/p90/p95/p99, max of the finite values; None when there are none."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    points = np.percentile(values, list(_PERCENTILES.values()))
    figures = {"n": len(values), "mean": float(values.mean())}
    figures.update({name: float(p) for name, p in zip(_PERCENTILES, points, strict=True)})
    figures["max"] = float(values.max())
    return figures


def _window(run: RunData) -> dict[str, Any]:
    t0 = run.t0
    ends = [cols.t[-1] for cols in run.samples.values() if len(cols)]
    ends += [run.events[-1]["t"]] if run.events else []
    if run.requests is not None and len(run.requests):
        ends.append(float(np.nanmax(run.requests["t_end"])))
    if t0 is None or not ends:
        return {"start_t": None, "end_t": None, "duration_s": None}
    return {"start_t": t0, "end_t": max(ends), "duration_s": max(ends) - t0}


def _traffic(run: RunData, warnings: list[str]) -> dict[str, Any]:
    """requests, errors, throughput and latency sections, from requests.jsonl or Locust's CSVs."""
    if run.requests is not None and len(run.requests):
        return _traffic_from_requests(run, warnings)
    if run.locust is not None and run.locust.total is not None:
        return _traffic_from_locust(run, warnings)
    warnings.append("no requests.jsonl or Locust CSVs: no throughput or latency figures")
    return {
        "requests": {"source": None, "attempts": 0, "ok": 0, "failed": 0},
        "errors": {"rate": None, "by_cause": {}, "by_status": {}},
        "throughput": {"requests_per_s": None, "output_tokens_per_s": None},
        "latency": {"e2e_s": None, "ttft_s": None, "itl_s": None, "tpot_s": None},
    }


def _traffic_from_requests(run: RunData, warnings: list[str]) -> dict[str, Any]:
    requests = run.requests
    assert requests is not None
    ok = requests.ok
    attempts, succeeded = len(requests), int(ok.sum())
    start = float(np.nanmin(requests["t"]))
    end = float(np.nanmax(requests["t_end"]))
    window = end - start
    tokens = requests["output_tokens"][ok]
    has_tokens = bool(np.isfinite(tokens).any())
    latency = requests["latency_s"][ok]
    ttft = requests["ttft_s"][ok]
    bad_ttft = int((ttft <= 0).sum())
    if bad_ttft:
        warnings.append(f"{bad_ttft} requests reported TTFT <= 0 (a producer bug); excluded")
        ttft = np.where(ttft > 0, ttft, np.nan)
    tpot = requests["tpot_s"][ok].copy()
    derivable = ~np.isfinite(tpot) & np.isfinite(ttft) & (tokens > 1)
    tpot[derivable] = (latency[derivable] - ttft[derivable]) / (tokens[derivable] - 1)
    per_request = tokens / latency
    return {
        "requests": {
            "source": "requests.jsonl",
            "attempts": attempts,
            "ok": succeeded,
            "failed": attempts - succeeded,
            "window_s": window,
        },
        "errors": {
            "rate": (attempts - succeeded) / attempts,
            "by_cause": dict(requests.errors_by_cause.most_common()),
            "by_status": dict(requests.errors_by_status.most_common()),
        },
        "throughput": {
            "requests_per_s": succeeded / window if window > 0 else None,
            "output_tokens_per_s": float(np.nansum(tokens)) / window
            if window > 0 and has_tokens
            else None,
            "per_request_output_tokens_per_s_p50": float(np.nanmedian(per_request))
            if has_tokens and np.isfinite(per_request).any()
            else None,
        },
        "latency": {
            "e2e_s": distribution(latency),
            "ttft_s": distribution(ttft),
            "itl_s": distribution(requests["itl_mean_s"][ok]),
            "tpot_s": distribution(tpot),
            **_stream_figures(requests),
        },
    }


def _stream_figures(requests: Any) -> dict[str, Any]:
    """Streamed requests' time to second token, longest gap, every single gap, and latency from
    the scheduled send time (open loop); left out where no request measured them."""
    ok = requests.ok
    figures = {
        "ttst_s": distribution(requests["ttst_s"][ok]),
        "itl_max_s": distribution(requests["itl_max_s"][ok]),
        "itl_gap_s": requests.gaps.figures(),
        "scheduled_s": distribution(requests["scheduled_latency_s"][ok]),
    }
    return {name: value for name, value in figures.items() if value is not None}


def _traffic_from_locust(run: RunData, warnings: list[str]) -> dict[str, Any]:
    assert run.locust is not None and run.locust.total is not None
    total = run.locust.total
    attempts, failed = total["requests"], total["failures"]
    warnings.append(
        "latency from Locust's CSVs: Locust counts failed requests in its percentiles "
        "(write requests.jsonl for percentiles of successes only)"
    )
    rps = total["requests_per_s"]
    latency = dict(total["latency_s"])
    latency["n"] = attempts
    return {
        "requests": {
            "source": "locust",
            "attempts": attempts,
            "ok": attempts - failed,
            "failed": failed,
        },
        "errors": {
            "rate": failed / attempts if attempts else None,
            "by_cause": {},
            "by_status": {},
        },
        "throughput": {
            "requests_per_s": rps * (attempts - failed) / attempts if attempts else None,
            "output_tokens_per_s": None,
        },
        "latency": {"e2e_s": latency, "ttft_s": None, "itl_s": None, "tpot_s": None},
    }


def _peak(columns: Columns | None, name: str) -> float | None:
    values = None if columns is None else columns.get(name)
    return None if values is None else float(np.nanmax(values))


def _last(columns: Columns | None, name: str) -> float | None:
    values = None if columns is None else columns.get(name)
    return None if values is None else float(values[np.isfinite(values)][-1])


def vram_per_gpu(vram: Columns | None) -> dict[int, Columns]:
    """The `vram` samples split by GPU index."""
    if vram is None:
        return {}
    gpus = vram.get("gpu")
    if gpus is None:
        return {0: vram}
    return {int(g): vram.where(gpus == g) for g in np.unique(gpus[np.isfinite(gpus)])}


def vram_unavailable_reason(run: RunData) -> str:
    gpus = (run.manifest.get("host") or {}).get("gpus") or {}
    if isinstance(gpus, dict) and gpus.get("reason"):
        return str(gpus["reason"])
    return "no vram samples recorded"


def _memory(run: RunData, warnings: list[str]) -> dict[str, Any]:
    ram, server = run.samples.get("ram"), run.samples.get("server")
    per_gpu = {
        str(gpu): {
            "peak_used_bytes": _peak(cols, "used_bytes"),
            "total_bytes": _last(cols, "total_bytes"),
            "peak_process_used_bytes": _peak(cols, "process_used_bytes"),
        }
        for gpu, cols in vram_per_gpu(run.samples.get("vram")).items()
    }
    peaks = [g["peak_used_bytes"] for g in per_gpu.values() if g["peak_used_bytes"] is not None]
    simulated = _peak(server, "sim_vram_bytes")
    sources = (["nvml"] if peaks else []) + (["simulated"] if simulated is not None else [])
    if not sources:
        note = f"VRAM: unavailable: {vram_unavailable_reason(run)}"
        warnings.append(note)
    elif sources == ["simulated"]:
        note = "VRAM simulated by the reference server (harness_sim_vram_bytes); no GPU measured"
    else:
        note = None
    cgroup_peak = _peak(ram, "cgroup_usage_bytes")
    return {
        "peak_rss_bytes": _peak(ram, "rss_bytes"),
        "peak_pss_bytes": _peak(ram, "pss_bytes"),
        "peak_system_used_bytes": _peak(ram, "system_used_bytes"),
        "system_total_bytes": _last(ram, "system_total_bytes"),
        "peak_cgroup_usage_bytes": cgroup_peak,
        "cgroup_shared": None if cgroup_peak is None else not cgroup_is_the_targets(ram),
        "cgroup_limit_bytes": _last(ram, "cgroup_limit_bytes"),
        "peak_vram_bytes": max(peaks) if peaks else None,
        "vram_per_gpu": per_gpu,
        "peak_sim_vram_bytes": simulated,
        "sim_vram_total_bytes": _last(server, "sim_vram_total_bytes"),
        "vram_source": "+".join(sources) or "unavailable",
        "vram_note": note,
    }


def completed_at(run: RunData, t: np.ndarray) -> np.ndarray | None:
    """Requests finished by each time in t: from requests.jsonl, else the `load` samples."""
    if run.requests is not None and len(run.requests):
        ends = np.sort(run.requests["t_end"][np.isfinite(run.requests["t_end"])])
        return np.searchsorted(ends, t, side="right").astype(float)
    load = run.samples.get("load")
    done = None if load is None else load.get("completed")
    if done is None:
        return None
    usable = np.isfinite(done)
    return np.interp(t, load.t[usable], done[usable], left=0.0)


def lifetime_boundaries(run: RunData) -> np.ndarray:
    """Times the target process was replaced: each lifetime is its own level in the leak fit."""
    return np.asarray([e["t"] for e in run.events_of(*_DEATH_KINDS)], dtype=float)


def memory_series(run: RunData) -> dict[str, tuple[str, Columns, str]]:
    """The series the leak check judges: {key: (label, columns, field)}."""
    series: dict[str, tuple[str, Columns, str]] = {}
    ram = run.samples.get("ram")
    if ram is not None:
        for name, label in (
            ("rss_bytes", "target RSS"),
            ("pss_bytes", "target PSS"),
            ("system_used_bytes", "system RAM used"),
        ):
            if ram.get(name) is not None:
                series["ram"] = (label, ram, name)
                break
    gpus = vram_per_gpu(run.samples.get("vram"))
    if gpus:
        gpu, cols = max(gpus.items(), key=lambda item: _peak(item[1], "used_bytes") or 0)
        if cols.get("used_bytes") is not None:
            series["vram"] = (f"GPU {gpu} VRAM used", cols, "used_bytes")
    server = run.samples.get("server")
    if server is not None and server.get("sim_vram_bytes") is not None:
        series["sim_vram"] = ("simulated VRAM", server, "sim_vram_bytes")
    return series


def _leaks(run: RunData) -> dict[str, Any]:
    boundaries = lifetime_boundaries(run)
    leaks = {}
    for key, (label, cols, name) in memory_series(run).items():
        result = leak_check(
            cols.t, cols.fields[name], completed=completed_at(run, cols.t), boundaries=boundaries
        )
        leaks[key] = {"series": label, **result.to_dict()}
    return leaks


def _event_counts(run: RunData, found: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for event in run.events:
        counts[event["kind"]] = counts.get(event["kind"], 0) + 1
    causes = [item["cause"] for item in found]
    server = run.samples.get("server")
    trims_metric = _peak(server, "context_trims_total")
    return {
        "counts": counts,
        "oom_kills": causes.count("oom_kill"),
        "oom_errors": causes.count("oom_error"),
        "crashes": causes.count("crash"),
        "unexpected_exits": sum(1 for item in found if not item.get("injected")),
        "restarts": counts.get(EventKind.RESTARTING, 0),
        "faults_injected": counts.get(EventKind.FAULT_INJECTED, 0),
        "memory_limit_exceeded": counts.get(EventKind.MEMORY_LIMIT_EXCEEDED, 0),
        "trims": max(counts.get(EventKind.TRIM, 0), int(trims_metric or 0)),
    }


def _results(run: RunData) -> dict[str, Any] | None:
    """Lost/duplicated results as the producer verified them (a `verification` event wins)."""
    verified = run.events_of(EventKind.VERIFICATION)
    if verified:
        block, source = verified[-1], "events.jsonl verification"
    else:
        key = next(
            (k for k in ("results", "verification") if isinstance(run.manifest.get(k), dict)), None
        )
        if key is None:
            return None
        block, source = run.manifest[key], f"manifest.json {key}"
    figures = {key: block.get(key) for key in ("expected", "received", "lost", "duplicated")}
    return {**figures, "source": source}


def _cost(run: RunData) -> dict[str, Any] | None:
    """CPU seconds per successful request of the driver and the target over the drive, as the
    producer measured them (harness/cost.py, manifest `cost`); None when it did not."""
    cost = run.manifest.get("cost")
    if not isinstance(cost, dict) or not cost.get("requests"):
        return None
    requests = cost["requests"]

    def per_request(key: str) -> float | None:
        value = cost.get(key)
        return value / requests if isinstance(value, (int, float)) else None

    return {
        "requests": requests,
        "cpu_s_per_request": per_request("cpu_s"),
        "driver_cpu_s_per_request": per_request("driver_cpu_s"),
        "target_cpu_s_per_request": per_request("target_cpu_s"),
    }


def _schedule(run: RunData, warnings: list[str]) -> dict[str, Any] | None:
    """Open loop: how late requests left against their schedule (attempts with a scheduled send
    time), and whether the client fell behind (p99 over the producer's limit): then its
    latencies from the actual send time understate what the schedule's users saw."""
    requests = run.requests
    lags = None if requests is None else requests["schedule_lag_s"]
    lags = None if lags is None else lags[np.isfinite(lags)]
    verdicts = run.events_of(EventKind.BEHIND_SCHEDULE, EventKind.SCHEDULE_KEPT)
    if lags is None or not len(lags):
        return None
    limit = (verdicts[-1] if verdicts else {}).get("limit_s") or DEFAULT_LAG_LIMIT_S
    lags = np.maximum(lags, 0.0)
    p50, p99 = np.percentile(lags, [50, 99])
    behind = bool(p99 > limit)
    if behind:
        warnings.append(
            f"behind schedule: send lag p99 {p99 * 1000:.1f} ms over the {limit * 1000:.0f} ms "
            "limit (the concurrency cap, a target that was down, or a busy load generator); "
            "judge latency from the scheduled send time (latency.scheduled_s)"
        )
    return {
        "arrivals": len(lags),
        "lag_p50_s": float(p50),
        "lag_p99_s": float(p99),
        "lag_max_s": float(lags.max()),
        "limit_s": float(limit),
        "behind": behind,
    }


def _slo(
    run: RunData, objectives: tuple[Objective, ...] | None, warnings: list[str]
) -> dict[str, Any] | None:
    """The SLO verdict and goodput (reports.slo), when objectives were given or stored."""
    if objectives is None:
        stored = run.manifest.get("slo")
        if not isinstance(stored, str) or not stored:
            return None
        try:
            objectives = parse_slo(stored)
        except UserError as exc:
            warnings.append(f"manifest.json slo not judged: {exc}")
            return None
    block = evaluate(run, objectives)
    if block["verdict"] == "unmeasured":
        unmeasured = [o["name"] for o in block["objectives"] if o["verdict"] == "unmeasured"]
        warnings.append(f"SLOs not measured in this run: {', '.join(unmeasured)}")
    return block


def _load_generator(run: RunData, warnings: list[str]) -> dict[str, Any] | None:
    """Was the client the bottleneck? Its CPU samples, and each driver process's own verdict
    (`load_generator` events: event-loop lag, loop-thread CPU, schedule lag)."""
    load = run.samples.get("load")
    cpu = None if load is None else load.get("cpu_percent")
    verdicts = run.events_of(EventKind.LOAD_GENERATOR)
    if cpu is None and not verdicts:
        return None
    figures: dict[str, Any] = {
        "cpu_percent_mean": None,
        "cpu_percent_p95": None,
        "cpu_percent_max": None,
        "saturated_share": None,
    }
    warning = None
    if cpu is not None and len(cpu[np.isfinite(cpu)]):
        cpu = cpu[np.isfinite(cpu)]
        share = float((cpu > CPU_SATURATED_PERCENT).mean())
        figures = {
            "cpu_percent_mean": float(cpu.mean()),
            "cpu_percent_p95": float(np.percentile(cpu, 95)),
            "cpu_percent_max": float(cpu.max()),
            "saturated_share": share,
        }
        if share > CPU_SATURATED_SHARE:
            warning = (
                f"load generator above {CPU_SATURATED_PERCENT:.0f}% of a core in {share:.0%} of "
                f"samples (peak {cpu.max():.0f}%): latency figures are inflated by the client"
            )
    saturated = [v for v in verdicts if v.get("saturated")]
    if saturated:
        warning = _saturated_warning(saturated, len(verdicts))
    if warning is not None:
        warnings.insert(0, warning)  # first: it changes how every other figure reads
    lags = [v["loop_lag_p99_s"] for v in verdicts if v.get("loop_lag_p99_s") is not None]
    return {
        **figures,
        "saturated": warning is not None,
        "processes": len(verdicts) or None,
        "saturated_processes": len(saturated),
        "loop_lag_p99_s": max(lags) if lags else None,
        "loop_busy_mean": max((v.get("loop_busy_mean") or 0.0 for v in verdicts), default=None),
        "warning": warning,
    }


def _saturated_warning(saturated: list[dict[str, Any]], processes: int) -> str:
    worst = max(saturated, key=lambda v: v.get("saturated_share") or 0.0)
    reasons = []
    if worst.get("saturated_windows"):
        busy = worst.get("loop_busy_mean") or 0.0
        lag = worst.get("loop_lag_p99_s") or 0.0
        reasons.append(
            f"its event loop was saturated in {worst['saturated_share']:.0%} of windows "
            f"(loop busy {busy:.0%} of the time on average, wake-up lag p99 {lag * 1000:.0f} ms)"
        )
    timers = worst.get("timer_lag") or {}
    if timers.get("behind"):
        reasons.append(
            f"it woke late for its arrivals (timer lag p99 {timers['lag_p99_s'] * 1000:.0f} ms)"
        )
    who = "the client" if processes == 1 else f"{len(saturated)} of {processes} client processes"
    return (
        f"CLIENT SATURATED: {who} could not keep up ({'; '.join(reasons) or 'see summary'}): "
        "the rates and latencies measured here are partly the load generator's own limit, not "
        "the target's. Run with more driver processes (--processes N), fewer other jobs on this "
        "machine, or a lower rate"
    )


# The cgroup is the target's own when its usage stays within this much of the target's RSS
# (page cache and the runtime included); above it, it holds other work (the harness itself).
_OWN_CGROUP_FACTOR = 4.0
_OWN_CGROUP_SLACK = 256 * 1024**2


def cgroup_is_the_targets(ram: Columns | None) -> bool:
    """Whether the sampled cgroup is the target's own, not a sandbox shared with the harness."""
    if ram is None or ram.get("cgroup_usage_bytes") is None or ram.get("rss_bytes") is None:
        return False
    usage, rss = ram.fields["cgroup_usage_bytes"], ram.fields["rss_bytes"]
    if not np.isfinite(usage).any() or not np.isfinite(rss).any():
        return False
    return bool(np.nanmax(usage) <= _OWN_CGROUP_FACTOR * np.nanmax(rss) + _OWN_CGROUP_SLACK)
