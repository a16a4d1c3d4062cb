"""Figures of one run (matplotlib Agg, no pyplot state): memory, engine, recovery, latency,
throughput.

Each `*_figure` function returns a Figure (or None when the run has nothing to draw) so tests can
inspect its artists; event markers carry `gid="event:<key>"` and `markers_in()` reads them back.
Long series are min/max downsampled (reports.downsample) so peaks survive at any run length.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.rundir import EventKind
from reports.downsample import downsample
from reports.engine import has_engine_gauges, preemption_times
from reports.recovery import STAGES, incidents
from reports.rundata import Columns, RunData
from reports.summary import (
    cgroup_is_the_targets,
    completed_at,
    lifetime_boundaries,
    vram_per_gpu,
    vram_unavailable_reason,
)

MAX_POINTS = 4000  # per line; min/max pairs, so 2000 buckets
DPI = 100
GIB = 1024**3
MIB = 1024**2
MIN_BOX_POINTS = 5  # a box plot from fewer points draws quartiles that are not there

# key -> (legend label, colour, line style); exits are keyed by their cause.
MARKERS: dict[str, tuple[str, str, str]] = {
    "oom_kill": ("OOM kill", "#d62728", "-"),
    "oom_error": ("OOM error", "#ff7f0e", "-"),
    "crash": ("crash", "#8c564b", "-"),
    "exit": ("exit", "#8c564b", "-"),
    EventKind.RESTARTING: ("restart", "#9467bd", "--"),
    EventKind.RECOVERED: ("recovered", "#2ca02c", "--"),
    EventKind.FAULT_INJECTED: ("fault injected", "#e377c2", ":"),
    EventKind.MEMORY_LIMIT_EXCEEDED: ("memory limit exceeded", "#17becf", "-."),
    EventKind.GAVE_UP: ("gave up restarting", "#000000", "-"),
    EventKind.DEGRADED: ("degraded", "#bcbd22", ":"),
    EventKind.RESTORED: ("restored", "#bcbd22", "-."),
}
TRIM = EventKind.TRIM  # frequent: drawn as ticks along the bottom rather than full-height lines
_STAGE_LABELS = {
    "seconds_to_up": "process up",
    "seconds_to_ready": "ready",
    "seconds_to_first_success": "first success",
}


@dataclass(frozen=True)
class TimeAxis:
    """Run-relative time in a unit that suits the run's length."""

    t0: float
    scale: float
    label: str

    @classmethod
    def for_run(cls, run: RunData, duration_s: float | None) -> TimeAxis:
        duration = duration_s or 0.0
        t0 = run.t0 or 0.0
        if duration < 300:
            return cls(t0, 1.0, "time since start (s)")
        if duration < 3 * 3600:
            return cls(t0, 60.0, "time since start (min)")
        return cls(t0, 3600.0, "time since start (h)")

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        return (np.asarray(t, dtype=float) - self.t0) / self.scale


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure rendered as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def event_markers(run: RunData) -> dict[str, list[float]]:
    """Marker key -> unix times, from events.jsonl (normal stops are not marked)."""
    markers: dict[str, list[float]] = {}
    for event in run.events:
        kind = event["kind"]
        if kind == EventKind.EXITED:
            cause = event.get("cause")
            if cause == "stopped":
                continue
            key = cause if cause in MARKERS else "exit"
        elif kind in MARKERS or kind == TRIM:
            key = kind
        else:
            continue
        markers.setdefault(key, []).append(event["t"])
    return markers


def _draw_markers(ax: Any, markers: dict[str, list[float]], axis: TimeAxis) -> list[Line2D]:
    """Vertical lines per marker kind (one collection each), trims as ticks; legend proxies."""
    proxies = []
    for key, times in markers.items():
        x = axis(np.asarray(times))
        if key == TRIM:
            ax.plot(
                x,
                np.zeros_like(x),
                linestyle="none",
                marker="|",
                markersize=8,
                color="#7f7f7f",
                transform=ax.get_xaxis_transform(),
                gid=f"event:{key}",
            )
            proxies.append(
                Line2D([], [], color="#7f7f7f", marker="|", linestyle="none", label="trim")
            )
            continue
        label, colour, style = MARKERS[key]
        ax.vlines(
            x,
            0,
            1,
            transform=ax.get_xaxis_transform(),
            colors=colour,
            linestyles=style,
            linewidth=1.2,
            alpha=0.8,
            gid=f"event:{key}",
        )
        proxies.append(Line2D([], [], color=colour, linestyle=style, label=f"{label} ({len(x)})"))
    return proxies


