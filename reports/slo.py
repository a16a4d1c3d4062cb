"""SLOs and goodput: `--slo ttft_p99=2s,itl_p99=100ms,e2e_p95=30s` judged on requests.jsonl.

An objective `METRIC_pQ=BOUND` is a per-request bound with an attainment goal, as DistServe
states its SLOs: a request attains it when its METRIC is at most BOUND, and the objective is met
when at least Q% of the requests attain it (equivalently: the nearest-rank pQ is within BOUND).
Goodput counts the requests per second, over the measured window, that attained every objective
at once. docs/metrics.md (SLOs and goodput) is the definition in words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.errors import UserError
from reports.rundata import RunData

PASS, FAIL, UNMEASURED = "pass", "fail", "unmeasured"

# SLO metric name -> (requests.jsonl field, what it is): one table for the parser, docs and report.
METRICS: dict[str, tuple[str, str]] = {
    "e2e": ("latency_s", "end-to-end latency"),
    "ttft": ("ttft_s", "time to first token"),
    "ttst": ("ttst_s", "time to second token"),
    "itl": ("itl_mean_s", "a request's mean inter-token latency"),
    "gap": ("itl_max_s", "a request's longest inter-token gap"),
    "tpot": ("tpot_s", "time per output token"),
    "sched": ("scheduled_latency_s", "latency from the scheduled send time (open loop)"),
}
_OBJECTIVE = re.compile(r"^([a-z0-9]+)_(p(\d+(?:\.\d+)?)|max)$")
_BOUND = re.compile(r"^(\d+(?:\.\d+)?(?:e-?\d+)?)\s*(ms|us|s|m)?$")
_UNIT_S = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "m": 60.0}
_EXAMPLE = "write e.g. --slo ttft_p99=2s,itl_p99=100ms,e2e_p95=30s"


@dataclass(frozen=True)
class Objective:
    """One SLO: the `percentile` share of requests must have `metric` <= `bound_s`."""

    metric: str  # a key of METRICS
    percentile: float  # 0 < q <= 100; "max" is 100
    bound_s: float

    @property
    def name(self) -> str:
        q = "max" if self.percentile == 100 else f"p{self.percentile:g}"
        return f"{self.metric}_{q}"

    @property
    def field(self) -> str:
        return METRICS[self.metric][0]

    def describe(self) -> str:
        return f"{self.name}={_seconds(self.bound_s)}"


def parse_slo(text: str) -> tuple[Objective, ...]:
    """`"ttft_p99=2s,e2e_p95=30s"` -> objectives; a one-line UserError for anything else."""
    objectives: dict[str, Objective] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, bound_text = (s.strip().lower() for s in part.partition("="))
        match = _OBJECTIVE.match(name)
        if not sep or not match:
            raise UserError(f"--slo {part!r} is not METRIC_pQ=BOUND; {_EXAMPLE}")
        metric, _, q = match.groups()
        if metric not in METRICS:
            known = ", ".join(METRICS)
            raise UserError(f"--slo {part!r}: unknown metric {metric!r}; use one of {known}")
        percentile = 100.0 if q is None else float(q)
        if not 0 < percentile <= 100:
            raise UserError(f"--slo {part!r}: the percentile must lie in (0, 100], e.g. p99")
        bound = _BOUND.match(bound_text)
        if not bound or float(bound.group(1)) <= 0:
            raise UserError(
                f"--slo {part!r}: {bound_text!r} is not a positive duration; write e.g. 2s, "
                "100ms or 0.5 (seconds)"
            )
        objective = Objective(metric, percentile, float(bound.group(1)) * _UNIT_S[bound.group(2)])
        if objective.name in objectives:
            raise UserError(f"--slo names {objective.name} twice; give each objective once")
        objectives[objective.name] = objective
    if not objectives:
        raise UserError(f"--slo {text!r} holds no objective; {_EXAMPLE}")
    return tuple(objectives.values())


def format_slo(objectives: tuple[Objective, ...]) -> str:
    """The canonical text of objectives (what summary.json and baselines store)."""
    return ",".join(objective.describe() for objective in objectives)


def attainment(values: np.ndarray, ok: np.ndarray, objective: Objective) -> tuple[np.ndarray, bool]:
    """Per request: whether it attained the objective; and whether any request measured it.

    A failed request attains nothing. A successful request for which the metric is undefined
    (no second token, so no gap) cannot have broken the bound and attains it.
    """
    measured = ok & np.isfinite(values)
    with np.errstate(invalid="ignore"):
        within = values <= objective.bound_s * (1 + 1e-12)
    return ok & (within | ~np.isfinite(values)), bool(measured.any())


def evaluate(run: RunData, objectives: tuple[Objective, ...]) -> dict[str, Any]:
    """The `slo` block of summary.json: each objective's attainment and verdict, goodput."""
    spec = format_slo(objectives)
    requests = run.requests
    if requests is None or not len(requests):
        return {
            "spec": spec,
            "verdict": UNMEASURED,
            "reason": "no requests.jsonl: SLOs are judged per request",
            "objectives": [_unmeasured(o, "no requests") for o in objectives],
        }
    ok = requests.ok
    attempts = len(requests)
    start = float(np.nanmin(requests["t"]))
    window = float(np.nanmax(requests["t_end"])) - start
    every = ok.copy()
    rows = []
    for objective in objectives:
        values = requests.columns.get(objective.field)
        if values is None:
            values = np.full(attempts, np.nan)
        attained, measured = attainment(values, ok, objective)
        if not measured:
            rows.append(_unmeasured(objective, _why_unmeasured(objective)))
            continue
        every &= attained
        share = float(attained.mean())
        finite = values[ok & np.isfinite(values)]
        rows.append(
            {
                "name": objective.name,
                "metric": objective.metric,
                "field": objective.field,
                "percentile": objective.percentile,
                "bound_s": objective.bound_s,
                "measured_s": _nearest_rank(finite, objective.percentile),
                "attained": int(attained.sum()),
                "attainment": share,
                "verdict": PASS if share >= objective.percentile / 100 - 1e-12 else FAIL,
            }
        )
    verdicts = {row["verdict"] for row in rows}
    verdict = FAIL if FAIL in verdicts else UNMEASURED if UNMEASURED in verdicts else PASS
    good = int(every.sum())
    tokens = requests["output_tokens"][every]
    has_tokens = bool(np.isfinite(tokens).any())
    return {
        "spec": spec,
        "verdict": verdict,
        "requests": attempts,
        "attained_all": good,
        "attainment": good / attempts,
        "goodput_rps": good / window if window > 0 else None,
        "goodput_output_tokens_per_s": float(np.nansum(tokens)) / window
        if window > 0 and has_tokens
        else None,
        "missed": [row["name"] for row in rows if row["verdict"] == FAIL],
        "objectives": rows,
    }


