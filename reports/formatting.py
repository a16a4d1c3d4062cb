"""Human text for report figures, chosen from the metric's name (its unit is in the name)."""

from __future__ import annotations

from harness.units import format_bytes


def format_seconds(value: float) -> str:
    if abs(value) < 1:
        return f"{value * 1000:.1f} ms"
    if abs(value) < 120:
        return f"{value:.2f} s"
    if abs(value) < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.2f} h"


def format_metric(name: str, value: float | None) -> str:
    """`memory.peak_rss_bytes` -> "512.0 MiB", `latency.e2e_s.p95` -> "840.0 ms", rates as %."""
    if value is None:
        return "—"
    leaf = name.rsplit(".", 1)[-1]
    parts = name.split(".")
    if leaf.endswith("_bytes"):
        return format_bytes(value)
    if leaf.endswith("mb_per_1k_requests"):
        return f"{value:+.3f} MB/1K req"
    if leaf.endswith("mb_per_hour"):
        return f"{value:+.2f} MB/h"
    if leaf.endswith("_s_per_request"):
        return f"{value * 1e6:,.0f} µs/request"
    if leaf.endswith("per_s"):
        return f"{value:,.2f}/s"
    is_share = leaf.endswith(("_share", "_hit_rate")) or leaf.startswith("kv_cache_usage")
    if leaf == "rate" or is_share:
        return f"{value:.2%}"
    if any(part.endswith("_s") or part.startswith("seconds_") for part in parts):
        return format_seconds(value) if leaf != "n" else f"{value:,.0f}"
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.3g}"
