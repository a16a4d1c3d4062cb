"""Scale-regression check: a run (or a repeat group of runs) against a committed baseline.

Each metric has a direction (throughput up is good; latency, memory, errors down), a threshold
(allowed worsening: a share of the baseline, an absolute floor, the larger of both) and a verdict.
Timing metrics are first scaled by the speed ratio of the two machines' loopback references
(harness.calibration), so a slower machine is not a regression. With repeats on either side,
timing metrics are judged on the 95% interval of the change: a regression only when the whole
interval is worse than the threshold, an improvement only when it is wholly better.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.errors import UserError
from harness.rundir import utc_iso
from reports.formatting import format_metric
from reports.repeat import aggregate, normalized, reference_rate
from reports.stats import Estimate, difference_ci95, estimate
from reports.summary import SCHEMA as SUMMARY_SCHEMA

BASELINE_SCHEMA = "harness-baseline/1"
HIGHER = "higher"
LOWER = "lower"
MIB = 1024 * 1024
DEFAULT_MAX_ERROR_RATE = 0.05  # a run with more failed attempts fails whatever its baseline says
# Timing is put on the baseline machine's speed only when the references show, beyond their
# noise, a machine at least this much faster (or 1/this slower): a busy moment of the same
# machine moves the reference by less, and dividing by it would only add its noise.
MACHINE_MARGIN = 1.25

OK, IMPROVED, NEW, UNMEASURED = "ok", "improved", "new", "unmeasured"
WORSE = "worse"  # an informational metric past its threshold: shown, never failing
REGRESSED, MISSING, OVER_LIMIT = "regressed", "missing", "over_limit"
FAILING = frozenset({REGRESSED, MISSING, OVER_LIMIT})


@dataclass(frozen=True)
class Threshold:
    """Allowed worsening: the larger of `rel` x |baseline| and `abs` (in the metric's unit)."""

    rel: float = 0.0
    abs: float = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.rel * abs(baseline), self.abs)

    def describe(self, name: str) -> str:
        parts = [f"{self.rel:.0%}"] if self.rel else []
        if self.abs or not parts:
            parts.append(format_metric(name, self.abs).lstrip("+"))
        return " or ".join(parts)


@dataclass(frozen=True)
class Rule:
    """How one family of metrics is judged; `default`: compared without being asked for."""

    pattern: str
    direction: str
    timing: bool
    threshold: Threshold
    default: bool = True
    limit: float | None = None  # an absolute ceiling on the current value, whatever the baseline
    optional: bool = (
        False  # may go unmeasured (e.g. too short a run for a leak fit) without failing
    )
    informational: bool = False  # worse than allowed is reported, not failed


_LATENCY = Threshold(0.25, 0.005)
_MEMORY = Threshold(0.10, 16 * MIB)
_RECOVERY = Threshold(0.50, 0.5)
_NONE_ALLOWED = Threshold(0.0, 0.0)