def markers_in(figure: Figure) -> dict[str, list[float]]:
    """The event markers drawn on a figure's first axes: key -> x positions (tests read these)."""
    found: dict[str, list[float]] = {}
    axes = figure.axes[0]
    for artist in [*axes.collections, *axes.lines]:
        gid = artist.get_gid() or ""
        if not gid.startswith("event:"):
            continue
        key = gid.removeprefix("event:")
        if isinstance(artist, LineCollection):
            xs = [float(segment[0][0]) for segment in artist.get_segments()]
        else:
            xs = [float(x) for x in artist.get_xdata()]
        found.setdefault(key, []).extend(xs)
    return found


def _series(
    ax: Any,
    axis: TimeAxis,
    t: np.ndarray,
    y: np.ndarray,
    scale: float,
    breaks: np.ndarray | None = None,
    **style: Any,
):
    finite = np.isfinite(y)
    if not finite.any():
        return None
    xs, ys = downsample(t[finite], y[finite] / scale, MAX_POINTS, breaks=breaks)
    (line,) = ax.plot(axis(xs), ys, linewidth=1.1, **style)
    return line


def _byte_unit(peak: float) -> tuple[float, str]:
    return (GIB, "GiB") if peak >= 2 * GIB else (MIB, "MiB")


def _progress_twin(ax: Any, run: RunData, axis: TimeAxis, reference: Columns | None) -> Any:
    """Requests completed (or Locust users) on a second y axis, on the same time axis."""
    load = run.samples.get("load")
    twin = None
    if reference is not None and len(reference):
        done = completed_at(run, reference.t)
        if done is not None and done.max() > 0:
            twin = ax.twinx()
            xs, ys = downsample(reference.t, done, MAX_POINTS)
            twin.plot(
                axis(xs), ys, color="#555555", linestyle=":", linewidth=1.0, label="completed"
            )
            twin.set_ylabel("requests completed")
    users = None if load is None else load.get("users")
    if twin is None and users is not None:
        twin = ax.twinx()
        xs, ys = downsample(load.t, users, MAX_POINTS)
        twin.plot(axis(xs), ys, color="#555555", linestyle=":", linewidth=1.0, label="users")
        twin.set_ylabel("users")
    elif twin is None and run.locust is not None and run.locust.history is not None:
        history = run.locust.history
        twin = ax.twinx()
        twin.plot(
            axis(history["t"]), history["users"], color="#555555", linestyle=":", label="users"
        )
        twin.set_ylabel("users")
    return twin


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555555")


def _ram_panel(
    ax: Any,
    axis: TimeAxis,
    ram: Columns | None,
    fields: tuple,
    title: str,
    breaks: np.ndarray | None = None,
) -> float | None:
    """Lines for the given (field, label, colour) of the `ram` samples in MiB or GiB; the scale."""
    present = [
        (f, label, c) for f, label, c in fields if ram is not None and ram.get(f) is not None
    ]
    ax.set_title(title)
    if not present:
        _note(ax, f"{title}: no samples recorded")
        return None
    assert ram is not None
    scale, unit = _byte_unit(max(float(np.nanmax(ram.fields[f])) for f, _, _ in present))
    for name, label, colour in present:
        _series(ax, axis, ram.t, ram.fields[name], scale, breaks, label=label, color=colour)
    ax.set_ylabel(unit)
    return scale


