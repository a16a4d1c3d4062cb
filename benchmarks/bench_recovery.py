"""OOM-kill recovery of the reference server: SIGKILL -> up -> ready -> first successful request.

Goal (issue 4): ready again in under 2 s plus the configured simulated model-load time.
Baseline, measured in the same run: the server's cold start (spawn -> /health/ready 200), so the
ratio shows what a recovery costs beyond starting the process (the restart backoff, mostly).

    .venv/bin/python benchmarks/bench_recovery.py [--kills 3] [--load-time 1.0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

import httpx

from harness.rundir import RunDir
from harness.supervision.embedded import EmbeddedServer

HEALTHY_S = 1.0
CHAT = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _traffic(server: EmbeddedServer, stop: threading.Event) -> None:
    with httpx.Client(timeout=2.0) as client:
        while not stop.is_set():
            try:
                ok = client.post(f"{server.url}/v1/chat/completions", json=CHAT).status_code == 200
            except httpx.HTTPError:
                ok = False
            server.supervisor.note_request(ok)
            stop.wait(0.02)


def _wait_recovered(run_dir: RunDir, count: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recovered = [e for e in run_dir.events() if e["kind"] == "recovered"]
        if len(recovered) >= count:
            return recovered[count - 1]
        time.sleep(0.05)
    raise SystemExit(f"no recovery within {timeout} s; see {run_dir.path}/target.log")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--load-time", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir(tmp)
        server_args = ["--speed", "max", "--load-time", str(args.load_time)]
        started = time.monotonic()
        # Each kill comes after a healthy second, so each restart uses the first backoff (0.5 s),
        # as isolated OOMs in a long run do; back-to-back kills would double it (a crash loop).
        with EmbeddedServer(
            run_dir, server_args=server_args, sample_interval=0.5, healthy_reset_s=HEALTHY_S
        ) as server:
            cold_start = time.monotonic() - started
            stop = threading.Event()
            sender = threading.Thread(target=_traffic, args=(server, stop))
            sender.start()
            results = []
            for k in range(1, args.kills + 1):
                server.supervisor.wait_ready(30)
                time.sleep(HEALTHY_S)  # healthy for a while: the backoff starts over
                server.supervisor.kill()
                results.append(_wait_recovered(run_dir, k))
            stop.set()
            sender.join()
        run_dir.close()
    ready = [r["seconds_to_ready"] for r in results]
    print(
        f"recovery of the reference server from SIGKILL, {args.kills} kills, simulated load "
        f"{args.load_time:g} s, backoff 0.5 s (load average {os.getloadavg()[0]:.2f})"
    )
    print(f"  baseline cold start (spawn -> ready): {cold_start:.2f} s")
    for k, r in enumerate(results, 1):
        print(
            f"  kill {k}: up {r['seconds_to_up']:.2f} s, ready {r['seconds_to_ready']:.2f} s, "
            f"first success {r['seconds_to_first_success']:.2f} s, "
            f"{r['requests_failed']} requests failed"
        )
    median = statistics.median(ready)
    goal = 2.0 + args.load_time
    print(f"  median SIGKILL -> ready {median:.2f} s = {median / cold_start:.2f}x the cold start")
    print(f"  goal: < 2 s + load time = {goal:.2f} s -> {'met' if median < goal else 'MISSED'}")


if __name__ == "__main__":
    main()
