"""Server: scrape a Prometheus /metrics page (vLLM's names and ours) into a `server` row of gauges.

Names are normalised for the run directory: `vllm:` and `harness_` prefixes stripped, ':' -> '_'
(`vllm:num_requests_running` -> `num_requests_running`). Gauges, counters and untyped samples are
kept, histograms and summaries as `_sum`/`_count` only; the client's own `python_*`/`process_*`
runtime metrics are dropped (the RAM sampler measures the process).
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.net import require_loopback_url
from harness.supervision.samplers.base import Notices, Tick

_SKIPPED_PREFIXES = ("python_", "process_")
_KEPT_TYPES = frozenset({"gauge", "counter", "unknown", "untyped", "histogram", "summary"})


def normalise_metric_name(name: str) -> str:
    """`vllm:num_requests_running` -> `num_requests_running`; `harness_sim_x` -> `sim_x`."""
    for prefix in ("vllm:", "harness_"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name.replace(":", "_")


def parse_metrics(text: str) -> dict[str, float | None]:
    """Prometheus text -> {normalised name: value}; series that differ by labels keep the labels
    that differ, Prometheus-style: `num_requests_running{engine="1"}`. NaN becomes None."""
    # Buckets are most of a histogram-heavy page and are not kept: drop them before parsing.
    kept_lines = [line for line in text.splitlines() if "_bucket{" not in line]
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families("\n".join(kept_lines) + "\n"):
        if family.type not in _KEPT_TYPES or family.name.startswith(_SKIPPED_PREFIXES):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket")) or "quantile" in sample.labels:
                continue
            series.setdefault(normalise_metric_name(sample.name), []).append(
                (sample.labels, sample.value)
            )
    gauges: dict[str, float | None] = {}
    for name, values in series.items():
        varying = _varying_labels([labels for labels, _ in values])
        for labels, value in values:
            key = name
            if varying:
                key += "{" + ",".join(f'{k}="{labels.get(k, "")}"' for k in varying) + "}"
            gauges[key] = None if math.isnan(value) else value
    return gauges


def _varying_labels(label_sets: list[dict[str, str]]) -> list[str]:
    if len(label_sets) < 2:
        return []
    keys = sorted({key for labels in label_sets for key in labels})
    return [key for key in keys if len({labels.get(key) for labels in label_sets}) > 1]


class ServerSampler:
    """Scrapes one loopback /metrics URL per tick; an unreachable server gives no row (a gap)."""

    source = "server"

    def __init__(
        self,
        url: str,
        timeout: float = 2.0,
        notices: Notices | None = None,
        startup_grace_s: float = 0.0,
    ) -> None:
        self.url = require_loopback_url(url, "metrics URL")
        self._client = httpx.Client(timeout=timeout, trust_env=False)
        self._notices = notices or Notices()
        self._quiet_until = time.monotonic() + startup_grace_s
        self._reached = False

    def read(self, tick: Tick) -> list[dict[str, Any]]:
        try:
            response = self._client.get(self.url)
        except httpx.HTTPError as exc:
            # a server still loading is not news; one that stopped answering (or never did) is
            if self._reached or time.monotonic() >= self._quiet_until:
                self._notices.once(
                    "metrics-down", f"metrics: {self.url} unreachable ({type(exc).__name__})"
                )
            return []
        self._reached = True
        if response.status_code != 200:
            self._notices.once(
                f"metrics-{response.status_code}",
                f"metrics: {self.url} answered HTTP {response.status_code}; is it a /metrics URL?",
            )
            return []
        try:
            gauges = parse_metrics(response.text)
        except ValueError as exc:
            self._notices.once(
                "metrics-parse", f"metrics: {self.url} is not Prometheus text: {exc}"
            )
            return []
        return [gauges] if gauges else []

    def close(self) -> None:
        self._client.close()
