"""Locust scenario figures: harness overhead, and TTFT/ITL accuracy against a configured server.

Run: .venv/bin/python benchmarks/bench_locust.py [--users 8] [--seconds 6] [--rounds 2]

1. Overhead: ChatUser (the whole harness: prompts, usage parsing, requests.jsonl, samplers in
   the same process) against a bare FastHttpUser posting the same bytes, both on one
   zero-latency `harness serve --speed max`, alternating A/B rounds in this run.
   Goal: ChatUser reaches >= 0.8x the bare request rate. Also printed: the load generator's CPU
   per request for each, which shows the overhead whether the client or the server is the
   bottleneck.
2. Accuracy: StreamingChatUser against a server configured for TTFT = 200 ms (fixed prefill,
   no per-token prefill, no slowdown under load) and ITL = 20 ms; goal: both means within 5%.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import psutil

from harness.net import free_port
from harness.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES, MAX_TOKENS = 40, 16
TTFT_S, ITL_S = 0.2, 0.02
STARTUP_S = 1.5


@contextmanager
def serve(*args: str) -> Iterator[str]:
    """`harness serve` on a free port with its own data directory, ready; stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tempfile.TemporaryDirectory()
    command = [
        sys.executable,
        "-m",
        "harness",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        data.name,
    ]
    server = subprocess.Popen(
        [*command, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"harness serve did not start: {command}")
            time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(10)
        data.cleanup()


def locust(args: Sequence[str], out: Path, seconds: float) -> tuple[float, float]:
    """One headless Locust run: its request rate and its CPU (share of one core), both over the
    steady middle of the run (no startup, no ramp, no report written at exit)."""
    command = [sys.executable, "-m", "locust", "--headless", "--only-summary", *args]
    command += ["--csv", str(out / "bench"), "--json-file", str(out / "bench")]
    env = {**os.environ, "BENCH_CANDIDATES": str(CANDIDATES), "BENCH_MAX_TOKENS": str(MAX_TOKENS)}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    process = psutil.Process(proc.pid)
    time.sleep(STARTUP_S + 1.0)  # start, generate prompts, spawn, settle
    cpu1, t1 = sum(process.cpu_times()[:2]), time.time()
    time.sleep(seconds - 2.0)
    cpu2, t2 = sum(process.cpu_times()[:2]), time.time()
    _, stderr = proc.communicate(timeout=120)
    entries = orjson.loads((out / "bench.json").read_bytes()) if proc.returncode in (0, 1) else []
    if not entries or any(e["num_failures"] for e in entries):
        raise SystemExit(f"locust run failed ({proc.returncode}): {stderr[-2000:]}")
    with open(out / "bench_stats_history.csv", newline="") as handle:
        totals = [
            (int(row["Timestamp"]), int(row["Total Request Count"]))
            for row in csv.DictReader(handle)
            if row["Name"] == "Aggregated" and t1 <= int(row["Timestamp"]) <= t2
        ]
    (ta, ca), (tb, cb) = totals[0], totals[-1]
    return (cb - ca) / (tb - ta), (cpu2 - cpu1) / (t2 - t1)


def overhead(users: int, seconds: int, rounds: int) -> None:
    common = ["-u", str(users), "-r", str(users), "-t", f"{seconds}s"]
    results: dict[str, list[tuple[float, float]]] = {"bare": [], "chat": []}
    with serve("--speed", "max") as url, tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            for kind in ("bare", "chat") if k % 2 == 0 else ("chat", "bare"):  # ABBA: no drift
                out = Path(tmp) / f"{kind}-{k}"
                out.mkdir()
                if kind == "bare":
                    args = ["-f", "benchmarks/_bare_locustfile.py", "--host", url, *common]
                else:
                    args = ["-f", "scenarios/", "ChatUser", "--host", url, *common]
                    args += ["--run-dir", str(out), "--candidates", str(CANDIDATES)]
                    args += ["--max-tokens", str(MAX_TOKENS)]
                rate, cpu = locust(args, out, seconds)
                results[kind].append((rate, cpu / rate))
                print(
                    f"  round {k + 1} {kind:5s}: {rate:8.1f} req/s, load generator at "
                    f"{100 * cpu:3.0f}% of a core, {1e6 * cpu / rate:4.0f} us CPU per request"
                )
    bare = statistics.mean(r for r, _ in results["bare"])
    chat = statistics.mean(r for r, _ in results["chat"])
    bare_cpu = statistics.mean(c for _, c in results["bare"])
    chat_cpu = statistics.mean(c for _, c in results["chat"])
    verdict = "PASS" if chat / bare >= 0.8 else "FAIL"
    print(f"overhead: ChatUser {chat:.1f} req/s vs bare FastHttpUser {bare:.1f} req/s")
    print(f"  ratio {chat / bare:.2f}x (goal >= 0.8x): {verdict}")
    print(f"  client CPU per request: ChatUser {chat_cpu / bare_cpu:.2f}x the bare user's")


def accuracy(users: int, seconds: int) -> None:
    settings = [
        f"prefill_overhead_s={TTFT_S}",
        "prefill_per_token_s=0",
        f"itl_s={ITL_S}",
        "load_slowdown=0",
    ]
    server_args = [arg for field in settings for arg in ("--set", field)]
    with serve(*server_args) as url, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        args = ["-f", "scenarios/", "StreamingChatUser", "--host", url, "--run-dir", str(out)]
        args += ["-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--max-tokens", "64"]
        locust(args, out, seconds)
        lines = [line for line in read_jsonl(out / "requests.jsonl") if line["ok"]]
    ttft = statistics.mean(line["ttft_s"] for line in lines)
    itl = statistics.mean(line["itl_mean_s"] for line in lines)
    print(
        f"accuracy: {len(lines)} streamed requests, {users} users, configured TTFT "
        f"{TTFT_S * 1000:.0f} ms and ITL {ITL_S * 1000:.0f} ms"
    )
    for name, measured, configured in (("TTFT", ttft, TTFT_S), ("ITL", itl, ITL_S)):
        error = measured / configured - 1
        verdict = "PASS" if abs(error) <= 0.05 else "FAIL"
        print(
            f"  {name}: measured {measured * 1000:.2f} ms, {error:+.1%} (goal within 5%): {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    overhead(args.users, args.seconds, args.rounds)
    accuracy(args.users, args.seconds + 2)


if __name__ == "__main__":
    main()
