"""Arrival figures: the schedules' statistics, and how closely real Locust runs keep them.

Run: .venv/bin/python benchmarks/bench_arrivals.py [--rate 50] [--seconds 20] [--rounds 2]

1. Schedules (harness/arrivals.py, pure): 10,000 Poisson arrivals at 50 req/s over five seeds,
   achieved rate within 3% of 50 and inter-arrival CV 1 +- 0.1; gamma with burstiness 0.5, CV
   sqrt(2) +- 10% (vLLM bench's definition: shape B, scale 1/(rate*B), CV 1/sqrt(B)).
2. Locust: open-loop runs of ChatUser against one `harness serve --speed max`, Poisson (A) and
   gamma 0.5 (B) alternating ABBA. The baseline is each run's own schedule: what was actually
   sent is compared with what was due, as ratios (actual/scheduled rate and CV), with the
   schedule lag p50/p99 the client reported.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from harness.arrivals import rate_offsets
from harness.net import free_port
from harness.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(5)
ARRIVALS = {"poisson": ("poisson", 1.0), "gamma 0.5": ("gamma", 0.5)}


def rate_and_cv(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return len(gaps) / (times[-1] - times[0]), statistics.pstdev(gaps) / statistics.fmean(gaps)


def schedules(rate: float) -> None:
    print(f"schedules: 10,000 arrivals at {rate:g} req/s, seeds {SEEDS.start}-{SEEDS.stop - 1}")
    for label, (arrival, burstiness) in ARRIVALS.items():
        expected_cv = 1 / math.sqrt(burstiness)
        for seed in SEEDS:
            started = time.perf_counter()
            offsets = list(itertools.islice(rate_offsets(rate, arrival, burstiness, seed), 10_001))
            draw_us = (time.perf_counter() - started) / 10_000 * 1e6
            achieved, cv = rate_and_cv(offsets)
            ok = abs(achieved / rate - 1) <= 0.03 and abs(cv / expected_cv - 1) <= 0.1
            print(
                f"  {label:9s} seed {seed}: rate {achieved / rate:.4f}x, CV {cv:.3f} "
                f"({cv / expected_cv:.3f}x of {expected_cv:.3f}), {draw_us:.2f} us per arrival: "
                f"{'PASS' if ok else 'FAIL'}"
            )


@contextmanager
def serve() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        command = [sys.executable, "-m", "harness", "serve", "--port", str(port)]
        server = subprocess.Popen(
            [*command, "--data-dir", data, "--speed", "max"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
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
                    raise SystemExit("harness serve did not start")
                time.sleep(0.05)
            yield url
        finally:
            server.terminate()
            server.wait(10)


def locust_run(url: str, rate: float, label: str, seconds: int, out: Path) -> dict[str, float]:
    arrival, burstiness = ARRIVALS[label]
    command = [sys.executable, "-m", "locust", "-f", "scenarios/", "--headless", "--only-summary"]
    command += ["ChatUser", "--host", url, "--run-dir", str(out), "-u", "2", "-r", "2"]
    command += ["-t", f"{seconds}s", "--rate", str(rate), "--arrival", arrival]
    command += ["--burstiness", str(burstiness), "--max-tokens", "16", "--candidates", "40"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = list(read_jsonl(out / "requests.jsonl"))
    if done.returncode != 0 or not lines or not all(line["ok"] for line in lines):
        raise SystemExit(f"locust run failed ({done.returncode}): {done.stderr[-2000:]}")
    due_rate, due_cv = rate_and_cv([line["scheduled_t"] for line in lines])
    sent_rate, sent_cv = rate_and_cv([line["t"] for line in lines])
    lags = sorted(line["schedule_lag_s"] for line in lines)
    return {
        "n": len(lines),
        "due_rate": due_rate,
        "due_cv": due_cv,
        "rate_ratio": sent_rate / due_rate,
        "cv_ratio": sent_cv / due_cv,
        "lag_p50": lags[len(lags) // 2],
        "lag_p99": lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)],
    }


def locust_fidelity(rate: float, seconds: int, rounds: int) -> None:
    print(f"locust: ChatUser open loop at {rate:g} req/s for {seconds} s, harness serve max speed")
    results: dict[str, list[dict[str, float]]] = {label: [] for label in ARRIVALS}
    with serve() as url, tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            order = list(ARRIVALS) if k % 2 == 0 else list(reversed(ARRIVALS))  # ABBA
            for label in order:
                out = Path(tmp) / f"{label.replace(' ', '-')}-{k}"
                figures = locust_run(url, rate, label, seconds, out)
                results[label].append(figures)
                print(
                    f"  round {k + 1} {label:9s}: {figures['n']} sent; schedule "
                    f"{figures['due_rate']:.2f} req/s CV {figures['due_cv']:.3f}; "
                    "sent/scheduled rate "
                    f"{figures['rate_ratio']:.4f}x, CV {figures['cv_ratio']:.4f}x; lag p50 "
                    f"{figures['lag_p50'] * 1000:.2f} ms, p99 {figures['lag_p99'] * 1000:.2f} ms"
                )
    for label, runs in results.items():
        rate_ratio = statistics.mean(r["rate_ratio"] for r in runs)
        cv_ratio = statistics.mean(r["cv_ratio"] for r in runs)
        p99 = max(r["lag_p99"] for r in runs)
        print(
            f"  {label:9s}: sent/scheduled rate {rate_ratio:.4f}x, CV {cv_ratio:.4f}x, "
            f"worst lag p99 {p99 * 1000:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    schedules(args.rate)
    locust_fidelity(args.rate, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
