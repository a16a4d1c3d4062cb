"""Sweep figures: the best point against a known capacity, and the time of an 8-point sweep.

Run: .venv/bin/python benchmarks/bench_sweep.py [--n 120] [--fast-n 1000]

1. Capacity: the embedded server runs at most 8 sequences at once (`--set max_num_seqs=8`,
   10x compressed latency, streamed answers). The sweep `--concurrency 1,2,4,...,32` under a TTFT
   SLO of twice the unloaded TTFT (`--slo ttft_p90=2x`: the first point, concurrency 1, is the
   unloaded server) must name a best point between 0.5x and 1.5x that capacity (4 to 12).
2. Time: a sweep of 8 points at `--speed max` (`--full-grid`, so saturation does not end it
   early) must finish in under 2 minutes; its baseline is the same 8 points run as plain
   `harness scale` commands in the same benchmark, alternated (sweep, plain, sweep, plain), so
   the ratio says what the sweep adds to the scale runs it is made of.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness"]
CAPACITY = 8
GRID = (1, 2, 4, 8, 16, 32, 64, 128)


def run(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(command[2:5])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def capacity(root: Path, n: int) -> bool:
    out = root / "capacity"
    command = [*HARNESS, "sweep", "--concurrency", "1,2,4,8,16,32", "--speed", "10"]
    command += ["--set", f"max_num_seqs={CAPACITY}", "--stream", "--slo", "ttft_p90=2x"]
    command += ["--n", str(n), "--run-dir", str(out), "--runs-root", str(root / "runs")]
    seconds = run(command)
    document = orjson.loads((out / "sweep.json").read_bytes())
    best = document["best"]
    print(f"capacity: SLO {document['slo']} (asked: {document['slo_asked']}), {seconds:.0f} s")
    for point in document["points"]:
        ttft = point["latency"].get("ttft_s.p90")
        print(
            f"  concurrency {point['load']:g}: {point['requests_per_s']:.1f} req/s, TTFT p90 "
            f"{(ttft or 0) * 1000:.1f} ms, SLOs {point['slo_verdict']}"
            + (", saturated" if point["saturated"] else "")
        )
    stop = document["stop"]
    print(f"  stopped: {stop['reason']} {stop.get('detail', '')}")
    if best is None:
        print("  best point: none: FAIL")
        return False
    ratio = best["load"] / CAPACITY
    ok = 0.5 <= ratio <= 1.5
    print(
        f"  best point: concurrency {best['load']:g} = {ratio:.2f}x the capacity of {CAPACITY} "
        f"(0.5x to 1.5x): {'PASS' if ok else 'FAIL'}"
    )
    return ok


def timing(root: Path, n: int, rounds: int) -> bool:
    sweeps, plains = [], []
    for r in range(rounds):
        out = root / f"fast-{r}"
        command = [*HARNESS, "sweep", "--concurrency", ",".join(map(str, GRID)), "--full-grid"]
        command += ["--n", str(n), "--run-dir", str(out), "--runs-root", str(root / "runs")]
        sweeps.append(run(command))
        points = len(orjson.loads((out / "sweep.json").read_bytes())["points"])
        plain = 0.0
        for c in GRID:
            command = [*HARNESS, "scale", "--n", str(n), "--concurrency", str(c), "--no-report"]
            command += ["--run-dir", str(root / f"plain-{r}-{c}")]
            command += ["--runs-root", str(root / "runs")]
            plain += run(command)
        plains.append(plain)
        print(
            f"  round {r + 1}: sweep of {points} points {sweeps[-1]:.1f} s; the same points as "
            f"plain scale runs {plain:.1f} s (ratio {sweeps[-1] / plain:.2f})"
        )
    worst = max(sweeps)
    ok = worst < 120
    print(
        f"time: an {len(GRID)}-point sweep at --speed max, {n:,} requests a point: at most "
        f"{worst:.1f} s (under 120 s: {'PASS' if ok else 'FAIL'}); sweep / plain runs "
        f"{sum(sweeps) / sum(plains):.2f}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=120, help="requests per capacity point")
    parser.add_argument("--fast-n", type=int, default=1000, help="requests per timed point")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        ok = capacity(root, args.n)
        ok = timing(root, args.fast_n, args.rounds) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
