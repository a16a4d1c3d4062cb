"""The scale ladder's arithmetic: fits of a figure against N, chosen by held-out error, and
extrapolation.

The team's plan is 5K, then 10K, 50K and 170K; fitting time, peak memory and leak slope against N
on the small rungs says what the full run will cost before it is attempted. A straight line
over-predicts memory that warms up and levels off, so each figure is fitted with a linear, a
logarithmic and a saturating curve, and the one that best predicts each rung from the others
(leave-one-out) is used; the prediction comes with that model's largest held-out error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
class Model:
    """One curve of a figure against N: linear a + b·N, logarithmic a + b·ln N, or saturating
    a + b·(1 - exp(-N/c)), which levels off at a + b."""

    name: str
    a: float
    b: float
    c: float | None = None  # saturating: the N over which it climbs 63% of the way

    def at(self, n: float) -> float:
        if self.name == "linear":
            return self.a + self.b * n
        if self.name == "logarithmic":
            return self.a + self.b * math.log(n)
        assert self.c is not None
        return self.a + self.b * -math.expm1(-n / self.c)

    def formula(self, label: str, fmt: Callable[[float], str]) -> str:
        sign = "+" if self.b >= 0 else "-"
        if self.name == "linear":
            return f"{label} = {fmt(self.a)} {sign} {fmt(abs(self.b) * 1000)} per 1K candidates"
        if self.name == "logarithmic":
            return f"{label} = {fmt(self.a)} {sign} {fmt(abs(self.b))} x ln(N)"
        return (
            f"{label} = {fmt(self.a)} {sign} {fmt(abs(self.b))} x (1 - exp(-N/{self.c:,.0f})), "
            f"levelling off at {fmt(self.a + self.b)}"
        )


MODELS = ("linear", "logarithmic", "saturating")  # fewer parameters first: they win ties
_PARAMETERS = {"linear": 2, "logarithmic": 2, "saturating": 3}
_C_GRID = 240  # saturating: scales c tried, geometric from min(N) / 10 to 10 x max(N)


def _least_squares(us: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """(a, b) of y = a + b·u; None when u does not vary."""
    n = len(us)
    mean_u, mean_y = sum(us) / n, sum(ys) / n
    suu = sum((u - mean_u) ** 2 for u in us)
    if suu <= 1e-12 * max(1.0, mean_u * mean_u):
        return None
    b = sum((u - mean_u) * (y - mean_y) for u, y in zip(us, ys, strict=True)) / suu
    return mean_y - b * mean_u, b


def fit_model(name: str, pairs: Sequence[tuple[float, float]]) -> Model | None:
    """The model `name` fitted by least squares (saturating: its scale c searched on a grid);
    None with fewer distinct N than it has parameters."""
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    if len(set(xs)) < _PARAMETERS[name]:
        return None
    if name != "saturating":
        us = xs if name == "linear" else [math.log(x) for x in xs]
        ab = _least_squares(us, ys)
        return None if ab is None else Model(name, *ab)
    best: tuple[float, Model] | None = None
    low, high = min(xs) / 10, max(xs) * 10
    for k in range(_C_GRID):
        c = low * (high / low) ** (k / (_C_GRID - 1))
        us = [-math.expm1(-x / c) for x in xs]
        ab = _least_squares(us, ys)
        if ab is None:
            continue
        model = Model(name, *ab, c)
        sse = sum((y - model.at(x)) ** 2 for x, y in pairs)
        if best is None or sse < best[0]:
            best = (sse, model)
    return None if best is None else best[1]


def loo_errors(name: str, pairs: Sequence[tuple[float, float]]) -> list[float] | None:
    """Leave-one-out: each point minus what the model fitted to the others predicts for it;
    None when some held-out fit has too few points."""
    errors = []
    for i, (x, y) in enumerate(pairs):
        model = fit_model(name, [p for j, p in enumerate(pairs) if j != i])
        if model is None:
            return None
        errors.append(y - model.at(x))
    return errors


@dataclass(frozen=True)
class Choice:
    """The model a figure is extrapolated with, and how the candidates did on held-out points."""

    model: Model
    points: int
    loo_rmse: dict[str, float | None]  # per candidate; None where it could not be checked
    loo_max_error: float | None  # the chosen model's largest held-out error

    def to_dict(self, label: str, fmt: Callable[[float], str], target_n: int) -> dict[str, Any]:
        at = self.model.at(target_n)
        spread = self.loo_max_error
        return {
            "model": self.model.name,
            "params": {"a": self.model.a, "b": self.model.b, "c": self.model.c},
            "points": self.points,
            "formula": self.model.formula(label, fmt),
            "at_target": at,
            "interval": None if spread is None else [at - spread, at + spread],
            "loo_rmse": self.loo_rmse,
        }


def choose_model(
    xs: Sequence[float], ys: Sequence[float | None], models: Sequence[str] = MODELS
) -> Choice | None:
    """Of `models`, the one with the least leave-one-out RMSE over the rungs that measured the
    figure (ties to the simpler); a straight line, unchecked, with two rungs; None with fewer."""
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if y is not None]
    if len({x for x, _ in pairs}) < 2:
        return None
    rmse: dict[str, float | None] = {}
    errors: dict[str, list[float]] = {}
    for name in models:
        loo = loo_errors(name, pairs) if len(pairs) > 2 else None
        rmse[name] = None if loo is None else math.sqrt(sum(e * e for e in loo) / len(loo))
        if loo is not None:
            errors[name] = loo
    scores = {n: r for n, r in rmse.items() if r is not None}  # in the order of `models`
    name = "linear"
    if scores:
        tolerance = 1e-9 * max(1.0, max(abs(y) for _, y in pairs))
        least = min(scores.values())
        name = next(n for n, r in scores.items() if r <= least + tolerance)
    model = fit_model(name, pairs)
    assert model is not None
    spread = max(abs(e) for e in errors[name]) if name in errors else None
    return Choice(model, len(pairs), rmse, spread)


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
    """Fit every figure against N with the model of least held-out error and predict it at
    target_n: {figure: {model, formula, at_target, interval, loo_rmse, ...}}. Time is a cost per
    request, so it stays a straight line: a rate that warms up over the small rungs would
    otherwise read as a run that stops getting longer."""
    fits: dict[str, Any] = {}
    for key, (label, fmt) in FIGURES.items():
        models = ("linear",) if key == "seconds" else MODELS
        choice = choose_model([r["n"] for r in rungs], [r.get(key) for r in rungs], models)
        if choice is None:
            fits[key] = {"unavailable": f"{label}: fewer than two rungs measured it"}
            continue
        fits[key] = choice.to_dict(label, fmt, target_n)
    return fits


def ladder_table(document: dict[str, Any]) -> list[str]:
    """The rungs, the extrapolated row, each figure's chosen model, and what the time means."""
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
    for key, (_, fmt) in FIGURES.items():
        fit = fits[key]
        lines.append(f"  fit: {fit.get('formula') or fit['unavailable']}")
        if "model" in fit:
            lines.append(f"       {_choice_line(fit, document['target_n'], fmt)}")
    if document.get("time_note"):
        lines.append(document["time_note"])
    return lines


