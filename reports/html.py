"""report.html: one self-contained page (inline CSS, PNGs as data: URIs) that opens offline."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from html import escape
from typing import Any

from reports.engine import NO_PANEL_NOTE
from reports.formatting import format_metric, format_seconds
from reports.recovery import STAGES

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;
max-width:1240px;color:#1b1b1b;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}
h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.25rem .7rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f6f6}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5rem 1rem;margin:1rem 0}
.alert{background:#fde8e8;border:2px solid #c81e1e;color:#7a0d0d;padding:.75rem 1rem;margin:1rem 0}
.leak{color:#b00020;font-weight:600}.muted{color:#666}
figure{margin:1.5rem 0}img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
"""

_CAPTIONS = {
    "memory": "Memory over time. Vertical lines mark OOM kills, restarts, recoveries and injected "
    "faults, and when the target went degraded (failing while up) and was restored; ticks along "
    "the bottom mark context trims; the dotted line is progress (right axis). A cgroup shared "
    "with the harness is drawn with system RAM; a run at a finite --speed has simulated hours "
    "along the top.",
    "engine": "The engine's own view from the target's /metrics: KV-cache usage with preemptions "
    "marked (triangles), and requests waiting for and holding a slot.",
    "recovery": "Recovery after each death: seconds to process up, to ready, and to the first "
    "successful request.",
    "latency": "Latency percentiles per time bin, requests binned by completion time; failed "
    "requests excluded. ITL and TPOT share a panel when they are the same for every request "
    "(one token per streamed chunk).",
    "throughput": "Requests per second, and output tokens per second below, per time bin of "
    "completion time.",
}


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(rows: Iterable[tuple[str, str]]) -> str:
    return _table(("", ""), rows).replace("<thead><tr><th></th><th></th></tr></thead>", "")


def _when(t: float | None) -> str:
    if t is None:
        return "—"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _interval(value: Any, ci: Any, unit: str) -> str:
    if value is None:
        return "—"
    if not ci:
        return f"{value:+.3f} {unit}"
    return f"{value:+.3f} {unit} (95% {ci[0]:+.3f} to {ci[1]:+.3f})"


def _overview(summary: Mapping[str, Any]) -> str:
    run, window = summary["run"], summary["window"]
    dataset = run.get("dataset") or {}
    calibration = summary.get("calibration") or {}
    duration = window.get("duration_s")
    rows = [
        ("target", run.get("target_url") or "—"),
        ("dataset", _dataset(dataset)),
        ("started", run.get("start_time") or _when(window.get("start_t"))),
        ("ended", run.get("end_time") or _when(window.get("end_t"))),
        ("duration", format_seconds(duration) if duration is not None else "—"),
        ("git commit", run.get("git_commit") or "—"),
        ("loopback reference", _reference(calibration)),
    ]
    return _pairs(rows)


def _dataset(dataset: Mapping[str, Any]) -> str:
    """The file sent, or what was generated in its place (a Locust run without --dataset)."""
    count = dataset.get("n")
    records = f"{count:,} records" if isinstance(count, int) else "records: ?"
    if dataset.get("path"):
        return f"{dataset['path']} ({records})"
    return f"generated, not read from a file ({records})" if dataset else "—"


def _reference(calibration: Mapping[str, Any]) -> str:
    """The run's machine speed (harness.calibration), as compare uses it."""
    rate = calibration.get("requests_per_cpu_s")
    if not rate:
        return "none"
    return f"{rate:,.0f} requests per CPU second ({calibration.get('workload', '?')})"


def _traffic(summary: Mapping[str, Any]) -> str:
    requests, errors, throughput = summary["requests"], summary["errors"], summary["throughput"]
    rows = [
        ("source", requests.get("source") or "none"),
        ("attempts", f"{requests.get('attempts', 0):,}"),
        ("successful", f"{requests.get('ok', 0):,}"),
        ("failed", f"{requests.get('failed', 0):,}"),
        ("error rate", format_metric("errors.rate", errors.get("rate"))),
        (
            "requests/s",
            format_metric("throughput.requests_per_s", throughput.get("requests_per_s")),
        ),
        (
            "output tokens/s",
            format_metric("throughput.output_tokens_per_s", throughput.get("output_tokens_per_s")),
        ),
    ]
    html = _pairs(rows)
    latency_rows = []
    streamed = (
        ("ttst_s", "time to second token"),
        ("itl_gap_s", "every inter-token gap"),
        ("itl_max_s", "longest gap per request"),
        ("scheduled_s", "from the scheduled send time"),
    )
    for name, label in (
        ("e2e_s", "end-to-end"),
        ("ttft_s", "TTFT"),
        ("itl_s", "ITL"),
        ("tpot_s", "TPOT"),
        *((n, label) for n, label in streamed if summary["latency"].get(n)),
    ):
        figures = summary["latency"].get(name)
        if not figures:
            latency_rows.append((label, "—", "—", "—", "—", "—", "—"))
            continue
        cells = [
            format_seconds(figures[k]) if figures.get(k) is not None else "—"
            for k in ("p50", "p90", "p95", "p99", "max")
        ]
        latency_rows.append((label, f"{figures.get('n', 0):,}", *cells))
    html += "<h3>Latency (successful requests)</h3>"
    html += _table(("", "n", "p50", "p90", "p95", "p99", "max"), latency_rows)
    causes = errors.get("by_cause") or {}
    if causes:
        html += "<h3>Failures by cause</h3>" + _table(("cause", "attempts"), causes.items())
        html += _table(("HTTP status", "attempts"), (errors.get("by_status") or {}).items())
    return html


