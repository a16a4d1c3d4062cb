"""The engine's own view: vLLM's KV-cache, queue, preemption and prefix-cache metrics of a run.

The server sampler stores a target's /metrics as `server` rows with normalised names
(`vllm:kv_cache_usage_perc` -> `kv_cache_usage_perc`). vLLM renamed some of them between releases
and labels them per engine when it runs several; `canonical_engine_row` folds every spelling into
one canonical field per metric so the summary, the panel and compare read one name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.rundir import EventKind

if TYPE_CHECKING:
    from reports.rundata import Columns, RunData

# canonical field (the current vLLM name, normalised) -> older or alternative spellings, how
# series of several engines (labels) combine, and the name a reader of vLLM's docs knows
_Combine = Callable[[list[float]], float]
ENGINE_METRICS: dict[str, tuple[tuple[str, ...], _Combine, str]] = {
    "kv_cache_usage_perc": (("gpu_cache_usage_perc",), max, "vllm:kv_cache_usage_perc"),
    "num_requests_waiting": ((), sum, "vllm:num_requests_waiting"),
    "num_requests_running": ((), sum, "vllm:num_requests_running"),
    "num_preemptions_total": (("num_preemptions",), sum, "vllm:num_preemptions_total"),
    "request_queue_time_seconds_sum": ((), sum, "vllm:request_queue_time_seconds"),
    "request_queue_time_seconds_count": ((), sum, "vllm:request_queue_time_seconds"),
    "prefix_cache_hits_total": (
        ("gpu_prefix_cache_hits_total",),
        sum,
        "vllm:prefix_cache_hits_total",
    ),
    "prefix_cache_queries_total": (
        ("gpu_prefix_cache_queries_total",),
        sum,
        "vllm:prefix_cache_queries_total",
    ),
    "gpu_prefix_cache_hit_rate": ((), lambda v: sum(v) / len(v), "vllm:gpu_prefix_cache_hit_rate"),
}
ENGINE_FIELDS = tuple(ENGINE_METRICS)
NO_PANEL_NOTE = (
    "No engine panel: the target exposed no KV-cache usage or request-queue gauges at its /metrics"
)
_PLAN_CACHE_SIZE = 64

_Plan = tuple[tuple[str, tuple[str, ...], _Combine], ...]


def _plan(keys: Iterable[str]) -> _Plan:
    """Per canonical field whose value is not simply under its own key: the keys to combine."""
    keys = tuple(keys)
    plan = []
    for canonical, (aliases, combine, _) in ENGINE_METRICS.items():
        for name in (canonical, *aliases):
            sources = tuple(k for k in keys if k == name or k.startswith(name + "{"))
            if sources:
                if sources != (canonical,):
                    plan.append((canonical, sources, combine))
                break
    return tuple(plan)


class EngineRowReader:
    """`server` rows with their engine metrics under canonical names (old names and per-engine
    labelled series folded in). Plans are cached per key set: rows of one run share a few."""

    def __init__(self) -> None:
        self._plans: dict[tuple[str, ...], _Plan] = {}

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        keys = tuple(record)
        plan = self._plans.get(keys)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            plan = self._plans[keys] = _plan(keys)
        if not plan:
            return record
        record = dict(record)
        for canonical, sources, combine in plan:
            values = [
                float(v)
                for k in sources
                if isinstance(v := record[k], (int, float)) and not isinstance(v, bool)
            ]
            record[canonical] = combine(values) if values else None
        return record


def counter_increments(
    t: np.ndarray, values: np.ndarray, restarts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """A counter's increase per sample (times, increments) and the number of resets, or None.

    Prometheus' rule: a fall is a reset, after which the counter counted from zero; a restart of
    the target (a `started` event) between two samples is a reset too. The first sample counts
    from zero when the harness started that process (a `started` event at or before it), else it
    is the level the run began from."""
    finite = np.isfinite(values)
    if not finite.any():
        return None
    t, values = t[finite], values[finite]
    lifetimes = np.searchsorted(np.sort(restarts), t, side="right")
    steps = np.diff(values)
    reset = (steps < 0) | (lifetimes[1:] > lifetimes[:-1])
    increments = np.where(reset, values[1:], steps)
    first = values[:1] if lifetimes[0] > 0 else np.zeros(1)
    return t, np.concatenate((first, increments)), int(reset.sum())


def _increase(cols: Columns, name: str, restarts: np.ndarray) -> tuple[float, int] | None:
    values = cols.get(name)
    found = None if values is None else counter_increments(cols.t, values, restarts)
    if found is None:
        return None
    return float(found[1].sum()), found[2]


def _missing(*canonical: str) -> str:
    names = []
    for name in canonical:
        aliases, _, shown = ENGINE_METRICS[name]
        names += [shown] + [f"vllm:{alias}" for alias in aliases]
    return "the target exposed none of " + ", ".join(dict.fromkeys(names))


def restart_times(run: RunData) -> np.ndarray:
    """When a target process started: its counters count from zero after each."""
    return np.asarray([e["t"] for e in run.events_of(EventKind.STARTED)], dtype=float)


def engine_summary(run: RunData) -> dict[str, Any]:
    """summary.json's `engine` block; a figure the target did not expose is null, its reason in
    `unavailable`."""
    server = run.samples.get("server")
    figures: dict[str, Any] = dict.fromkeys(
        (
            "kv_cache_usage_peak",
            "kv_cache_usage_mean",
            "requests_waiting_peak",
            "requests_waiting_mean",
            "requests_running_peak",
            "preemptions",
            "queue_time_mean_s",
            "prefix_cache_hit_rate",
        )
    )
    unavailable: dict[str, str] = {}
    block: dict[str, Any] = {"samples": 0 if server is None else len(server), **figures}
    if server is None or not len(server):
        reason = "no server samples: no /metrics URL was scraped (or it never answered)"
        return {**block, "counter_resets": None, "unavailable": dict.fromkeys(figures, reason)}

    for stem, field, with_mean in (
        ("kv_cache_usage", "kv_cache_usage_perc", True),
        ("requests_waiting", "num_requests_waiting", True),
        ("requests_running", "num_requests_running", False),
    ):
        values = server.get(field)
        if values is None:
            for key in (f"{stem}_peak", f"{stem}_mean") if with_mean else (f"{stem}_peak",):
                unavailable[key] = _missing(field)
            continue
        block[f"{stem}_peak"] = float(np.nanmax(values))
        if with_mean:
            block[f"{stem}_mean"] = float(np.nanmean(values))

    restarts = restart_times(run)
    resets: int | None = None
    preempted = _increase(server, "num_preemptions_total", restarts)
    if preempted is None:
        unavailable["preemptions"] = _missing("num_preemptions_total")
    else:
        block["preemptions"], resets = preempted[0], max(resets or 0, preempted[1])

    queue_sum = _increase(server, "request_queue_time_seconds_sum", restarts)
    queue_count = _increase(server, "request_queue_time_seconds_count", restarts)
    if queue_sum is None or queue_count is None:
        unavailable["queue_time_mean_s"] = _missing("request_queue_time_seconds_sum") + (
            " (histogram _sum and _count)"
        )
    elif queue_count[0] <= 0:
        unavailable["queue_time_mean_s"] = "no request was scheduled during the run"
    else:
        block["queue_time_mean_s"] = queue_sum[0] / queue_count[0]
        resets = max(resets or 0, queue_count[1])

    hits = _increase(server, "prefix_cache_hits_total", restarts)
    queries = _increase(server, "prefix_cache_queries_total", restarts)
    rate_gauge = server.get("gpu_prefix_cache_hit_rate")
    if hits is not None and queries is not None:
        if queries[0] > 0:
            block["prefix_cache_hit_rate"] = hits[0] / queries[0]
        else:
            unavailable["prefix_cache_hit_rate"] = "no prefix-cache lookups during the run"
    elif rate_gauge is not None:  # older vLLM: the engine's own hit rate since it started
        block["prefix_cache_hit_rate"] = float(rate_gauge[np.isfinite(rate_gauge)][-1])
    else:
        unavailable["prefix_cache_hit_rate"] = _missing(
            "prefix_cache_hits_total", "prefix_cache_queries_total", "gpu_prefix_cache_hit_rate"
        )
    return {**block, "counter_resets": resets, "unavailable": unavailable}


def preemption_times(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    """Sample times at which the preemption counter rose, and by how much (empty if absent)."""
    server = run.samples.get("server")
    values = None if server is None else server.get("num_preemptions_total")
    found = None if values is None else counter_increments(server.t, values, restart_times(run))
    if found is None:
        return np.empty(0), np.empty(0)
    t, increments, _ = found
    rose = increments > 0
    return t[rose], increments[rose]


def has_engine_gauges(server: Columns | None) -> bool:
    """Whether the panel has anything to draw: KV usage or a queue gauge."""
    if server is None:
        return False
    fields = ("kv_cache_usage_perc", "num_requests_waiting", "num_requests_running")
    return any(server.get(name) is not None for name in fields)