def memory_figure(run: RunData, duration_s: float | None = None) -> Figure | None:
    """Target RSS/PSS/cgroup, system RAM and VRAM (NVML or simulated) over time, events marked,
    requests completed on a second axis of the first panel."""
    ram, server = run.samples.get("ram"), run.samples.get("server")
    gpus = vram_per_gpu(run.samples.get("vram"))
    simulated = None if server is None else server.get("sim_vram_bytes")
    if ram is None and not gpus and simulated is None:
        return None
    axis = TimeAxis.for_run(run, duration_s)
    markers = event_markers(run)
    figure = _new_figure(12, 9)
    ax_target, ax_system, ax_vram = figure.subplots(3, 1, sharex=True, height_ratios=[3, 1.4, 2])

    own_cgroup = cgroup_is_the_targets(ram)
    cgroup = (("cgroup_usage_bytes", "cgroup usage", "#8c564b"),)
    scale = _ram_panel(
        ax_target,
        axis,
        ram,
        (
            ("rss_bytes", "target RSS", "#1f77b4"),
            ("pss_bytes", "target PSS", "#ff7f0e"),
            *(cgroup if own_cgroup else ()),
        ),
        "Target process memory",
        lifetime_boundaries(run),
    )
    limit = None if ram is None else ram.get("cgroup_limit_bytes")
    if own_cgroup and limit is not None and scale is not None:
        ax_target.axhline(
            np.nanmin(limit) / scale, color="#8c564b", linestyle="--", label="cgroup limit"
        )
    proxies = _draw_markers(ax_target, markers, axis)
    twin = _progress_twin(ax_target, run, axis, ram if ram is not None else server)
    handles = ax_target.get_legend_handles_labels()[0] + proxies
    if twin is not None:
        handles += twin.get_legend_handles_labels()[0]
    if handles:
        _legend_outside(ax_target, handles, twin is not None)

    shared = (("cgroup_usage_bytes", "cgroup usage (shared with the harness)", "#8c564b"),)
    _ram_panel(
        ax_system,
        axis,
        ram,
        (("system_used_bytes", "system RAM used", "#1f77b4"), *(() if own_cgroup else shared)),
        "System RAM",
    )
    total = None if ram is None else ram.get("system_total_bytes")
    if total is not None:
        ax_system.set_title(f"System RAM (of {np.nanmax(total) / GIB:.1f} GiB)")
    _draw_markers(ax_system, markers, axis)
    if ax_system.get_legend_handles_labels()[0]:
        _legend_outside(ax_system, ax_system.get_legend_handles_labels()[0], False)

    _vram_panel(ax_vram, run, axis, gpus, server)
    _draw_markers(ax_vram, markers, axis)
    ax_vram.set_xlabel(axis.label)
    _simulated_hours_axis(ax_target, run, axis)
    return figure


def _legend_outside(ax: Any, handles: list, twin: bool) -> None:
    """The legend right of the panel (past a second axis's labels), never over the data."""
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.09 if twin else 1.01, 1.0),
        borderaxespad=0.0,
        fontsize=8,
    )


def _simulated_hours_axis(ax: Any, run: RunData, axis: TimeAxis) -> None:
    """A second time axis on top, in simulated hours, for a run on the simulated server at a
    finite --speed (simulated time = wall time x speed)."""
    speed = (run.manifest.get("simulated") or {}).get("speed")
    if not isinstance(speed, (int, float)) or not 0 < speed < math.inf:
        return
    factor = axis.scale * speed / 3600.0
    top = ax.secondary_xaxis("top", functions=(lambda x: x * factor, lambda h: h / factor))
    top.set_xlabel(f"simulated hours (at --speed {speed:g})")


def _vram_panel(
    ax: Any, run: RunData, axis: TimeAxis, gpus: dict[int, Columns], server: Columns | None
) -> None:
    simulated = None if server is None else server.get("sim_vram_bytes")
    peaks = [
        np.nanmax(c.get("total_bytes") if c.get("total_bytes") is not None else c.get("used_bytes"))
        for c in gpus.values()
        if c.get("used_bytes") is not None
    ]
    if simulated is not None:
        total = server.get("sim_vram_total_bytes")
        peaks.append(np.nanmax(total if total is not None else simulated))
    if not peaks:
        _note(ax, f"VRAM: unavailable: {vram_unavailable_reason(run)}")
        ax.set_yticks([])
        ax.set_title("VRAM")
        return
    scale, unit = _byte_unit(max(peaks))
    for gpu, cols in gpus.items():
        used = cols.get("used_bytes")
        if used is None:
            continue
        line = _series(ax, axis, cols.t, used, scale, label=f"GPU {gpu} used")
        total = cols.get("total_bytes")
        if total is not None and line is not None:
            ax.axhline(
                np.nanmax(total) / scale,
                color=line.get_color(),
                linestyle="--",
                linewidth=0.8,
                label=f"GPU {gpu} total",
            )
    if simulated is not None:
        _series(
            ax,
            axis,
            server.t,
            simulated,
            scale,
            lifetime_boundaries(run),  # the server's own figure: each restart starts anew
            label="simulated VRAM (server metric)",
            color="#9467bd",
        )
        total = server.get("sim_vram_total_bytes")
        if total is not None:
            ax.axhline(
                np.nanmax(total) / scale,
                color="#9467bd",
                linestyle="--",
                linewidth=0.8,
                label="simulated VRAM total",
            )
    title = "VRAM (simulated by the reference server, not measured)" if not gpus else "VRAM"
    if gpus and simulated is not None:
        title = "VRAM (NVML) and simulated VRAM (reference server)"
    ax.set_title(title)
    ax.set_ylabel(unit)
    _legend_outside(ax, ax.get_legend_handles_labels()[0], False)


