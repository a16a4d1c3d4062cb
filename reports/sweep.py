"""A capacity sweep's figure and report: Pareto panels and memory, from sweep.json only.

Three panels (matplotlib Agg, no pyplot): throughput against latency, per-user output tokens/s
against total output tokens/s (the serving trade-off: one request's speed against the server's),
and peak VRAM and RAM against the load with the budgets drawn in. Points on the Pareto frontier
(no other point has both more throughput and less latency) are joined; the best point is starred;
points out of the SLOs or the budget are drawn hollow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from harness.rundir import write_atomic
from reports.plots import png_bytes

SWEEP_PNG = "sweep.png"
SWEEP_HTML = "report.html"
_GIB = 1024**3


def _axis(document: Mapping[str, Any], unit: bool = False) -> str:
    axis = document.get("axis", "concurrency")
    return "rate (requests/s)" if unit and axis == "rate" else axis


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both: higher x (throughput) and lower y
    (latency); ordered by x."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], points[i][1]))
    front, best_y = [], float("inf")
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def latency_key(document: Mapping[str, Any]) -> tuple[str, str]:
    """The latency the throughput panel plots: TTFT p99 when measured, else end-to-end p99."""
    points = document["points"]
    if any(p["latency"].get("ttft_s.p99") is not None for p in points):
        return "ttft_s.p99", "TTFT p99 (ms)"
    return "e2e_s.p99", "end-to-end p99 (ms)"


def sweep_figure(document: Mapping[str, Any]) -> Figure | None:
    points = [p for p in document["points"] if p.get("requests_per_s")]
    if not points:
        return None
    figure = Figure(figsize=(15, 4.6), dpi=100)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.05, right=0.95, bottom=0.13, top=0.88, wspace=0.32)
    axes = figure.subplots(1, 3)
    best = (document.get("best") or {}).get("load")
    _throughput_panel(axes[0], document, points, best)
    _tokens_panel(axes[1], points, best)
    _memory_panel(axes[2], document, points)
    stop = document.get("stop") or {}
    figure.suptitle(
        f"Capacity sweep: {len(points)} points, stopped: {stop.get('reason', '?')}"
        + (f" (best: {_axis(document)} {best:g})" if best is not None else " (no usable point)"),
        fontsize=11,
    )
    return figure


def _mark(ax: Any, x: float, y: float, point: Mapping[str, Any], best: int | None) -> None:
    usable = point.get("usable", True)
    if point["load"] == best:
        ax.plot([x], [y], marker="*", markersize=16, color="#d62728", zorder=5)
    ax.plot(
        [x],
        [y],
        marker="o",
        markersize=7,
        color="#1f77b4",
        markerfacecolor="#1f77b4" if usable else "white",
        zorder=4,
    )
    ax.annotate(f"{point['load']:g}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)


def _throughput_panel(
    ax: Any, document: Mapping[str, Any], points: list[dict], best: int | None
) -> None:
    key, label = latency_key(document)
    pairs = [(p["requests_per_s"], (p["latency"].get(key) or float("nan")) * 1000) for p in points]
    for point, (x, y) in zip(points, pairs, strict=True):
        _mark(ax, x, y, point, best)
    front = pareto_front([pair for pair in pairs if pair[1] == pair[1]])
    finite = [pair for pair in pairs if pair[1] == pair[1]]
    if len(front) > 1:
        ax.plot([finite[i][0] for i in front], [finite[i][1] for i in front], color="#9ecae1")
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel(label)
    ax.set_title("Throughput vs latency (Pareto frontier joined)", fontsize=10)
    ax.grid(alpha=0.3)


def _tokens_panel(ax: Any, points: list[dict], best: int | None) -> None:
    usable = [p for p in points if p.get("per_user_tokens_per_s") and p.get("output_tokens_per_s")]
    if not usable:
        ax.text(0.5, 0.5, "no output token counts", ha="center", va="center", color="#666")
        ax.set_axis_off()
        return
    xs = [p["per_user_tokens_per_s"] for p in usable]
    ys = [p["output_tokens_per_s"] for p in usable]
    ax.plot(xs, ys, color="#c7c7c7", zorder=1)
    for point, x, y in zip(usable, xs, ys, strict=True):
        _mark(ax, x, y, point, best)
    ax.set_xlabel("per-user output tokens/s (p50 of requests)")
    ax.set_ylabel("total output tokens/s")
    ax.set_title("One request's speed vs the server's", fontsize=10)
    ax.grid(alpha=0.3)


def _memory_panel(ax: Any, document: Mapping[str, Any], points: list[dict]) -> None:
    """Peak VRAM (left axis, GiB) and the target's peak RAM (right axis, its own unit), each with
    its budget dashed: RAM in MiB would vanish on a VRAM scale."""
    loads = [p["load"] for p in points]
    vram = [
        (x, p["peak_vram_bytes"])
        for x, p in zip(loads, points, strict=True)
        if p.get("peak_vram_bytes")
    ]
    ram = [
        (x, p["peak_ram_bytes"])
        for x, p in zip(loads, points, strict=True)
        if p.get("peak_ram_bytes")
    ]
    if not vram and not ram:
        ax.text(0.5, 0.5, "no memory samples", ha="center", va="center", color="#666")
    handles = []
    if vram:
        source = points[0].get("vram_source") or "?"
        handles += ax.plot(
            [x for x, _ in vram],
            [v / _GIB for _, v in vram],
            marker="o",
            color="#2ca02c",
            label=f"peak VRAM ({source})",
        )
        if document.get("vram_budget_bytes"):
            handles.append(
                ax.axhline(
                    document["vram_budget_bytes"] / _GIB,
                    color="#2ca02c",
                    linestyle="--",
                    label="VRAM budget",
                )
            )
        ax.set_ylabel("VRAM (GiB)")
    if ram:
        budget = document.get("ram_budget_bytes")
        top = max([v for _, v in ram] + [budget or 0])
        scale, unit = (_GIB, "GiB") if top >= _GIB else (1024**2, "MiB")
        right = ax.twinx() if vram else ax
        handles += right.plot(
            [x for x, _ in ram],
            [v / scale for _, v in ram],
            marker="s",
            color="#ff7f0e",
            label="peak RAM (target)",
        )
        if budget:
            handles.append(
                right.axhline(budget / scale, color="#ff7f0e", linestyle="--", label="RAM budget")
            )
        right.set_ylabel(f"RAM ({unit})")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xticks(loads)
    ax.set_xticklabels([f"{x:g}" for x in loads])
    ax.set_xlabel(_axis(document, unit=True))
    ax.set_title("Peak memory per point", fontsize=10)
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper left")


def write_sweep_report(root: Path, document: Mapping[str, Any]) -> Path:
    """sweep.png and report.html in the sweep directory; returns the HTML's path."""
    from reports.html import render_sweep_html

    images = {}
    figure = sweep_figure(document)
    if figure is not None:
        images["sweep"] = png_bytes(figure)
        write_atomic(root / SWEEP_PNG, images["sweep"])
    path = root / SWEEP_HTML
    write_atomic(path, render_sweep_html(document, images).encode("utf-8"))
    return path