def _memory(summary: Mapping[str, Any]) -> str:
    memory = summary["memory"]
    cgroup = "peak cgroup usage"
    if memory.get("cgroup_shared"):
        cgroup += " (a cgroup shared with the harness, not the target's own)"
    rows = [
        (label, format_metric(f"memory.{key}", memory.get(key)))
        for key, label in (
            ("peak_rss_bytes", "peak target RSS"),
            ("peak_pss_bytes", "peak target PSS"),
            ("peak_system_used_bytes", "peak system RAM used"),
            ("system_total_bytes", "system RAM total"),
            ("peak_cgroup_usage_bytes", cgroup),
            ("cgroup_limit_bytes", "cgroup limit"),
            ("peak_vram_bytes", "peak VRAM (NVML)"),
            ("peak_sim_vram_bytes", "peak simulated VRAM"),
            ("sim_vram_total_bytes", "simulated VRAM total"),
        )
        if memory.get(key) is not None
    ]
    rows.append(("VRAM source", memory.get("vram_note") or memory.get("vram_source", "—")))
    html = _pairs(rows)
    leak_rows = []
    for result in summary["leak"].values():
        leak_rows.append(
            (
                result["series"],
                result["verdict"].replace("_", " "),
                _interval(result.get("mb_per_hour"), result.get("mb_per_hour_ci95"), "MB/h"),
                _interval(
                    result.get("mb_per_1k_requests"),
                    result.get("mb_per_1k_requests_ci95"),
                    "MB/1K req",
                ),
                "—" if result.get("r2") is None else f"{result['r2']:.2f}",
                result["reason"],
            )
        )
    if leak_rows:
        html += "<h3>Leak check (after warm-up)</h3>"
        html += _table(
            ("series", "verdict", "slope per hour", "slope per 1K requests", "R²", "why"), leak_rows
        )
        html = html.replace("<td>leak</td>", '<td class="leak">leak</td>')
    return html


_ENGINE_ROWS = (
    ("kv_cache_usage_peak", "peak KV-cache usage"),
    ("kv_cache_usage_mean", "mean KV-cache usage"),
    ("requests_waiting_peak", "peak requests waiting"),
    ("requests_waiting_mean", "mean requests waiting"),
    ("requests_running_peak", "peak requests running"),
    ("preemptions", "preemptions"),
    ("queue_time_mean_s", "mean queue time"),
    ("prefix_cache_hit_rate", "prefix-cache hit rate"),
)


def _engine(summary: Mapping[str, Any], has_panel: bool) -> str:
    engine = summary.get("engine") or {}
    unavailable = engine.get("unavailable") or {}
    rows = []
    for key, label in _ENGINE_ROWS:
        value = engine.get(key)
        if value is None:
            rows.append((label, f"unavailable: {unavailable.get(key, 'not measured')}"))
        else:
            rows.append((label, format_metric(f"engine.{key}", value)))
    if engine.get("counter_resets"):
        rows.append(("counter resets (restarts)", engine["counter_resets"]))
    html = _pairs(rows)
    if not has_panel:
        html += f'<p class="muted">{escape(NO_PANEL_NOTE)}.</p>'
    return html


