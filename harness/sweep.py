"""`harness sweep`: the best operating point of a server, found by ramping the load.

Each point is one scale run (`run_scale`, K of them with `repeat`) at one concurrency, on a grid
or in a search for the edge (doubling, then bisecting between the last good point and the first
bad one). Every point records throughput, goodput, latency percentiles, peak RAM and peak VRAM
(NVML, or the simulator's). The sweep stops at saturation (throughput stops rising while latency
keeps rising, both judged on 95% intervals as GuideLLM's over-saturation stop judges its
slopes), before a memory budget (extrapolated from the points so far) and at an OOM. The best
point is the highest goodput (throughput without SLOs) under the SLOs and the budget; the
170K run's duration is predicted from its throughput. Writes sweep.json; reports/sweep.py draws
it. docs/sweep.md is the user's guide.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from harness.errors import UserError
from harness.rundir import new_run_id, utc_iso, write_json_atomic
from harness.scale import ScaleConfig, run_scale
from harness.units import format_bytes, format_speed

SWEEP = "sweep.json"
SCHEMA = "harness-sweep/1"
# Why a sweep ended (`stop.reason`).
GRID_DONE, SEARCH_DONE = "grid_done", "search_done"
SATURATED, CLIENT_SATURATED, VRAM_BUDGET, RAM_BUDGET, OOM, FAILED = (
    "saturated",
    "client_saturated",
    "vram_budget",
    "ram_budget",
    "oom",
    "failed",
)
_MARKED_ONLY = (SATURATED, CLIENT_SATURATED)  # with full_grid: marked on the point, not a stop
CONCURRENCY, RATE = "concurrency", "rate"
MIN_GAIN = 0.05  # throughput that rose by less than this share has stopped rising
_BINS = 10  # per point, time bins whose throughput and latency the saturation test compares


@dataclass
class SweepConfig:
    """A sweep: the scale run every point starts from, and how the load moves."""

    base: ScaleConfig  # target / serve / speed / server_args / dataset: what every point runs
    axis: str = CONCURRENCY  # what moves: concurrency, or rate (open loop, base.concurrency caps)
    grid: tuple[float, ...] = ()  # the loads; empty: search for the edge
    search_start: float = 1
    search_max: float = 1024
    n_per_point: int = 1000
    repeat: int = 1
    slo: str | None = None  # bounds may be "2x": times the first point's figure
    vram_budget: int | None = None
    ram_budget: int | None = None
    target_n: int = 170_000
    full_grid: bool = False  # run every grid point: saturation is marked, not a stop
    run_dir: str | None = None
    runs_root: str = "runs"


@dataclass
class Point:
    """One load level, measured (mean of its repeats)."""

    load: float  # the concurrency, or the rate (requests/s) of an open-loop point
    run_dirs: list[str]
    requests_per_s: float | None
    requests_per_s_ci95: list[float] | None
    output_tokens_per_s: float | None
    per_user_tokens_per_s: float | None
    goodput_rps: float | None
    slo_verdict: str | None
    slo_missed: list[str]
    latency: dict[str, float | None]
    errors_rate: float | None
    peak_ram_bytes: float | None
    peak_vram_bytes: float | None
    vram_source: str | None
    oom: int = 0
    over_budget: str | None = None
    saturated: bool = False
    saturation: dict[str, Any] | None = None
    # the load generator could not keep up: the point's figures are partly the client's limit
    client_saturated: bool = False
    predicted_target_s: float | None = None

    @property
    def usable(self) -> bool:
        """Under the SLOs and the budget, without an OOM."""
        slo_ok = self.slo_verdict in (None, "pass")
        return slo_ok and not self.oom and self.over_budget is None and bool(self.requests_per_s)

    @property
    def score(self) -> float:
        """What the best point maximises: goodput under SLOs, else throughput."""
        value = self.goodput_rps if self.goodput_rps is not None else self.requests_per_s
        return value or 0.0


@dataclass
class _Measured:
    """What the saturation test needs of a point: per-bin throughput and latency."""

    throughput: np.ndarray
    latency: np.ndarray


@dataclass
class _State:
    points: list[Point] = field(default_factory=list)
    samples: dict[int, _Measured] = field(default_factory=dict)
    stop: dict[str, Any] | None = None
    objectives: Any = None


def run_sweep(config: SweepConfig, *, out: TextIO = sys.stderr) -> dict[str, Any]:
    """Run the sweep; write and return sweep.json's document."""
    from reports.slo import parse_slo

    _check(config)
    root = Path(config.run_dir or Path(config.runs_root) / new_run_id("sweep"))
    if (root / SWEEP).exists():
        raise UserError(f"{root} already holds a sweep; pick another --run-dir")
    root.mkdir(parents=True, exist_ok=True)
    say = _Say(out)
    state = _State()
    relative = _relative_bounds(config.slo)
    if config.slo and not relative:
        state.objectives = parse_slo(config.slo)
    loads = iter(sorted(config.grid)) if config.grid else None
    search = None
    if loads is None:
        search = _Search(config.search_start, config.search_max, config.axis == CONCURRENCY)
    label = _label(config.axis)
    while True:
        load = next(loads, None) if loads is not None else search.next()  # type: ignore[union-attr]
        if load is None:
            if search is not None:
                state.stop = {
                    "reason": SEARCH_DONE,
                    "edge": search.low,
                    "first_failing": search.high,
                    "detail": (state.stop or {}).get("detail", "the search reached --search-max"),
                }
            state.stop = state.stop or {"reason": GRID_DONE}
            break
        blocked = _budget_blocks(config, state.points, load)
        if blocked is not None:
            state.stop = blocked
            say(f"stop before {label(load)}: {blocked['detail']}")
            if search is None:
                break
            search.failed(load)
            continue
        try:
            point, measured = _measure(config, root, load, state, relative, say)
        except UserError as exc:
            state.stop = {"reason": FAILED, "at": load, "detail": str(exc)}
            say(f"{label(load)} failed: {exc}")
            if search is None:
                break
            search.failed(load)
            continue
        below = [p for p in state.points if p.load < load]
        previous = max(below, key=lambda p: p.load) if below else None
        if previous is not None:
            verdict = saturation(state.samples[previous.load], measured)
            point.saturation = {**(point.saturation or {}), **verdict}
            point.saturated = point.saturated or verdict["saturated"]
        state.points.append(point)
        state.points.sort(key=lambda p: p.load)
        state.samples[load] = measured
        say(_point_line(point, label))
        stop = _stop_after(point)
        if stop is not None and stop["reason"] in _MARKED_ONLY and config.full_grid:
            stop = None  # marked on the point; the grid goes on
        if search is not None:
            if stop is None and point.usable:
                search.passed(load)
            else:
                search.failed(load)
                state.stop = stop or {"reason": "slo", "at": load, "detail": "SLOs missed"}
            continue
        if stop is not None:
            state.stop = stop
            say(f"stop at {label(load)}: {stop['detail']}")
            break
    document = _document(config, root, state)
    write_json_atomic(root / SWEEP, document)
    _report(root, document, say)
    best = document["best"]
    if best is None:
        say("no point met the SLOs and the budget")
    else:
        say(
            f"best: {label(best['load'])}, {best['requests_per_s']:,.1f} req/s; "
            f"{config.target_n:,} requests would take {_duration(best['predicted_target_s'])}"
        )
    say(f"sweep written to {root / SWEEP}")
    return document