def engine_figure(run: RunData, duration_s: float | None = None) -> Figure | None:
    """The engine's own view: KV-cache usage (%) with preemptions marked, and requests waiting and
    running; None when the target exposed none of these gauges (the page says so in one line)."""
    server = run.samples.get("server")
    if not has_engine_gauges(server):
        return None
    assert server is not None
    axis = TimeAxis.for_run(run, duration_s)
    markers = event_markers(run)
    breaks = lifetime_boundaries(run)
    figure = _new_figure(12, 5.5)
    ax_kv, ax_queue = figure.subplots(2, 1, sharex=True)

    usage = server.get("kv_cache_usage_perc")
    ax_kv.set_title("KV-cache usage (the engine's own metric)")
    if usage is None:
        _note(ax_kv, "KV-cache usage: not exposed by the target")
    else:
        _series(
            ax_kv,
            axis,
            server.t,
            usage,
            0.01,
            breaks,
            label="KV-cache usage",
            color="#1f77b4",
            gid="engine:kv_cache_usage",
        )
        ax_kv.set_ylim(0, 105)
    ax_kv.set_ylabel("% of KV-cache blocks")
    proxies = _draw_markers(ax_kv, markers, axis)
    when, count = preemption_times(run)
    if len(when):
        ax_kv.plot(
            axis(when),
            np.ones_like(when),
            linestyle="none",
            marker="v",
            markersize=7,
            color="#d62728",
            transform=ax_kv.get_xaxis_transform(),
            gid="event:preemption",
        )
        proxies.append(
            Line2D(
                [],
                [],
                color="#d62728",
                marker="v",
                linestyle="none",
                label=f"preemptions ({count.sum():,.0f})",
            )
        )
    handles = ax_kv.get_legend_handles_labels()[0] + proxies
    if handles:
        _legend_outside(ax_kv, handles, False)

    ax_queue.set_title("Requests in the engine")
    drawn = False
    for name, label, colour in (
        ("num_requests_waiting", "waiting", "#ff7f0e"),
        ("num_requests_running", "running", "#2ca02c"),
    ):
        values = server.get(name)
        if values is not None:
            _series(
                ax_queue,
                axis,
                server.t,
                values,
                1.0,
                breaks,
                label=label,
                color=colour,
                gid=f"engine:{name}",
            )
            drawn = True
    if drawn:
        _legend_outside(ax_queue, ax_queue.get_legend_handles_labels()[0], False)
    else:
        _note(ax_queue, "requests waiting/running: not exposed by the target")
    ax_queue.set_ylabel("requests")
    _draw_markers(ax_queue, markers, axis)
    ax_queue.set_xlabel(axis.label)
    return figure


