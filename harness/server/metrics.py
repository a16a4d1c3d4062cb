"""Prometheus metrics of one server, under vLLM's names where vLLM has one.

Each app owns its registry (no process-global state). Gauges are read from the simulator at
scrape time and histograms are plain bucket counts exported at scrape time, so the hot path
pays a bisect per observation instead of prometheus-client's locked bucket loop.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_TOKEN_LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


class LeanHistogram(Collector):
    """A histogram for one event loop (no lock): observe() is a bisect and two additions."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...], model_name: str) -> None:
        self.name = name
        self.doc = doc
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self._model_name = model_name

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.doc, labels=["model_name"])

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.doc, labels=["model_name"])
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        family.add_metric([self._model_name], buckets, self.sum)
        yield family


class ServerMetrics:
    """The registry and the label-bound metrics the server updates."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, label = self.registry, {"model_name": model_name}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["model_name"], registry=r).labels(**label)

        def histogram(name: str, doc: str, buckets: tuple) -> LeanHistogram:
            metric = LeanHistogram(name, doc, buckets, model_name)
            r.register(metric)
            return metric

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["model_name"], registry=r).labels(**label)

        self.running = gauge("vllm:num_requests_running", "Requests in the running batch.")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting for a slot.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage; 1 means 100 percent.")
        self.preemptions = counter(
            "vllm:num_preemptions", "Sequences preempted (their KV freed, recomputed later)."
        )
        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache."
        )
        self.prefix_cache_hits = counter(
            "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache."
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Generation tokens processed.")
        self._success = Counter(
            "vllm:request_success",
            "Finished requests by finish reason.",
            ["model_name", "finished_reason"],
            registry=r,
        )
        self.finished = {
            reason: self._success.labels(model_name=model_name, finished_reason=reason)
            for reason in ("stop", "length", "abort")
        }
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", _LATENCY_BUCKETS
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds",
            "Gaps between streamed tokens (streaming requests).",
            _TOKEN_LATENCY_BUCKETS,
        )
        self.tpot = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Mean time per output token after the first, per request.",
            _TOKEN_LATENCY_BUCKETS,
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", _LATENCY_BUCKETS
        )
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds", "Time spent waiting for a slot.", _LATENCY_BUCKETS
        )
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Prompt tokens per request.", _TOKEN_BUCKETS
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Generated tokens per request.", _TOKEN_BUCKETS
        )
        self.vram_used = gauge("harness_sim_vram_bytes", "Simulated GPU memory in use.")
        self.vram_total = gauge("harness_sim_vram_total_bytes", "Simulated GPU memory capacity.")
        self.kv_bytes = gauge("harness_sim_kv_cache_bytes", "Simulated KV-cache blocks in use.")
        self.leaked = gauge(
            "harness_sim_leaked_bytes", "Simulated VRAM lost to --leak-mb-per-1k-requests."
        )
        self.fragmented = gauge(
            "harness_sim_fragmented_bytes", "Simulated VRAM stranded by --fragmentation."
        )
        self.activation = gauge(
            "harness_sim_activation_bytes", "Simulated prefill activations held now."
        )
        self.speed = gauge(
            "harness_sim_speed", "The --speed time compression (0: no simulated delay)."
        )
        self.host_memory = gauge(
            "harness_host_memory_held_bytes",
            "Host RAM really held, following the simulated memory (--host-memory).",
        )
        self.context_tokens = gauge(
            "harness_context_tokens", "Tokens held in running conversation contexts."
        )
        self.ready = gauge("harness_model_ready", "1 once the start-up model load is over.")
        self.loaded = gauge(
            "harness_model_loaded", "1 while the model is in VRAM (ollama unloads)."
        )
        self.model_loads = counter("harness_model_loads", "Model loads after an unload (ollama).")
        self.model_unloads = counter(
            "harness_model_unloads", "Model unloads after keep_alive idle (ollama)."
        )
        self._trims = Counter(
            "harness_context_trims",
            "Context trims by strategy and trigger.",
            ["model_name", "strategy", "reason"],
            registry=r,
        )
        self.trimmed_tokens = counter("harness_context_trimmed_tokens", "Tokens dropped by trims.")
        self.oom = counter("harness_oom", "Simulated CUDA out-of-memory errors.")
        self._rejected = Counter(
            "harness_requests_rejected",
            "Requests refused before running, by reason.",
            ["model_name", "reason"],
            registry=r,
        )
        self._faults = Counter(
            "harness_faults_injected", "Faults injected via /admin/faults.", ["fault"], registry=r
        )
        self._model_name = model_name

    def bind_gauges(self, readers: dict[str, Callable[[], float]]) -> None:
        """Make each named gauge read its value from a function at scrape time."""
        for name, read in readers.items():
            getattr(self, name).set_function(read)

    def trim(self, strategy: str, reason: str, tokens: int) -> None:
        self._trims.labels(model_name=self._model_name, strategy=strategy, reason=reason).inc()
        self.trimmed_tokens.inc(tokens)

    def rejected(self, reason: str) -> None:
        self._rejected.labels(model_name=self._model_name, reason=reason).inc()

    def fault(self, fault: str) -> None:
        self._faults.labels(fault=fault).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