# First match wins; specific patterns before the family-wide catch-alls.
RULES: tuple[Rule, ...] = (
    Rule("throughput.requests_per_s", HIGHER, True, Threshold(0.15)),
    Rule("throughput.output_tokens_per_s", HIGHER, True, Threshold(0.15)),
    Rule("throughput.*", HIGHER, True, Threshold(0.15), default=False),
    Rule("latency.*.n", HIGHER, False, Threshold(0.0), default=False),
    *(Rule(f"latency.*.{p}", LOWER, True, _LATENCY) for p in ("p50", "p95", "p99")),
    Rule("latency.*", LOWER, True, _LATENCY, default=False),
    Rule("errors.rate", LOWER, False, Threshold(0.0, 0.01), limit=DEFAULT_MAX_ERROR_RATE),
    Rule("errors.*", LOWER, False, _NONE_ALLOWED, default=False),
    *(
        Rule(f"memory.{name}", LOWER, False, _MEMORY)
        for name in ("peak_rss_bytes", "peak_vram_bytes", "peak_sim_vram_bytes")
    ),
    # PSS splits shared pages by whoever else maps them at that moment (other Python processes
    # on the machine): the same code measured 11.6 and 30.0 MiB a run apart. RSS gates; PSS shows.
    Rule("memory.peak_pss_bytes", LOWER, False, _MEMORY, informational=True),
    Rule("memory.*", LOWER, False, _MEMORY, default=False),
    Rule("leak.*.confirmed_mb_per_1k_requests", LOWER, False, Threshold(0.5, 1.0), optional=True),
    Rule("leak.*.mb_per_1k_requests", LOWER, False, Threshold(0.5, 1.0), False, optional=True),
    Rule("leak.*.mb_per_hour", LOWER, False, Threshold(0.5, 10.0), False, optional=True),
    *(
        Rule(f"recovery.seconds_to_{stage}.{p}", LOWER, True, _RECOVERY)
        for stage in ("up", "ready", "first_success")
        for p in ("p50", "max")
    ),
    Rule("recovery.unrecovered", LOWER, False, _NONE_ALLOWED),
    Rule("recovery.requests_failed.total", LOWER, False, Threshold(1.0, 20)),
    Rule("recovery.recovered", HIGHER, False, _NONE_ALLOWED, default=False),
    Rule("recovery.incidents", LOWER, False, _NONE_ALLOWED, default=False),
    Rule("recovery.*", LOWER, False, _RECOVERY, default=False),
    Rule("results.lost", LOWER, False, _NONE_ALLOWED),
    Rule("results.duplicated", LOWER, False, _NONE_ALLOWED),
    Rule("results.*", HIGHER, False, _NONE_ALLOWED, default=False),
    # the engine's own metrics: only what the target exposes, so absent is "not measured"
    Rule(
        "engine.kv_cache_usage_peak",
        LOWER,
        False,
        Threshold(0.0, 0.10),
        optional=True,
        informational=True,
    ),
    Rule("engine.preemptions", LOWER, False, Threshold(0.25, 10), optional=True),
    Rule("engine.queue_time_mean_s", LOWER, True, Threshold(0.5, 0.05), optional=True),
    Rule("engine.prefix_cache_hit_rate", HIGHER, False, Threshold(0.0, 0.05), optional=True),
    Rule(
        "engine.*",
        LOWER,
        False,
        Threshold(0.25),
        default=False,
        optional=True,
        informational=True,
    ),
    # SLOs: compared only when both sides judged the same objectives (see _slo_specs)
    Rule("slo.goodput_rps", HIGHER, True, Threshold(0.15)),
    Rule("slo.goodput_output_tokens_per_s", HIGHER, True, Threshold(0.15), default=False),
    Rule("slo.attainment", HIGHER, False, Threshold(0.0, 0.02)),
    Rule("slo.*", HIGHER, False, _NONE_ALLOWED, default=False, informational=True),
    # open loop: how late the client sent; informational (the run is flagged in its summary)
    Rule(
        "schedule.lag_p99_s", LOWER, True, Threshold(1.0, 0.01), optional=True, informational=True
    ),
    Rule(
        "schedule.*", LOWER, False, _NONE_ALLOWED, default=False, optional=True, informational=True
    ),
    # CPU seconds the driver and the target spent per request: what the code costs
    Rule("cost.cpu_s_per_request", LOWER, True, Threshold(0.10), optional=True),
    Rule("cost.*", LOWER, True, Threshold(0.10), default=False, optional=True),
    Rule("events.unexpected_exits", LOWER, False, _NONE_ALLOWED),
    Rule("events.*", LOWER, False, _NONE_ALLOWED, default=False),
)
# Sections of summary.json that describe the run rather than measure it.
_NOT_METRICS = frozenset({"schema", "generated_at", "run", "window", "calibration", "definitions"})
_SPEC = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*%)?\s*,?\s*(\d+(?:\.\d+)?(?:e-?\d+)?)?\s*$")


def rule_for(name: str) -> Rule | None:
    return next((rule for rule in RULES if fnmatch.fnmatchcase(name, rule.pattern)), None)


def flatten(summary: Mapping[str, Any]) -> dict[str, float]:
    """Numeric leaves of summary.json as {"latency.e2e_s.p95": 0.84, ...} (lists are skipped)."""

    def walk(node: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, float]]:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                yield from walk(value, f"{name}.")
            elif _is_figure(value):
                yield name, float(value)

    return dict(walk({k: v for k, v in summary.items() if k not in _NOT_METRICS}, ""))