def recovery_figure(run: RunData) -> Figure | None:
    """Per incident: seconds from death to process up, ready and first success (requests failed
    noted above); right, each stage's distribution across incidents."""
    found = [item for item in incidents(run.events) if item.get("recovered")]
    if not found:
        return None
    figure = _new_figure(12, 4.5)
    ax_bars, ax_dist = figure.subplots(1, 2, width_ratios=[2, 1])
    positions = np.arange(len(found))
    width = 0.8 / len(STAGES)
    colours = ("#1f77b4", "#ff7f0e", "#2ca02c")
    for i, (stage, colour) in enumerate(zip(STAGES, colours, strict=True)):
        values = [item.get(stage) if item.get(stage) is not None else np.nan for item in found]
        ax_bars.bar(
            positions + (i - 1) * width,
            values,
            width,
            label=_STAGE_LABELS[stage],
            color=colour,
            gid=f"stage:{stage}",
        )
    t0 = run.t0 or 0.0
    labels = [
        f"#{n + 1} {item['cause']}\n@{(item['death_t'] - t0) / 60:.1f} min"
        for n, item in enumerate(found)
    ]
    ax_bars.set_xticks(positions, labels, fontsize=8)
    for position, item in zip(positions, found, strict=True):
        failed = item.get("requests_failed")
        if failed is not None:
            top = max((item.get(stage) or 0.0) for stage in STAGES)
            ax_bars.annotate(
                f"{failed} failed",
                (position, top),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 3),
                textcoords="offset points",
            )
    ax_bars.set_ylabel("seconds since death")
    ax_bars.set_title(f"Recovery per incident ({len(found)})")
    ax_bars.legend(fontsize=8)

    columns = [[item[s] for item in found if item.get(s) is not None] for s in STAGES]
    kept = [(i, values) for i, values in enumerate(columns) if values]
    boxed = [(i, values) for i, values in kept if len(values) >= MIN_BOX_POINTS]
    if boxed:  # a box of fewer points draws quartiles that are not there: points only
        ax_dist.boxplot([v for _, v in boxed], positions=[i for i, _ in boxed], widths=0.5)
    if kept:
        rng = np.random.default_rng(0)  # fixed jitter: the same run draws the same picture
        for i, values in kept:
            ax_dist.scatter(
                i + rng.uniform(-0.12, 0.12, len(values)), values, s=12, color=colours[i], zorder=3
            )
    ax_dist.set_xticks(range(len(STAGES)), [_STAGE_LABELS[s] for s in STAGES], fontsize=8)
    few = "" if len(boxed) == len(kept) else f" (boxes from {MIN_BOX_POINTS} incidents on)"
    ax_dist.set_title(f"Distribution across incidents{few}")
    ax_dist.set_ylabel("seconds since death")
    return figure