def _label(axis: str) -> Callable[[float], str]:
    """How a load reads in lines: "concurrency 8", "rate 12.5/s"."""
    if axis == RATE:
        return lambda load: f"rate {load:g}/s"
    return lambda load: f"concurrency {load:g}"


def _check(config: SweepConfig) -> None:
    if config.axis not in (CONCURRENCY, RATE):
        raise UserError(f"a sweep moves concurrency or rate, not {config.axis!r}")
    option = f"--{config.axis}"
    if config.grid and len(set(config.grid)) != len(config.grid):
        raise UserError(f"{option} points must be distinct, e.g. 1,2,4,8")
    if config.axis == CONCURRENCY and any(c < 1 or c != int(c) for c in config.grid):
        raise UserError("--concurrency points must be whole numbers, 1 or more, e.g. 1,2,4,8")
    if any(not r > 0 for r in config.grid):
        raise UserError(f"{option} points must be above 0")
    if not 0 < config.search_start <= config.search_max:
        raise UserError("--search-max must be at least the first point (above 0)")
    if config.axis == RATE and (config.base.rate is not None or config.base.trace is not None):
        raise UserError("a rate sweep sets the rate itself: drop --rate and --trace")
    if config.n_per_point < 10:
        raise UserError(f"--n per point must be at least 10, got {config.n_per_point}")
    if config.repeat < 1:
        raise UserError(f"--repeat must be 1 or more, got {config.repeat}")
    if config.base.oom_at:
        raise UserError("a sweep measures; it injects no OOM (drop --oom-at)")
    if config.slo:
        _relative_bounds(config.slo)  # checks the spec