def _choice_line(fit: dict[str, Any], target_n: int, fmt: Callable[[float], str]) -> str:
    """Which model, why (each candidate's leave-one-out RMSE), and the prediction's interval."""
    checked = {k: v for k, v in fit["loo_rmse"].items() if v is not None}
    if not checked:
        return f"{fit['model']}: {fit['points']} rungs, no held-out check (run a third rung)"
    errors = ", ".join(f"{k} {fmt(v)}" for k, v in checked.items())
    why = "the least held-out error" if len(fit["loo_rmse"]) > 1 else "the only model fitted"
    low, high = fit["interval"]
    return (
        f"{fit['model']}, {why} (leave-one-out RMSE: {errors}); at {target_n:,}: "
        f"{fmt(fit['at_target'])}, {fmt(low)} to {fmt(high)} (± its largest held-out error)"
    )


def time_note(speed: float | None, seconds: float | None, target_n: int) -> str | None:
    """What the extrapolated time means on the embedded server: a compressed figure at --speed,
    never the real run's duration. None for a real target (speed None) or no prediction."""
    if speed is None or seconds is None:
        return None
    if math.isinf(speed):
        return (
            f"time at {target_n:,} predicted at --speed max (no simulated delay): "
            f"{_seconds(seconds)}, how fast the harness itself goes, not the real run's duration"
        )
    real = seconds * speed / 3600
    return (
        f"time at {target_n:,} predicted at --speed {speed:g}: {_seconds(seconds)}, not the real "
        f"run: every simulated delay was divided by {speed:g} (at the real pace, up to "
        f"{real:,.1f} h)"
    )


def _cell(value: float | None, fmt: Callable[[float], str]) -> str:
    return "n/a" if value is None else fmt(value)
