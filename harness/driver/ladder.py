"""The scale ladder's arithmetic: straight-line fits of a figure against N, and extrapolation.

The team's plan is 5K, then 10K, 50K and 170K; fitting time, peak memory and leak slope against N
on the small rungs says what the full run will cost before it is attempted. A fit is shown with its
formula and R², so a poor straight line is visible rather than trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from harness.units import format_bytes


def _seconds(value: float) -> str:
    return f"{value:,.1f} s"


def _mb_per_1k(value: float) -> str:
    return f"{value:.3f} MB/1K"


# figure -> (label, formatter); the order of the table's columns
FIGURES: dict[str, tuple[str, Callable[[float], str]]] = {
    "seconds": ("time", _seconds),
    "peak_rss_bytes": ("target RSS", format_bytes),
    "peak_vram_bytes": ("VRAM", format_bytes),
    "leak_mb_per_1k_requests": ("leak slope", _mb_per_1k),
    "driver_peak_rss_bytes": ("driver RSS", format_bytes),
}


@dataclass(frozen=True)
class LinearFit:
    """y = intercept + slope * n, by least squares over the rungs that measured the figure."""

    intercept: float
    slope: float
    r2: float | None  # None with two points (any line fits two points exactly)
    points: int

    def at(self, n: float) -> float:
        return self.intercept + self.slope * n

    def formula(self, label: str, fmt: Callable[[float], str]) -> str:
        """e.g. "time = 0.5 s + 1.0 s per 1K candidates (R² 0.9993)"."""
        r2 = "n/a with 2 points" if self.r2 is None else f"{self.r2:.4f}"
        sign = "+" if self.slope >= 0 else "-"
        per_1k = fmt(abs(self.slope) * 1000)
        return f"{label} = {fmt(self.intercept)} {sign} {per_1k} per 1K candidates (R² {r2})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_line(xs: Sequence[float], ys: Sequence[float | None]) -> LinearFit | None:
    """Least squares of ys on xs (None ys skipped); None with fewer than two distinct xs."""
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if y is not None]
    if len({x for x, _ in pairs}) < 2:
        return None
    n = len(pairs)
    mean_x = sum(x for x, _ in pairs) / n
    mean_y = sum(y for _, y in pairs) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in pairs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in pairs)
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    r2 = None
    if n > 2:
        ss_tot = sum((y - mean_y) ** 2 for _, y in pairs)
        ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in pairs)
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return LinearFit(intercept, slope, r2, n)


def rung_figures(
    summary: dict[str, Any] | None, seconds: float, driver_peak_rss_bytes: int | None
) -> dict[str, Any]:
    """The figures of one rung: timing from the run, memory and leak from the reporter's summary."""
    memory = (summary or {}).get("memory") or {}
    leak = ((summary or {}).get("leak") or {}).get("ram") or {}
    vram = memory.get("peak_vram_bytes")
    vram_source = "nvml" if vram is not None else None
    if vram is None and memory.get("peak_sim_vram_bytes") is not None:
        vram, vram_source = memory["peak_sim_vram_bytes"], "simulated"
    return {
        "seconds": round(seconds, 3),
        "peak_rss_bytes": memory.get("peak_rss_bytes"),
        "peak_vram_bytes": vram,
        "vram_source": vram_source,
        "leak_mb_per_1k_requests": leak.get("mb_per_1k_requests"),
        "driver_peak_rss_bytes": driver_peak_rss_bytes,
    }


def extrapolate(rungs: list[dict[str, Any]], target_n: int) -> dict[str, Any]:
    """Fit every figure against N and predict it at target_n: {figure: {fit..., at_target}}."""
    fits: dict[str, Any] = {}
    for key, (label, fmt) in FIGURES.items():
        fit = fit_line([r["n"] for r in rungs], [r.get(key) for r in rungs])
        if fit is None:
            fits[key] = {"unavailable": f"{label}: fewer than two rungs measured it"}
            continue
        fits[key] = {
            **fit.to_dict(),
            "formula": fit.formula(label, fmt),
            "at_target": fit.at(target_n),
        }
    return fits


def ladder_table(document: dict[str, Any]) -> list[str]:
    """The rungs, the extrapolated row and each fit, as lines of text."""
    fits = document["fits"]
    lines = [f"{'N':>9} " + " ".join(f"{label:>12}" for label, _ in FIGURES.values())]
    for rung in document["rungs"]:
        cells = [_cell(rung.get(key), fmt) for key, (_, fmt) in FIGURES.items()]
        lines.append(f"{rung['n']:>9,} " + " ".join(f"{c:>12}" for c in cells))
    cells = [_cell(fits[key].get("at_target"), fmt) for key, (_, fmt) in FIGURES.items()]
    lines.append(
        f"{document['target_n']:>9,} " + " ".join(f"{c:>12}" for c in cells) + "  (extrapolated)"
    )
    if {r.get("vram_source") for r in document["rungs"]} == {"simulated"}:
        lines.append("VRAM is the reference server's simulated VRAM (no GPU measured)")
    lines += [f"  fit: {fit.get('formula') or fit['unavailable']}" for fit in fits.values()]
    return lines


def _cell(value: float | None, fmt: Callable[[float], str]) -> str:
    return "n/a" if value is None else fmt(value)