# -- points --------------------------------------------------------------------------------


def _measure(
    config: SweepConfig,
    root: Path,
    load: int,
    state: _State,
    relative: dict[str, float],
    say: Callable[[str], None],
) -> tuple[Point, _Measured]:
    """Run one point (its repeats) and read it back."""
    from reports.report import write_summary
    from reports.rundata import load_run
    from reports.stats import estimate

    dirs = []
    for k in range(config.repeat):
        base = f"{'c' if config.axis == CONCURRENCY else 'r'}{load:g}"
        name = base if config.repeat == 1 else f"{base}/r{k + 1}"
        run_dir = root / name
        if config.axis == CONCURRENCY:  # no more driver processes than requests in flight
            moved = {"concurrency": int(load), "processes": min(config.base.processes, int(load))}
        else:
            moved = {"rate": load}
        point_config = replace(
            config.base, n=config.n_per_point, run_dir=str(run_dir), report=False, **moved
        )
        say(_label(config.axis)(load) + (f" (repeat {k + 1})" if config.repeat > 1 else ""))
        run_dir.mkdir(parents=True, exist_ok=True)
        # the point's own lines (scale's, the supervisor's) go to its log, not the terminal
        with open(run_dir / "sweep-point.log", "w") as log, contextlib.redirect_stderr(log):
            run_scale(point_config, out=log)
        dirs.append(run_dir)
    if relative and state.objectives is None:
        state.objectives = _resolve_relative(config.slo or "", relative, dirs[0])
        say(f"SLOs resolved against the first point: {_spec(state.objectives)}")
    summaries = [write_summary(d, slo=state.objectives).summary for d in dirs]
    runs = [load_run(d) for d in dirs]
    rates = [s["throughput"]["requests_per_s"] for s in summaries]
    rates = [r for r in rates if r is not None]
    rate_estimate = estimate(rates) if rates else None
    point = Point(
        load=load,
        run_dirs=[str(d.relative_to(root)) for d in dirs],
        requests_per_s=rate_estimate.mean if rate_estimate else None,
        requests_per_s_ci95=list(rate_estimate.ci95)
        if rate_estimate and rate_estimate.ci95
        else None,
        output_tokens_per_s=_mean(s["throughput"].get("output_tokens_per_s") for s in summaries),
        per_user_tokens_per_s=_mean(
            s["throughput"].get("per_request_output_tokens_per_s_p50") for s in summaries
        ),
        goodput_rps=_mean((s.get("slo") or {}).get("goodput_rps") for s in summaries),
        slo_verdict=_slo_verdict(summaries),
        slo_missed=sorted({m for s in summaries for m in (s.get("slo") or {}).get("missed", [])}),
        latency=_latency(summaries),
        errors_rate=_mean(s["errors"].get("rate") for s in summaries),
        peak_ram_bytes=_max(s["memory"].get("peak_rss_bytes") for s in summaries),
        peak_vram_bytes=_max(_vram(s) for s in summaries),
        vram_source=summaries[0]["memory"].get("vram_source"),
        oom=sum(
            s["events"].get("oom_kills", 0) + s["events"].get("oom_errors", 0) for s in summaries
        ),
        client_saturated=any((s.get("load_generator") or {}).get("saturated") for s in summaries),
    )
    if point.requests_per_s:
        point.predicted_target_s = config.target_n / point.requests_per_s
    point.over_budget = _over_budget(config, point)
    if config.axis == RATE:  # open loop: a queue that grows during the point is over-saturation
        drift = queue_growth(runs)
        point.saturation = {"queue_growth": drift}
        point.saturated = drift["growing"]
    return point, _binned(runs)