def _recovery(summary: Mapping[str, Any]) -> str:
    recovery = summary["recovery"]
    if not recovery["incidents"]:
        return '<p class="muted">No deaths of the target in this run.</p>'
    start = summary["window"].get("start_t") or 0.0
    rows = []
    for n, item in enumerate(recovery["per_incident"], 1):
        stages = [format_seconds(item[s]) if item.get(s) is not None else "—" for s in STAGES]
        rows.append(
            (
                n,
                format_seconds(item["death_t"] - start),
                item["cause"],
                "yes" if item.get("injected") else "no",
                *stages,
                "—" if item.get("requests_failed") is None else item["requests_failed"],
                "yes" if item.get("recovered") else "NO",
            )
        )
    html = _table(
        (
            "#",
            "at",
            "cause",
            "injected",
            "process up",
            "ready",
            "first success",
            "requests failed",
            "recovered",
        ),
        rows,
    )
    stats = []
    for stage in STAGES:
        figures = recovery.get(stage)
        if figures:
            stats.append(
                (
                    stage.replace("_", " "),
                    format_seconds(figures["p50"]),
                    format_seconds(figures["max"]),
                )
            )
    if stats:
        html += _table(("stage", "p50", "max"), stats)
    return html


def _other(summary: Mapping[str, Any]) -> str:
    rows = []
    results = summary.get("results")
    if results:
        rows.append(
            (
                "results",
                f"expected {results.get('expected')}, received {results.get('received')}, "
                f"lost {results.get('lost')}, duplicated {results.get('duplicated')} "
                f"({results['source']})",
            )
        )
    else:
        rows.append(("results", "not verified by the producer"))
    load = summary.get("load_generator")
    if load and load.get("cpu_percent_mean") is not None:
        rows.append(
            (
                "load generator CPU",
                f"mean {load['cpu_percent_mean']:.0f}%, p95 {load['cpu_percent_p95']:.0f}%, "
                f"max {load['cpu_percent_max']:.0f}% of a core",
            )
        )
    if load and load.get("processes"):
        lag = load.get("loop_lag_p99_s")
        rows.append(
            (
                "load generator",
                f"{'SATURATED' if load['saturated'] else 'kept up'}: "
                f"{load['processes']} process(es), event-loop busy "
                f"{(load.get('loop_busy_mean') or 0):.0%}, wake-up lag p99 "
                f"{'n/a' if lag is None else f'{lag * 1000:.1f} ms'}",
            )
        )
    events = summary["events"]
    for key in (
        "oom_kills",
        "oom_errors",
        "crashes",
        "unexpected_exits",
        "restarts",
        "faults_injected",
        "trims",
    ):
        rows.append((key.replace("_", " "), events.get(key, 0)))
    return _pairs(rows)


def _slo(slo: Mapping[str, Any]) -> str:
    """SLO verdict, goodput and each objective's attainment (reports.slo)."""
    verdict = {"pass": "met", "fail": "MISSED", "unmeasured": "not measured"}[slo["verdict"]]
    rows = [("objectives", slo["spec"]), ("verdict", verdict)]
    if slo.get("requests"):
        rows += [
            (
                "requests attaining every objective",
                f"{slo['attained_all']:,} of {slo['requests']:,} ({slo['attainment']:.1%})",
            ),
            ("goodput", format_metric("slo.goodput_rps", slo.get("goodput_rps"))),
            (
                "goodput output tokens/s",
                format_metric(
                    "slo.goodput_output_tokens_per_s", slo.get("goodput_output_tokens_per_s")
                ),
            ),
        ]
    html = _pairs(rows)
    objective_rows = []
    for row in slo["objectives"]:
        if row["verdict"] == "unmeasured":
            objective_rows.append(
                (
                    row["name"],
                    format_seconds(row["bound_s"]),
                    "—",
                    "—",
                    "not measured: " + row["reason"],
                )
            )
            continue
        objective_rows.append(
            (
                row["name"],
                format_seconds(row["bound_s"]),
                format_seconds(row["measured_s"]),
                f"{row['attainment']:.2%} (goal {row['percentile']:g}%)",
                "met" if row["verdict"] == "pass" else "MISSED",
            )
        )
    html += _table(("objective", "bound", "measured", "attained", "verdict"), objective_rows)
    if slo["verdict"] == "fail":
        html = html.replace("<td>MISSED</td>", '<td class="leak">MISSED</td>')
    return html


