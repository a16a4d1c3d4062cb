"""The driver's open loop against an older tree: CPU per request and how late sends leave.

    .venv/bin/python benchmarks/bench_open_loop.py [--rates 1000,2000,4000] [--n 10000]
        [--rounds 4] [--baseline 8e516c4]

One embedded zero-latency reference server; the driver (`_drive_once.py driver`, Poisson
arrivals at each rate, seed 0) from this tree (A) and from the baseline commit's tree (B,
extracted with `git archive` and put first on PYTHONPATH) in alternating order (A B, then B A)
each round, so the machine's drift hits both alike. CPU per request is the marginal cost: each
pass is also run with nothing to send and that CPU taken off. The figure is the median of the
per-round ratios A/B at each rate (goal <= 0.75 at every rate: the baseline spun on sub-ms
sleeps), beside the send lag p50/p99 of each tree (from the passes' `schedule_lag_s`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from _drive_once import RATE_ENV  # this script's folder is first on sys.path

from harness.driver.dataset import generated
from harness.rundir import RunDir, new_run_id, read_jsonl
from harness.supervision.embedded import EmbeddedServer

ROOT = Path(__file__).resolve().parents[1]
ONCE = str(ROOT / "benchmarks" / "_drive_once.py")
GOAL = 0.75


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,2000,4000", help="req/s, comma-separated")
    parser.add_argument("--n", type=int, default=10_000, help="requests a pass")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--baseline", default="8e516c4", help="the commit to compare with")
    parser.add_argument("--root", default="runs", help="runs root (datasets cached beneath)")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    root = Path(args.root)
    bench = root / new_run_id("bench-open-loop")
    dataset = generated(args.n, 0, root / "datasets")[0].path
    old_tree = Path(tempfile.mkdtemp(prefix="harness-open-loop-"))
    trees = {"this tree": None, args.baseline: old_tree}
    cpu = {(tree, rate): [] for tree in trees for rate in rates}
    lags = {key: [] for key in cpu}
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        print(f"# bench_open_loop: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start")
        run_dir = RunDir(bench / "server")
        with EmbeddedServer(run_dir, server_args=["--speed", "max"]) as server:
            for round_ in range(args.rounds):
                order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
                for rate in rates:
                    for tree in order:
                        empty = _pass(server.url, dataset, 0, rate, args, bench, trees[tree])
                        result = _pass(server.url, dataset, args.n, rate, args, bench, trees[tree])
                        cpu[tree, rate].append((result["cpu_s"] - empty["cpu_s"]) / args.n)
                        lags[tree, rate].append(result["lag"])
                print(
                    f"round {round_ + 1}: "
                    + "; ".join(
                        f"{rate:,.0f} req/s: "
                        + ", ".join(f"{tree} {cpu[tree, rate][-1] * 1e6:.0f} us" for tree in trees)
                        for rate in rates
                    )
                )
        run_dir.close()
    finally:
        shutil.rmtree(old_tree, ignore_errors=True)
    failures = []
    for rate in rates:
        ratios = [a / b for a, b in zip(*(cpu[tree, rate] for tree in trees), strict=True)]
        median = statistics.median(ratios)
        failures += [] if median <= GOAL else [f"{rate:g} req/s"]
        lag = "; ".join(
            f"{tree} send lag p50 {_median(lags[tree, rate], 0) * 1e3:.2f} ms, "
            f"p99 {_median(lags[tree, rate], 1) * 1e3:.2f} ms"
            for tree in trees
        )
        print(
            f"{rate:,.0f} req/s: CPU per request, this tree / {args.baseline}: {median:.2f} "
            f"(goal <= {GOAL}; per round {', '.join(f'{r:.2f}' for r in ratios)}); "
            f"medians {statistics.median(cpu['this tree', rate]) * 1e6:.0f} vs "
            f"{statistics.median(cpu[args.baseline, rate]) * 1e6:.0f} us; {lag}"
        )
    print(f"# load {os.getloadavg()[0]:.2f} at the end (other jobs share this machine)")
    print("PASS" if not failures else f"FAIL: {', '.join(failures)}")
    return 0 if not failures else 1


def _pass(
    url: str,
    dataset: Path,
    n: int,
    rate: float,
    args: argparse.Namespace,
    bench: Path,
    tree: Path | None,
) -> dict:
    """One driver pass in its own process; its result with the send lag's (p50, p99)."""
    run_dir = bench / "passes" / f"pass-{time.monotonic_ns()}"
    env = {**os.environ, RATE_ENV: str(rate)}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    command = [sys.executable, ONCE, "driver", url, str(dataset), str(n), str(args.concurrency)]
    done = subprocess.run(
        [*command, str(run_dir)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"a pass failed:\n{done.stderr[-3000:]}")
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] != str(tree or ROOT):
        raise SystemExit(f"a pass ran the code at {result['code']}, not {tree or ROOT}")
    lag = sorted(
        line["schedule_lag_s"]
        for line in read_jsonl(run_dir / "requests.jsonl")
        if line.get("schedule_lag_s") is not None
    )
    result["lag"] = (lag[len(lag) // 2], lag[int(len(lag) * 0.99)]) if lag else (0.0, 0.0)
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def _median(pairs: list[tuple[float, float]], which: int) -> float:
    return statistics.median(pair[which] for pair in pairs)


if __name__ == "__main__":
    sys.exit(main())