def _vram(summary: dict[str, Any]) -> float | None:
    """Peak VRAM: NVML's when a GPU was measured, else the simulator's."""
    memory = summary["memory"]
    return memory.get("peak_vram_bytes") or memory.get("peak_sim_vram_bytes")


def _latency(summaries: list[dict[str, Any]]) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    for metric in ("e2e_s", "ttft_s", "itl_s", "tpot_s"):
        for q in ("p50", "p90", "p99"):
            figures[f"{metric}.{q}"] = _mean(
                (s["latency"].get(metric) or {}).get(q) for s in summaries
            )
    return figures


def _slo_verdict(summaries: list[dict[str, Any]]) -> str | None:
    verdicts = {(s.get("slo") or {}).get("verdict") for s in summaries}
    if verdicts == {None}:
        return None
    for verdict in ("fail", "unmeasured"):
        if verdict in verdicts:
            return verdict
    return "pass"


def _mean(values: Iterator[Any]) -> float | None:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _max(values: Iterator[Any]) -> float | None:
    finite = [float(v) for v in values if isinstance(v, (int, float))]
    return max(finite) if finite else None


def _binned(runs: Sequence[Any]) -> _Measured:
    """Throughput and mean latency in `_BINS` equal time bins of each run (successes only)."""
    throughput, latency = [], []
    for run in runs:
        requests = run.requests
        if requests is None or not len(requests):
            continue
        ok = requests.ok
        ends, lat = requests["t_end"][ok], requests["latency_s"][ok]
        if len(ends) < _BINS:
            continue
        edges = np.linspace(float(np.nanmin(requests["t"])), float(np.nanmax(ends)), _BINS + 1)
        index = np.clip(np.searchsorted(edges, ends, side="right") - 1, 0, _BINS - 1)
        counts = np.bincount(index, minlength=_BINS)
        sums = np.bincount(index, weights=lat, minlength=_BINS)
        width = edges[1] - edges[0]
        throughput += list(counts / width) if width > 0 else []
        latency += [s / c for s, c in zip(sums, counts, strict=True) if c]
    return _Measured(np.asarray(throughput, dtype=float), np.asarray(latency, dtype=float))


def saturation(previous: _Measured, current: _Measured, min_gain: float = MIN_GAIN) -> dict:
    """Throughput stopped rising while latency kept rising, each judged on its 95% interval
    (Welch, over time bins): latency rose for sure (the whole interval above zero), and the
    throughput gain cannot be shown to reach `min_gain` (its interval reaches below it)."""
    from reports.stats import difference_ci95, estimate

    if min(len(previous.throughput), len(current.throughput)) < 2:
        return {"saturated": False, "reason": "too few time bins to judge"}
    if min(len(previous.latency), len(current.latency)) < 2:
        return {"saturated": False, "reason": "too few time bins to judge"}
    base_rate = estimate(previous.throughput)
    rate_ci = difference_ci95(estimate(current.throughput), base_rate)
    latency_ci = difference_ci95(estimate(current.latency), estimate(previous.latency))
    assert rate_ci is not None and latency_ci is not None
    gain = (rate_ci[0] / base_rate.mean, rate_ci[1] / base_rate.mean) if base_rate.mean else None
    latency_rising = latency_ci[0] > 0
    throughput_flat = gain is not None and gain[0] < min_gain
    return {
        "saturated": bool(latency_rising and throughput_flat),
        "throughput_gain_ci95": list(gain) if gain else None,
        "latency_rise_ci95_s": list(latency_ci),
        "latency_rising": bool(latency_rising),
        "throughput_flat": bool(throughput_flat),
    }