def _is_figure(value: Any) -> bool:
    """A number that was measured: not a bool, not NaN ("not measured")."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return is_number and value == value


def parse_threshold(text: str) -> tuple[str, str]:
    """`"latency.*=10%"` -> ("latency.*", "10%"); the spec is checked here, resolved later."""
    pattern, sep, spec = text.partition("=")
    if not sep or not pattern.strip() or not _spec_parts(spec):
        raise UserError(
            f"--threshold {text!r} is not METRIC=LIMIT; write e.g. latency.e2e_s.p95=10% "
            "(relative), errors.rate=0.02 (absolute) or 'latency.*=20%,0.01' (the larger)"
        )
    return pattern.strip(), spec.strip()


def _spec_parts(spec: str) -> tuple[float | None, float | None] | None:
    match = _SPEC.match(spec)
    if not match or not any(match.groups()):
        return None
    rel, absolute = match.groups()
    return (float(rel) / 100 if rel else None, float(absolute) if absolute else None)


def resolve_threshold(name: str, rule: Rule, specs: Mapping[str, str]) -> Threshold:
    """The metric's threshold: the last matching spec (a % keeps the rule's absolute floor)."""
    threshold = rule.threshold
    for pattern, spec in specs.items():
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        parts = _spec_parts(spec)
        if parts is None:
            raise UserError(f"threshold {pattern}={spec!r} is not a limit; write e.g. 10% or 0.5")
        rel, absolute = parts
        if rel is not None and absolute is None:
            threshold = Threshold(rel, rule.threshold.abs)
        else:
            threshold = Threshold(rel or 0.0, absolute or 0.0)
    return threshold


@dataclass
class Row:
    """One metric's comparison; `normalized` is the current value in the baseline machine's time.

    With repeats, `current` and `normalized` are means over the runs, `ci95` the 95% interval of
    the relative change, and `n` / `baseline_n` how many runs each side holds.
    """

    metric: str
    direction: str
    baseline: float | None
    current: float | None
    normalized: float | None
    change: float | None
    threshold: Threshold
    verdict: str
    limit: float | None = None
    ci95: tuple[float, float] | None = None
    n: int = 1
    baseline_n: int = 1


@dataclass
class Comparison:
    rows: list[Row]
    calibration: dict[str, Any]
    baseline_source: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    ignored: list[str] = field(default_factory=list)
    runs: int = 1
    slo: dict[str, Any] | None = None  # this run's SLO verdict (all runs of a repeat group)

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.verdict in FAILING]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def slo_met(self) -> bool | None:
        """Whether every SLO was met in every run; None when no SLOs were given."""
        return None if self.slo is None else self.slo["verdict"] == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "regression",
            "run_id": self.run_id,
            "runs": self.runs,
            "baseline": self.baseline_source,
            "calibration": self.calibration,
            "regressions": [row.metric for row in self.failures],
            "slo": self.slo,
            "metrics": [asdict(row) for row in self.rows],
            "ignored": self.ignored,
        }

    def to_markdown(self, baseline_label: str = "baseline") -> str:
        failures = self.failures
        if failures:
            head = (
                f"### Scale regression check: ❌ {len(failures)} of {len(self.rows)} metrics failed"
            )
        else:
            head = f"### Scale regression check: ✅ passed ({len(self.rows)} metrics)"
        source = self.baseline_source.get("run_id")
        runs = f" ({self.runs} repeats, means with 95% intervals)" if self.runs > 1 else ""
        lines = [
            head,
            "",
            f"Run `{self.run_id}`{runs} vs `{baseline_label}`"
            + (f" (run `{source}`)." if source else "."),
            _calibration_line(self.calibration),
        ]
        if self.slo is not None:
            lines.append(_slo_line(self.slo))
        lines += [
            "",
            "| metric | baseline | current | change | allowed worsening | result |",
            "| --- | --- | --- | ---: | --- | --- |",
        ]
        for row in self.rows:
            lines.append(_markdown_row(row, self.calibration.get("applied", False)))
        return "\n".join(lines) + "\n"


def _slo_line(slo: dict[str, Any]) -> str:
    mark = {"pass": "✅ met", "fail": "❌ missed", "unmeasured": "⚠️ not measured"}[slo["verdict"]]
    missed = f" ({', '.join(slo['missed'])})" if slo.get("missed") else ""
    return f"SLOs `{slo['spec']}`: {mark}{missed}."


def _calibration_line(calibration: dict[str, Any]) -> str:
    if calibration.get("applied"):
        interval = calibration.get("speed_ratio_ci95")
        noise = f" (95% {interval[0]:.2f}-{interval[1]:.2f}×)" if interval else ""
        return (
            f"Timing metrics normalised by the loopback reference: this machine ran it at "
            f"{calibration['speed_ratio']:.2f}×{noise} the baseline machine's speed."
        )
    return f"Timing metrics compared unnormalised: {calibration.get('reason')}."


def _markdown_row(row: Row, calibrated: bool) -> str:
    current = format_metric(row.metric, row.current)
    if calibrated and row.normalized is not None and row.normalized != row.current:
        current += f" (norm. {format_metric(row.metric, row.normalized)})"
    if row.change is not None:
        change = f"{row.change:+.1%}"
        if row.ci95 is not None:
            change += f" (95% {row.ci95[0]:+.1%} to {row.ci95[1]:+.1%})"
    elif row.baseline is not None and row.normalized is not None:
        change = f"{row.normalized - row.baseline:+g}"
    else:
        change = "—"
    arrow = "↑" if row.direction == HIGHER else "↓"
    result = {
        OK: "✅",
        IMPROVED: "✅ improved",
        NEW: "✅ new (not in the baseline, not compared)",
        UNMEASURED: "✅ not measured in this run, not compared",
        WORSE: "⚠️ worse (informational, not failed)",
        REGRESSED: "❌ regressed",
        MISSING: "❌ missing in this run",
        OVER_LIMIT: f"❌ over the limit of {format_metric(row.metric, row.limit)}",
    }[row.verdict]
    allowed = row.threshold.describe(row.metric)
    return (
        f"| {arrow} `{row.metric}` | {format_metric(row.metric, row.baseline)} | {current} "
        f"| {change} | {allowed} | {result} |"
    )


def _calibration(
    currents: list[dict | None], baseline: Mapping[str, Any], enabled: bool
) -> dict[str, Any]:
    """This machine's speed over the baseline machine's, from their loopback references; applied
    only when the two differ by more than the references' own noise (95% interval)."""
    calibration = baseline.get("calibration")
    if not enabled:
        return {"applied": False, "reason": "calibration disabled (--no-calibration)"}
    if baseline.get("paired"):
        return {"applied": False, "reason": "the baseline's runs alternated with these, here"}
    if not calibration or reference_rate(calibration) is None:
        return {"applied": False, "reason": "the baseline has no loopback reference"}
    rates = [reference_rate(current) for current in currents]
    if any(rate is None for rate in rates):
        return {"applied": False, "reason": "this run's manifest has no loopback reference"}
    if any((c or {}).get("workload") != calibration.get("workload") for c in currents):
        return {"applied": False, "reason": "the two references ran different workloads"}
    base = reference_rate(calibration)
    assert base is not None
    ratio = sum(rates) / len(rates) / base  # type: ignore[arg-type]
    figures: dict[str, Any] = {
        "speed_ratio": ratio,
        "current_requests_per_cpu_s": rates,
        "baseline_requests_per_cpu_s": base,
    }
    ours = rates if len(rates) > 1 else _rounds(currents[0])
    theirs = baseline.get("reference_samples") or _rounds(calibration)
    interval = None
    if ours and theirs:
        interval = difference_ci95(estimate(ours), estimate(theirs))
    if interval is not None:
        low, high = (1 + interval[0] / base, 1 + interval[1] / base)
        figures["speed_ratio_ci95"] = [low, high]
        if low <= MACHINE_MARGIN and high >= 1 / MACHINE_MARGIN:
            reason = (
                f"the loopback references do not show another machine (this one at {ratio:.2f}x "
                f"the baseline's, 95% {low:.2f}-{high:.2f}x, not wholly beyond "
                f"{1 / MACHINE_MARGIN:.2f}-{MACHINE_MARGIN:.2f}x)"
            )
            return {"applied": False, "reason": reason, **figures}
    return {"applied": True, "speed_ratios": [ratio] * len(currents), **figures}