def _bin_edges(start: float, end: float, n: int) -> np.ndarray:
    bins = int(min(300, max(10, n // 50)))
    return np.linspace(start, end, bins + 1)


def binned_percentiles(
    t: np.ndarray, values: np.ndarray, edges: np.ndarray, quantiles: tuple[float, ...]
) -> np.ndarray:
    """Per time bin, the given quantiles (0-1) of the values in it (nearest rank); NaN if empty."""
    finite = np.isfinite(t) & np.isfinite(values)
    t, values = t[finite], values[finite]
    bins = len(edges) - 1
    index = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, bins - 1)
    order = np.lexsort((values, index))
    index, values = index[order], values[order]
    counts = np.bincount(index, minlength=bins)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    result = np.full((len(quantiles), bins), np.nan)
    filled = counts > 0
    for row, q in enumerate(quantiles):
        rank = starts + np.floor(q * (counts - 1)).astype(int)
        result[row, filled] = values[rank[filled]]
    return result


def _merge_identical(
    panels: list[tuple[str, np.ndarray, np.ndarray]], first: str, second: str
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """One panel for two figures that are the same request by request (ITL and TPOT, when
    every streamed chunk is one token), labelled with both names."""
    found = {label: i for i, (label, _, _) in enumerate(panels)}
    if first not in found or second not in found:
        return panels
    a, b = panels[found[first]][2], panels[found[second]][2]
    if not np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True):
        return panels
    merged = f"{first} = {second}"
    return [
        (merged, t, v) if label == first else (label, t, v)
        for label, t, v in panels
        if label != second
    ]


def latency_figure(run: RunData, duration_s: float | None = None) -> Figure | None:
    """p50/p95/p99 over time of end-to-end latency, TTFT, ITL and TPOT (successful requests)."""
    axis = TimeAxis.for_run(run, duration_s)
    markers = event_markers(run)
    requests = run.requests
    panels: list[tuple[str, np.ndarray, np.ndarray]] = []
    edges = None
    if requests is not None and len(requests):
        ok = requests.ok
        t_end = requests["t_end"][ok]
        if len(t_end):
            edges = _bin_edges(np.nanmin(t_end), np.nanmax(t_end) + 1e-9, len(t_end))
            for name, label in (
                ("latency_s", "end-to-end latency"),
                ("ttft_s", "TTFT"),
                ("itl_mean_s", "ITL (per-request mean)"),
                ("tpot_s", "TPOT"),
            ):
                values = requests[name][ok]
                if np.isfinite(values).any():
                    panels.append((label, t_end, values))
            panels = _merge_identical(panels, "ITL (per-request mean)", "TPOT")
    history = None if run.locust is None else run.locust.history
    if not panels and history is None:
        return None
    rows = max(len(panels), 1)
    figure = _new_figure(12, 2.6 * rows + 0.6)
    axes = np.atleast_1d(figure.subplots(rows, 1, sharex=True))
    centres = None if edges is None else (edges[:-1] + edges[1:]) / 2
    for ax, (label, t, values) in zip(axes, panels, strict=False):
        figures = binned_percentiles(t, values, edges, (0.5, 0.95, 0.99))
        for row, (name, style) in enumerate((("p50", "-"), ("p95", "--"), ("p99", ":"))):
            ax.plot(
                axis(centres),
                figures[row] * 1000,
                linestyle=style,
                label=name,
                gid=f"{label}:{name}",
            )
        ax.set_ylabel(f"{label} (ms)")
        _legend_outside(ax, ax.get_legend_handles_labels()[0], False)
    if not panels:
        ax = axes[0]
        for name in ("p50", "p95", "p99"):
            ax.plot(
                axis(history["t"]),
                history[f"{name}_s"] * 1000,
                label=f"{name} (Locust, incl. failures)",
            )
        ax.set_ylabel("response time (ms)")
        _legend_outside(ax, ax.get_legend_handles_labels()[0], False)
    for ax in axes:
        _draw_markers(ax, markers, axis)
    axes[0].set_title("Latency percentiles over time (successful requests)")
    axes[-1].set_xlabel(f"{axis.label}; requests binned by completion time")
    return figure


def throughput_figure(run: RunData, duration_s: float | None = None) -> Figure | None:
    """Successful and failed requests/s per time bin; output tokens/s in a panel of its own
    (on one axis the two lines coincide whenever answers are of similar length)."""
    axis = TimeAxis.for_run(run, duration_s)
    requests = run.requests
    markers = event_markers(run)
    handles: list[Any] = []
    token_rate = None
    if requests is not None and len(requests):
        t_end = requests["t_end"]
        finite = np.isfinite(t_end)
        edges = _bin_edges(np.nanmin(t_end), np.nanmax(t_end) + 1e-9, int(finite.sum()))
        width = edges[1] - edges[0]
        centres = axis((edges[:-1] + edges[1:]) / 2)
        ok = requests.ok & finite
        failed = ~requests.ok & finite
        tokens = requests["output_tokens"]
        usable = ok & np.isfinite(tokens)
        if usable.any():
            token_rate = np.histogram(t_end[usable], edges, weights=tokens[usable])[0] / width
        figure = _new_figure(12, 5.6 if token_rate is not None else 3.8)
        axes = np.atleast_1d(figure.subplots(2 if token_rate is not None else 1, 1, sharex=True))
        ax = axes[0]
        ok_rate = np.histogram(t_end[ok], edges)[0] / width
        handles += ax.plot(centres, ok_rate, color="#1f77b4", label="successful req/s")
        if failed.any():
            fail_rate = np.histogram(t_end[failed], edges)[0] / width
            handles += ax.plot(
                centres, fail_rate, color="#000000", linewidth=0.9, label="failed req/s"
            )
        if token_rate is not None:
            tokens_ax = axes[1]
            tokens_ax.plot(centres, token_rate, color="#17becf", label="output tokens/s")
            tokens_ax.set_ylabel("output tokens/s")
            _draw_markers(tokens_ax, markers, axis)
    elif run.locust is not None and run.locust.history is not None:
        history = run.locust.history
        figure = _new_figure(12, 3.8)
        axes = np.atleast_1d(figure.subplots())
        ax = axes[0]
        x = axis(history["t"])
        handles += ax.plot(x, history["requests_per_s"], color="#1f77b4", label="req/s (Locust)")
        handles += ax.plot(
            x, history["failures_per_s"], color="#d62728", label="failures/s (Locust)"
        )
    else:
        return None
    ax.set_ylabel("requests/s")
    axes[-1].set_xlabel(f"{axis.label}; requests binned by completion time")
    ax.set_title("Throughput")
    handles += _draw_markers(ax, markers, axis)
    _legend_outside(ax, handles, False)
    return figure


def all_figures(run: RunData, duration_s: float | None) -> dict[str, Figure]:
    """Every figure the run has data for, by name (the PNG's stem), in reading order."""
    figures = {
        "memory": memory_figure(run, duration_s),
        "engine": engine_figure(run, duration_s),
        "recovery": recovery_figure(run),
        "latency": latency_figure(run, duration_s),
        "throughput": throughput_figure(run, duration_s),
    }
    return {name: figure for name, figure in figures.items() if figure is not None}