def queue_growth(runs: Sequence[Any], min_growth: float = 0.2) -> dict[str, Any]:
    """Within an open-loop point, as GuideLLM's over-saturation stop: is latency (from the
    scheduled send time) still climbing along the run? A least-squares slope over `_BINS` time
    bins of each run with its 95% interval: growing when the whole interval is above zero and the
    climb over the run is at least `min_growth` of the mean latency (a queue that keeps building,
    not a warm-up blip)."""
    from reports.stats import t95

    xs, ys = [], []
    for run in runs:
        requests = run.requests
        if requests is None or not len(requests):
            continue
        ok = requests.ok
        latency = requests["scheduled_latency_s"][ok]
        if not np.isfinite(latency).any():
            latency = requests["latency_s"][ok]
        sent = requests["t"][ok]
        usable = np.isfinite(latency) & np.isfinite(sent)
        if usable.sum() < _BINS:
            continue
        sent, latency = sent[usable], latency[usable]
        edges = np.linspace(sent.min(), sent.max(), _BINS + 1)
        index = np.clip(np.searchsorted(edges, sent, side="right") - 1, 0, _BINS - 1)
        counts = np.bincount(index, minlength=_BINS)
        sums = np.bincount(index, weights=latency, minlength=_BINS)
        middles = (edges[:-1] + edges[1:]) / 2 - edges[0]
        xs += [m for m, c in zip(middles, counts, strict=True) if c]
        ys += [v / c for v, c in zip(sums, counts, strict=True) if c]
    if len(xs) < 4:
        return {"growing": False, "reason": "too few requests to judge"}
    x, y = np.asarray(xs), np.asarray(ys)
    sxx = float(((x - x.mean()) ** 2).sum())
    if sxx <= 0:
        return {"growing": False, "reason": "no spread in time"}
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    residuals = y - (y.mean() + slope * (x - x.mean()))
    se = float(np.sqrt((residuals**2).sum() / (len(x) - 2) / sxx))
    low = slope - t95(len(x) - 2) * se
    growth = slope * float(x.max() - x.min()) / float(y.mean()) if y.mean() > 0 else 0.0
    return {
        "growing": bool(low > 0 and growth >= min_growth),
        "slope_s_per_s": slope,
        "slope_ci95_low": low,
        "growth": growth,
    }


# -- stopping --------------------------------------------------------------------------------


def _over_budget(config: SweepConfig, point: Point) -> str | None:
    if config.vram_budget is not None and (point.peak_vram_bytes or 0) > config.vram_budget:
        return VRAM_BUDGET
    if config.ram_budget is not None and (point.peak_ram_bytes or 0) > config.ram_budget:
        return RAM_BUDGET
    return None


def _stop_after(point: Point) -> dict[str, Any] | None:
    """Why no higher load is worth running after this point, if any."""
    at = point.load
    if point.oom:
        return {"reason": OOM, "at": at, "detail": f"{point.oom} OOM(s) at this load"}
    if point.over_budget == VRAM_BUDGET:
        return {"reason": VRAM_BUDGET, "at": at, "detail": "peak VRAM over the budget"}
    if point.over_budget == RAM_BUDGET:
        return {"reason": RAM_BUDGET, "at": at, "detail": "peak RAM over the budget"}
    if point.client_saturated:
        return {
            "reason": CLIENT_SATURATED,
            "at": at,
            "detail": "the load generator could not keep up (the point's load_generator check): "
            "higher loads would measure the client; run with more --processes",
        }
    if point.saturated:
        return {"reason": SATURATED, "at": at, "detail": _saturation_text(point)}
    return None