def _rounds(calibration: Mapping[str, Any] | None) -> list[float]:
    """A single reference's rounds: its noise, when there are no repeats to show it."""
    rounds = (calibration or {}).get("rounds_requests_per_cpu_s") or []
    return [float(r) for r in rounds if isinstance(r, (int, float)) and r > 0]


def _judge(
    rule: Rule,
    baseline: float,
    normalized: float,
    threshold: Threshold,
    interval: tuple[float, float] | None = None,
) -> str:
    """Regressed when worse than allowed: the whole 95% interval of the change, when there is
    one (`interval`: current - baseline), else the point difference."""
    allowed = threshold.allowed(baseline)
    tolerance = 1e-9 * max(abs(baseline), abs(normalized)) + 1e-12
    if interval is None:
        interval = (normalized - baseline, normalized - baseline)
    low, high = interval
    least_worse, most_worse = (low, high) if rule.direction == LOWER else (-high, -low)
    if least_worse > allowed + tolerance:
        return REGRESSED
    if most_worse < -allowed - tolerance:
        return IMPROVED
    return OK


def compare(
    summary: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    baseline: Mapping[str, Any],
    *,
    thresholds: Mapping[str, str] | None = None,
    max_error_rate: float | None = None,
    calibrate: bool = True,
) -> Comparison:
    """Compare a run's summary (or the summaries of a repeat group) with a baseline document
    (see `make_baseline`).

    `thresholds` ({pattern: "10%"}) override the baseline's own, which override the defaults.
    """
    summaries = [summary] if isinstance(summary, Mapping) else list(summary)
    if not summaries:
        raise ValueError("compare needs at least one summary")
    specs = {**(baseline.get("thresholds") or {}), **(thresholds or {})}
    base = {k: float(v) for k, v in (baseline.get("metrics") or {}).items() if v is not None}
    samples = baseline.get("samples") or {}
    flats = [flatten(s) for s in summaries]
    paired = bool(baseline.get("paired"))
    calibration = _calibration([s.get("calibration") for s in summaries], baseline, calibrate)
    speeds = calibration.get("speed_ratios") or [1.0] * len(summaries)

    slo_block, slo_ignored = _slo_specs(summaries, baseline)
    names = set(base) | {n for flat in flats for n in flat if _wanted(n, specs)}
    ignored = sorted(name for name in names if rule_for(name) is None)
    if slo_ignored:
        ignored += sorted(n for n in names if n.startswith("slo.") and n not in ignored)
    rows = []
    for name in sorted(names - set(ignored), key=_display_order):
        rule = rule_for(name)
        assert rule is not None
        threshold = resolve_threshold(name, rule, specs)
        limit = rule.limit
        if name == "errors.rate" and max_error_rate is not None:
            limit = max_error_rate
        values = [flat.get(name) for flat in flats]
        measured = [v for v in values if v is not None]
        reference = base.get(name)
        if len(measured) < len(values):
            value = normalized_value = None
        elif rule.timing:
            normal = [
                normalized(v, rule.direction == HIGHER, speed)
                for v, speed in zip(measured, speeds, strict=True)
            ]
            value, normalized_value = _mean(measured), _mean(normal)
        else:  # a count or a peak: the worst run speaks for the group
            worst = max(measured) if rule.direction == LOWER else min(measured)
            value = normalized_value = worst
        interval = None
        current_n, baseline_n = len(measured), len(samples.get(name) or [reference])
        if rule.timing and value is not None and reference is not None:
            interval = _interval(normal, samples.get(name), reference, paired)
        if reference is None:
            verdict = NEW
        elif value is None or normalized_value is None:
            verdict = UNMEASURED if rule.optional else MISSING
        elif limit is not None and value > limit:
            verdict = OVER_LIMIT
        else:
            verdict = _judge(rule, reference, normalized_value, threshold, interval)
            if verdict == REGRESSED and rule.informational:
                verdict = WORSE
        change = ci95 = None
        if reference and normalized_value is not None:
            change = (normalized_value - reference) / abs(reference)
            if interval is not None:
                ci95 = (interval[0] / abs(reference), interval[1] / abs(reference))
        rows.append(
            Row(
                name,
                rule.direction,
                reference,
                value,
                normalized_value,
                change,
                threshold,
                verdict,
                limit,
                ci95,
                current_n,
                baseline_n,
            )
        )
    return Comparison(
        rows=rows,
        calibration=calibration,
        baseline_source=dict(baseline.get("source") or {}),
        run_id=(summaries[0].get("run") or {}).get("run_id"),
        ignored=ignored,
        runs=len(summaries),
        slo=slo_block,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _interval(
    current: list[float],
    baseline_samples: list[float] | None,
    reference: float,
    paired: bool = False,
) -> tuple[float, float] | None:
    """95% interval of mean(current) - baseline, when either side was repeated. With a paired
    baseline (its run i ran beside run i) it is the mean per-pair ratio's (or, where a baseline
    figure is 0, difference's), in the baseline's units: a machine that drifts between pairs
    scales both runs of a pair alike, so the drift drops out of the interval."""
    if paired and baseline_samples and len(baseline_samples) == len(current) > 1:
        if all(b > 0 for b in baseline_samples):  # drift scales a figure: judge pairs' ratios
            ratios = estimate([c / b for c, b in zip(current, baseline_samples, strict=True)])
            if ratios.ci95 is None:
                return None
            base_mean = estimate(baseline_samples).mean
            return (ratios.ci95[0] - 1) * base_mean, (ratios.ci95[1] - 1) * base_mean
        return estimate([c - b for c, b in zip(current, baseline_samples, strict=True)]).ci95
    base: Estimate = (
        estimate(baseline_samples) if baseline_samples else Estimate(reference, None, 1)
    )
    return difference_ci95(estimate(current), base)


def _slo_specs(
    summaries: list[Mapping[str, Any]], baseline: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, bool]:
    """The group's SLO verdict (failed if any run failed), and whether the SLO figures must be
    left out because the baseline judged other objectives (goodput under other SLOs differs)."""
    blocks = [s.get("slo") for s in summaries]
    if all(block is None for block in blocks):
        return None, bool(baseline.get("slo"))
    present = [block for block in blocks if block is not None]
    verdicts = {block["verdict"] for block in present}
    verdict = "fail" if "fail" in verdicts else "unmeasured" if "unmeasured" in verdicts else "pass"
    if len(present) < len(blocks):
        verdict = "unmeasured"
    missed = sorted({name for block in present for name in block.get("missed") or []})
    block = {"spec": present[0]["spec"], "verdict": verdict, "missed": missed, "runs": len(present)}
    return block, baseline.get("slo") != present[0]["spec"]


def _display_order(name: str) -> tuple[int, str]:
    """Grouped by section in rule order, then by name (p50, p95, p99 of one metric together)."""
    section = name.split(".", 1)[0]
    first = next(i for i, rule in enumerate(RULES) if rule.pattern.startswith(section))
    return first, name


def _wanted(name: str, specs: Mapping[str, str]) -> bool:
    """Compared by default, or named exactly by a threshold."""
    rule = rule_for(name)
    return rule is not None and (rule.default or name in specs)


def make_baseline(
    summary: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A baseline document from a run's summary (or a repeat group's): its compared metrics,
    reference, SLOs and thresholds; a group also keeps each timing metric's runs as `samples`
    (on the group's mean reference speed), from which compare draws the baseline's spread."""
    summaries = [summary] if isinstance(summary, Mapping) else list(summary)
    thresholds = dict(thresholds or {})
    first = summaries[0]
    run = first.get("run") or {}
    document: dict[str, Any] = {
        "schema": BASELINE_SCHEMA,
        "created_at": utc_iso(),
        "source": {"run_id": run.get("run_id"), "git_commit": run.get("git_commit")},
        "calibration": first.get("calibration"),
    }
    if len(summaries) == 1:
        flat = flatten(first)
        metrics = {name: value for name, value in flat.items() if _wanted(name, thresholds)}
    else:
        group = aggregate(summaries)
        figures = {n: f for n, f in group["metrics"].items() if _wanted(n, thresholds)}
        metrics = {name: f["mean"] for name, f in figures.items()}
        document["samples"] = {
            name: f["values"]
            for name, f in sorted(figures.items())
            if rule_for(name).timing and f["n"] > 1  # type: ignore[union-attr]
        }
        document["source"]["runs"] = len(summaries)
        if group["reference_samples"]:
            rate = group["reference_requests_per_cpu_s"]
            document["calibration"] = {
                **(first.get("calibration") or {}),
                "requests_per_cpu_s": rate,
            }
            document["reference_samples"] = group["reference_samples"]
    spec = (first.get("slo") or {}).get("spec")
    if spec:
        document["slo"] = spec
    document["metrics"] = dict(sorted(metrics.items()))
    document["thresholds"] = thresholds
    return document


def as_baseline(document: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """A baseline document, also accepting a whole summary.json as one."""
    if document.get("schema") == SUMMARY_SCHEMA:
        return make_baseline(document)
    if isinstance(document.get("metrics"), Mapping):
        return dict(document)
    raise UserError(
        f"{origin} is neither a baseline nor a summary.json (no 'metrics'); "
        "create one with: harness compare RUN_DIR --baseline FILE --update-baseline"
    )