def _nearest_rank(values: np.ndarray, percentile: float) -> float | None:
    """The smallest value with at least `percentile`% of the values at or below it."""
    if not len(values):
        return None
    ordered = np.sort(values)
    rank = max(1, math.ceil(percentile / 100 * len(ordered) - 1e-9))
    return float(ordered[rank - 1])


def _unmeasured(objective: Objective, reason: str) -> dict[str, Any]:
    return {
        "name": objective.name,
        "metric": objective.metric,
        "field": objective.field,
        "percentile": objective.percentile,
        "bound_s": objective.bound_s,
        "verdict": UNMEASURED,
        "reason": reason,
    }


def _why_unmeasured(objective: Objective) -> str:
    if objective.metric in ("ttft", "ttst", "itl", "gap", "tpot"):
        return f"no successful request measured {objective.field} (streamed requests only)"
    if objective.metric == "sched":
        return "no request had a scheduled send time (open-loop runs only)"
    return f"no successful request measured {objective.field}"


def verdict_line(slo: dict[str, Any]) -> str:
    """One line for a terminal: the verdict, then each objective's figure against its bound."""
    parts = []
    for row in slo.get("objectives") or []:
        if row["verdict"] == UNMEASURED:
            parts.append(f"{row['name']} unmeasured ({row['reason']})")
            continue
        mark = "ok" if row["verdict"] == PASS else "MISSED"
        parts.append(
            f"{row['name']} {_seconds(row['measured_s'])} <= {_seconds(row['bound_s'])} "
            f"{mark} ({row['attainment']:.1%} attained)"
        )
    head = {PASS: "met", FAIL: "MISSED", UNMEASURED: "not measured"}[slo["verdict"]]
    goodput = slo.get("goodput_rps")
    tail = f"; goodput {goodput:,.2f} req/s" if goodput is not None else ""
    return f"SLOs {head}: " + "; ".join(parts) + tail


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.4g}ms"
    return f"{value:.4g}s"