def _budget_blocks(config: SweepConfig, points: list[Point], load: int) -> dict | None:
    """Stop before a load whose peak memory, extrapolated from the points below it, would pass
    the budget (a straight line through the two highest points; memory grows with load)."""
    below = [p for p in points if p.load < load]
    checks = (
        (VRAM_BUDGET, config.vram_budget, "peak_vram_bytes", "VRAM"),
        (RAM_BUDGET, config.ram_budget, "peak_ram_bytes", "RAM"),
    )
    for reason, budget, name, label in checks:
        if budget is None:
            continue
        measured = [(p.load, getattr(p, name)) for p in below if getattr(p, name)]
        if len(measured) < 2:
            continue
        (x0, y0), (x1, y1) = measured[-2], measured[-1]
        predicted = y1 + (y1 - y0) / (x1 - x0) * (load - x1)
        if predicted > budget:
            return {
                "reason": reason,
                "at": load,
                "predicted_bytes": predicted,
                "detail": f"{label} predicted at {format_bytes(predicted)}, over the budget of "
                f"{format_bytes(budget)}",
            }
    return None


def _saturation_text(point: Point) -> str:
    verdict = point.saturation or {}
    growth = verdict.get("queue_growth")
    if growth and growth.get("growing"):
        return (
            f"over-saturated: latency climbed {growth['growth']:.0%} during the point "
            f"(slope {growth['slope_s_per_s'] * 1000:+.1f} ms/s, 95% above zero)"
        )
    gain = verdict.get("throughput_gain_ci95") or [0.0, 0.0]
    rise = verdict.get("latency_rise_ci95_s") or [0.0, 0.0]
    return (
        f"saturated: throughput gain {gain[0]:+.0%} to {gain[1]:+.0%} (95%), latency "
        f"+{rise[0] * 1000:.1f} to +{rise[1] * 1000:.1f} ms"
    )


class _Search:
    """The edge: double from `start` while points pass, then bisect between the last passing and
    the first failing load: to adjacent integers (concurrency), or to 10% (a rate)."""

    def __init__(self, start: float, maximum: float, integer: bool = True) -> None:
        self.low: float | None = None  # highest passing
        self.high: float | None = None  # lowest failing
        self._next: float | None = start
        self.maximum = maximum
        self.integer = integer

    def next(self) -> float | None:
        value, self._next = self._next, None
        return value

    def passed(self, load: float) -> None:
        self.low = load if self.low is None else max(self.low, load)
        if self.high is None:
            self._next = load * 2 if load * 2 <= self.maximum else None
        else:
            self._bisect()

    def failed(self, load: float) -> None:
        self.high = load if self.high is None else min(self.high, load)
        self._bisect()

    def _bisect(self) -> None:
        low, high = self.low or 0, self.high
        if high is None:
            self._next = None
        elif self.integer:
            self._next = (int(low) + int(high)) // 2 if high - low > 1 else None
        else:
            self._next = (low + high) / 2 if high > 1.1 * low else None


# -- SLOs relative to the first point ------------------------------------------------------


def _relative_bounds(spec: str | None) -> dict[str, float]:
    """Objectives written as multiples of the first point's figure ("ttft_p99=2x")."""
    from reports.slo import parse_slo

    if not spec:
        return {}
    relative, absolute = {}, []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, bound = part.partition("=")
        bound = bound.strip().lower()
        if bound.endswith("x"):
            try:
                factor = float(bound[:-1])
            except ValueError:
                raise UserError(f"--slo {part!r}: write a multiple as e.g. 2x") from None
            if factor <= 0:
                raise UserError(f"--slo {part!r}: the multiple must be positive")
            parse_slo(f"{name}=1s")  # the name must be a valid objective
            relative[name.strip().lower()] = factor
        else:
            absolute.append(part)
    if absolute:
        parse_slo(",".join(absolute))
    return relative