def render_html(summary: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The whole page; `images` maps figure names to PNG bytes, embedded in that order."""
    run_id = summary["run"]["run_id"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>harness report: {escape(run_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Run {escape(run_id)}</h1>",
        f"<p class='muted'>generated {escape(summary['generated_at'])}</p>",
        _overview(summary),
    ]
    load = summary.get("load_generator") or {}
    if load.get("saturated"):  # above everything: it changes how every figure below reads
        parts.insert(
            3, f"<div class='alert' role='alert'><strong>{escape(load['warning'])}</strong></div>"
        )
    if summary.get("warnings"):
        items = "".join(f"<li>{escape(w)}</li>" for w in summary["warnings"])
        parts.append(f"<div class='warn'><strong>Warnings</strong><ul>{items}</ul></div>")
    parts += ["<h2>Traffic</h2>", _traffic(summary)]
    if summary.get("slo"):
        parts += ["<h2>SLOs and goodput</h2>", _slo(summary["slo"])]
    parts += ["<h2>Memory</h2>", _memory(summary)]
    parts += ["<h2>Engine (the server's own metrics)</h2>", _engine(summary, "engine" in images)]
    parts += ["<h2>Recovery</h2>", _recovery(summary)]
    parts += ["<h2>Results and events</h2>", _other(summary)]
    parts.append("<h2>Figures</h2>")
    if not images:
        parts.append("<p class='muted'>No samples, events or requests to plot.</p>")
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        caption = escape(_CAPTIONS.get(name, name))
        parts.append(
            f"<figure id='{escape(name)}'><img alt='{escape(name)} plot' "
            f"src='data:image/png;base64,{data}'><figcaption>{caption}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _sweep_cell(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "s":
        return format_seconds(value)
    if kind == "bytes":
        return format_metric("memory.x_bytes", value)
    return f"{value:,.1f}"


def render_sweep_html(document: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """A capacity sweep's page (reports/sweep.py): the best point, why it stopped, each point."""
    best, stop = document.get("best"), document.get("stop") or {}
    target_n = document.get("target_n", 170_000)
    rows = [
        ("mode", f"{document['mode']} over {document['axis']}"),
        ("requests per point", f"{document['n_per_point']:,} x {document['repeat']} repeat(s)"),
        ("SLOs", document.get("slo") or "none"),
        ("VRAM budget", _sweep_cell(document.get("vram_budget_bytes"), "bytes")),
        ("RAM budget", _sweep_cell(document.get("ram_budget_bytes"), "bytes")),
        ("stopped", f"{stop.get('reason', '?')}: {stop.get('detail', '')}".rstrip(": ")),
    ]
    if best:
        rows.append(
            (
                "best point",
                f"{document['axis']} {best['load']:g}: {best['requests_per_s']:,.1f} requests/s"
                + (
                    f", goodput {best['goodput_rps']:,.1f}/s"
                    if best.get("goodput_rps") is not None
                    else ""
                ),
            )
        )
        rows.append(
            (
                f"{target_n:,} requests at the best point",
                _sweep_cell(best["predicted_target_s"], "s"),
            )
        )
    else:
        rows.append(("best point", "none met the SLOs and the budget"))
    table = []
    for point in document["points"]:
        latency = point["latency"]
        notes = []
        if point.get("saturated"):
            notes.append("saturated")
        if point.get("client_saturated"):
            notes.append("client saturated")
        if point.get("oom"):
            notes.append(f"{point['oom']} OOM")
        if point.get("over_budget"):
            notes.append(point["over_budget"].replace("_", " "))
        if point.get("slo_missed"):
            notes.append("missed " + ", ".join(point["slo_missed"]))
        table.append(
            (
                f"{point['load']:g}",
                _sweep_cell(point.get("requests_per_s"), "n"),
                _sweep_cell(point.get("goodput_rps"), "n"),
                _sweep_cell(latency.get("e2e_s.p50"), "s"),
                _sweep_cell(latency.get("e2e_s.p99"), "s"),
                _sweep_cell(latency.get("ttft_s.p99"), "s"),
                _sweep_cell(latency.get("itl_s.p99"), "s"),
                _sweep_cell(point.get("peak_vram_bytes"), "bytes"),
                _sweep_cell(point.get("peak_ram_bytes"), "bytes"),
                _sweep_cell(point.get("predicted_target_s"), "s"),
                ", ".join(notes) or ("best" if best and point["load"] == best["load"] else ""),
            )
        )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>harness capacity sweep</title><style>{_CSS}</style></head><body>",
        "<h1>Capacity sweep</h1>",
        f"<p class='muted'>generated {escape(document['generated_at'])}</p>",
        _pairs(rows),
        "<h2>Points</h2>",
        _table(
            (
                document["axis"],
                "requests/s",
                "goodput/s",
                "e2e p50",
                "e2e p99",
                "TTFT p99",
                "ITL p99",
                "peak VRAM",
                "peak RAM",
                f"{target_n:,} requests",
                "notes",
            ),
            table,
        ),
    ]
    png = images.get("sweep")
    if png:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            "<figure id='sweep'><img alt='sweep plot' "
            f"src='data:image/png;base64,{data}'><figcaption>Left: throughput against latency, "
            "the Pareto frontier joined. Middle: one request's output tokens/s against the "
            "server's. Right: peak memory per point, budgets dashed. The star is the best point; "
            "hollow points missed the SLOs or the budget.</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
