"""Samplers: the drift-free loop, RAM of a real process tree, /metrics scraping, load rows."""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from harness.errors import UserError
from harness.rundir import RunDir
from harness.supervision.cgroup import memory_cgroup
from harness.supervision.proctree import ProcessTree
from harness.supervision.samplers import SamplerLoop, Tick, parse_metrics, start_sampling
from harness.supervision.samplers.ram import RamSampler

from .helpers import program, samples, wait_for

METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.25
# HELP vllm:prompt_tokens_total Prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="m"} 1234.0
# HELP vllm:e2e_request_latency_seconds End-to-end latency.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 3.0
vllm:e2e_request_latency_seconds_count{model_name="m"} 3.0
vllm:e2e_request_latency_seconds_sum{model_name="m"} 4.5
# HELP harness_sim_vram_bytes Simulated VRAM used.
# TYPE harness_sim_vram_bytes gauge
harness_sim_vram_bytes 8.0e+09
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 10.0
# HELP odd_value A NaN gauge.
# TYPE odd_value gauge
odd_value NaN
"""


def test_parse_metrics_normalises_vllm_and_harness_names() -> None:
    gauges = parse_metrics(METRICS)
    assert gauges == {
        'num_requests_running{engine="0"}': 3.0,
        'num_requests_running{engine="1"}': 1.0,
        "kv_cache_usage_perc": 0.25,
        "prompt_tokens_total": 1234.0,
        "e2e_request_latency_seconds_count": 3.0,
        "e2e_request_latency_seconds_sum": 4.5,
        "sim_vram_bytes": 8.0e9,
        "odd_value": None,
    }


class _Slow:
    """A sampler that costs most of an interval on every tick, and much more on one."""

    source = "slow"

    def __init__(self, cost: float, long_tick: int, long_cost: float) -> None:
        self.cost, self.long_tick, self.long_cost = cost, long_tick, long_cost
        self.calls = 0

    def read(self, tick: Tick) -> list[dict[str, Any]]:
        self.calls += 1
        time.sleep(self.long_cost if self.calls == self.long_tick else self.cost)
        return [{"n": self.calls}]


def test_loop_is_drift_free_and_skips_instead_of_bunching(run_dir: RunDir) -> None:
    interval = 0.05
    began = time.monotonic()
    loop = SamplerLoop(run_dir, [_Slow(0.03, 5, 0.13)], interval=interval).start()
    wait_for(lambda: loop.ticks >= 16, what="16 ticks")
    loop.stop()
    elapsed = time.monotonic() - began
    # Ticks keep to start + k * interval however long each takes: ticks run plus slots skipped
    # match the elapsed time. A loop sleeping `interval` after each tick would have run about
    # elapsed / (interval + 0.03), 40% fewer. (The reading at stop may take up to 0.13 s.)
    assert elapsed / interval - 5 <= loop.ticks + loop.missed <= elapsed / interval + 1
    # the 0.13 s tick made whole slots late: skipped and counted, not run back to back
    assert loop.missed >= 1
    # every tick, then one reading at stop (the target's last figures)
    assert [row["n"] for row in samples(run_dir, "slow")] == list(range(1, loop.ticks + 2))


@pytest.fixture
def allocating() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(program("alloc.py", 8, 8, 0.05), stdout=subprocess.PIPE)
    yield child
    child.kill()
    child.wait()


def test_ram_follows_a_pid_callable_across_a_change(
    run_dir: RunDir, allocating: subprocess.Popen[bytes]
) -> None:
    target: list[int | None] = [allocating.pid]
    loop = start_sampling(run_dir, interval=0.02, pid=lambda: target[0], gpu=False, disk=False)
    wait_for(lambda: allocating.stdout and b"64 MB" in allocating.stdout.readline(), what="64 MB")
    target[0] = None
    wait_for(lambda: samples(run_dir, "ram")[-1]["pid"] is None, what="a row without a target")
    target[0] = allocating.pid
    wait_for(lambda: samples(run_dir, "ram")[-1]["pid"] == allocating.pid, what="target again")
    loop.stop()
    rows = samples(run_dir, "ram")
    mine = [r for r in rows if r["pid"] == allocating.pid]
    assert mine[-1]["rss_bytes"] > 60 << 20 and mine[0]["rss_bytes"] < mine[-1]["rss_bytes"]
    assert any(r["pss_bytes"] for r in mine)  # measured now and then, not on every row
    gap = [r for r in rows if r["pid"] is None]
    assert gap and all(r["rss_bytes"] is None and r["nprocs"] == 0 for r in gap)
    assert all(r["system_used_bytes"] <= r["system_total_bytes"] for r in rows)
    if memory_cgroup(allocating.pid) is not None:  # the cgroup it lives in, where there is one
        assert all(isinstance(r["cgroup_usage_bytes"], int) for r in mine)


def test_ram_counts_the_whole_tree() -> None:
    parent = subprocess.Popen(program("health_server.py", 0, "--children", 3))
    try:
        sampler = RamSampler(pss_interval_s=0)

        def whole_tree() -> list[dict[str, Any]]:
            tick = Tick(t=time.time(), pid=parent.pid, tree=ProcessTree(rescan_s=0))
            return [row for row in sampler.read(tick) if row["nprocs"] == 4]

        row = wait_for(whole_tree, what="4 processes")[0]
        assert row["rss_bytes"] > 4 * (4 << 20)  # four Python interpreters
        assert row["pss_bytes"] < row["rss_bytes"]  # shared pages counted once
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        body = METRICS.encode() if self.path == "/metrics" else b"nope"
        self.send_response(200 if self.path == "/metrics" else 404)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_server_rows_come_from_a_real_scrape(
    run_dir: RunDir, metrics_server: http.server.ThreadingHTTPServer
) -> None:
    url = f"http://127.0.0.1:{metrics_server.server_port}/metrics"
    loop = start_sampling(run_dir, interval=0.05, metrics_url=url, gpu=False)
    wait_for(lambda: len(samples(run_dir, "server")) >= 3, what="3 scrapes")
    loop.stop()
    row = samples(run_dir, "server")[-1]
    assert row["kv_cache_usage_perc"] == 0.25 and row["sim_vram_bytes"] == 8.0e9
    assert not any(key.startswith(("python_", "vllm:", "harness_")) for key in row)


def test_a_hung_metrics_server_never_delays_ram(
    run_dir: RunDir, metrics_server: http.server.ThreadingHTTPServer, capsys: Any
) -> None:
    _MetricsHandler.delay = 0.6
    try:
        url = f"http://127.0.0.1:{metrics_server.server_port}/metrics"
        loop = start_sampling(run_dir, interval=0.05, metrics_url=url, gpu=False)
        wait_for(lambda: len(samples(run_dir, "ram")) >= 12, what="12 RAM rows")
        loop.stop()
    finally:
        _MetricsHandler.delay = 0.0
    assert len(samples(run_dir, "server")) <= 2  # the scrape runs on its own thread
    assert loop.stats()["missed"] == 0


def test_unreachable_or_wrong_metrics_url(run_dir: RunDir, capsys: Any) -> None:
    with pytest.raises(UserError, match="not a loopback"):
        start_sampling(run_dir, metrics_url="http://192.0.2.1:8000/metrics")
    loop = start_sampling(run_dir, interval=0.02, metrics_url="http://127.0.0.1:9/metrics")
    wait_for(lambda: len(samples(run_dir, "ram")) >= 5, what="5 RAM rows")
    loop.stop()
    assert not samples(run_dir, "server")
    assert capsys.readouterr().err.count("metrics: http://127.0.0.1:9/metrics unreachable") == 1


def test_a_target_still_starting_is_not_reported_unreachable(run_dir: RunDir, capsys: Any) -> None:
    loop = start_sampling(
        run_dir, interval=0.02, metrics_url="http://127.0.0.1:9/metrics", metrics_grace_s=60
    )
    wait_for(lambda: len(samples(run_dir, "ram")) >= 5, what="5 RAM rows")
    loop.stop()
    assert "unreachable" not in capsys.readouterr().err


def test_load_rows_carry_progress_and_our_cpu(run_dir: RunDir) -> None:
    done = [0]

    def progress() -> dict[str, Any]:
        done[0] += 1
        return {"users": 4, "completed": done[0], "total": 100}

    loop = start_sampling(run_dir, interval=0.02, gpu=False, extra=progress)
    wait_for(lambda: len(samples(run_dir, "load")) >= 3, what="3 load rows")
    loop.stop()
    rows = samples(run_dir, "load")
    assert [r["completed"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["users"] == 4 and r["cpu_percent"] >= 0 for r in rows)
    disk = samples(run_dir, "disk")[0]
    assert 0 < disk["free_bytes"] <= disk["total_bytes"]