def _resolve_relative(spec: str, relative: dict[str, float], first_run: Path) -> Any:
    """The spec with each "Nx" bound replaced by N x the first point's nearest-rank figure."""
    from reports.rundata import load_run
    from reports.slo import _nearest_rank, parse_slo

    run = load_run(first_run)
    parts = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name = part.partition("=")[0].strip().lower()
        if name not in relative:
            parts.append(part)
            continue
        objective = parse_slo(f"{name}=1s")[0]
        requests = run.requests
        values = None if requests is None else requests.columns.get(objective.field)
        if values is None or requests is None:
            raise UserError(f"--slo {part}: the first point measured no {objective.field}")
        figure = _nearest_rank(values[requests.ok & np.isfinite(values)], objective.percentile)
        if figure is None:
            raise UserError(f"--slo {part}: the first point measured no {objective.field}")
        parts.append(f"{name}={relative[name] * figure:.6f}s")
    return parse_slo(",".join(parts))


def _spec(objectives: Any) -> str:
    from reports.slo import format_slo

    return format_slo(objectives)


# -- output ----------------------------------------------------------------------------------


def best_point(points: Sequence[Point]) -> Point | None:
    """The highest goodput (or throughput) under the SLOs and the budget; a saturated point, which
    bought no throughput for its latency, or one whose client could not keep up, only when
    nothing else is usable."""
    usable = [p for p in points if p.usable]
    preferred = [p for p in usable if not (p.saturated or p.client_saturated)] or usable
    return max(preferred, key=lambda p: (p.score, -p.load)) if preferred else None


def _document(config: SweepConfig, root: Path, state: _State) -> dict[str, Any]:
    best = best_point(state.points)
    base = asdict(config.base)
    base.pop("api_key", None)
    return {
        "schema": SCHEMA,
        "generated_at": utc_iso(),
        "axis": config.axis,
        "mode": "grid" if config.grid else "search",
        "grid": list(config.grid),
        "n_per_point": config.n_per_point,
        "repeat": config.repeat,
        "slo": _spec(state.objectives) if state.objectives else None,
        "slo_asked": config.slo,
        "vram_budget_bytes": config.vram_budget,
        "ram_budget_bytes": config.ram_budget,
        "target_n": config.target_n,
        "scale": {
            **{k: base[k] for k in ("target", "serve", "server_args", "dataset")},
            "speed": format_speed(config.base.speed),
        },
        "points": [asdict(p) | {"usable": p.usable} for p in state.points],
        "stop": state.stop,
        "best": asdict(best) if best is not None else None,
        "run_dir": str(root),
    }


def _report(root: Path, document: dict[str, Any], say: Callable[[str], None]) -> None:
    try:
        from reports.sweep import write_sweep_report
    except ImportError:
        return
    try:
        path = write_sweep_report(root, document)
    except Exception as exc:  # the sweep's data is written; a failed figure must not lose it
        say(f"sweep report failed: {type(exc).__name__}: {exc}")
        return
    say(f"report {path}")


def _point_line(point: Point, label: Callable[[float], str]) -> str:
    rate = f"{point.requests_per_s:,.1f} req/s" if point.requests_per_s else "no throughput"
    p99 = point.latency.get("e2e_s.p99")
    parts = [f"{label(point.load)}: {rate}"]
    if p99 is not None:
        parts.append(f"e2e p99 {p99 * 1000:,.1f} ms")
    ttft = point.latency.get("ttft_s.p99")
    if ttft is not None:
        parts.append(f"TTFT p99 {ttft * 1000:,.1f} ms")
    if point.goodput_rps is not None:
        parts.append(f"goodput {point.goodput_rps:,.1f} req/s (SLOs {point.slo_verdict})")
    if point.peak_vram_bytes is not None:
        parts.append(f"peak VRAM {format_bytes(point.peak_vram_bytes)} ({point.vram_source})")
    if point.peak_ram_bytes is not None:
        parts.append(f"peak RAM {format_bytes(point.peak_ram_bytes)}")
    if point.oom:
        parts.append(f"{point.oom} OOM")
    if point.saturated:
        parts.append("SATURATED")
    if point.client_saturated:
        parts.append("CLIENT SATURATED")
    return ", ".join(parts)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class _Say:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, text: str) -> None:
        print(f"sweep: {text}", file=self.out, flush=True)
