"""Issue 6 figures: `harness scale` end to end at 170K, driver memory flatness, OOM resilience.

    .venv/bin/python benchmarks/bench_scale.py            # the full figures (about 10 minutes)
    .venv/bin/python benchmarks/bench_scale.py --n 20000  # a quick look at a smaller scale

Each scale run is its own `harness scale` process on the embedded zero-latency reference server, so
its peak RSS is its own. The baseline, measured in the same run on the same server, is a bare httpx
loop posting the same requests with no checkpoint, no logs and no retries: the ratio says what the
driver's bookkeeping and resilience cost against raw throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

import generators
from harness.driver.dataset import generated
from harness.rundir import RunDir, new_run_id
from harness.supervision.embedded import EmbeddedServer

GOALS = {"batch-api": 180.0, "client": 300.0}  # seconds for 170K on 2 cores
RSS_GROWTH_GOAL = 50 * 1024**2
MB = 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=170_000, help="full-size run (default 170000)")
    parser.add_argument("--small", type=int, default=10_000, help="RSS baseline run size")
    parser.add_argument("--oom-n", type=int, default=50_000, help="size of the OOM-kill run")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--baseline-n", type=int, default=20_000, help="bare-loop requests")
    parser.add_argument("--root", default="runs", help="runs root (datasets cached beneath)")
    args = parser.parse_args()
    root = Path(args.root)
    bench = root / new_run_id("bench-scale")
    failures = []

    print(f"# bench_scale: N={args.n:,}, results under {bench}")
    for n in sorted({args.small, args.oom_n, args.n}):
        started = time.monotonic()
        dataset, reused = generated(n, 0, root / "datasets")
        took = time.monotonic() - started
        how = "reused (sha256 checked by size+mtime)" if reused else f"generated in {took:.1f} s"
        size = dataset.path.stat().st_size
        print(f"dataset {n:>7,}: {how}, {size / 1e9:.2f} GB, {dataset.path}")
    big = generated(args.n, 0, root / "datasets")[0]

    baseline = _baseline(bench / "baseline", big.path, args.baseline_n)
    print(
        f"baseline: bare httpx loop, {args.baseline_n:,} requests, concurrency 64: "
        f"{baseline:,.0f} req/s (projects {args.n / baseline:,.0f} s for {args.n:,})"
    )

    runs = {}
    for mode in ("batch-api", "client"):
        runs[mode] = _scale(bench / f"{mode}-{args.n}", args.n, mode, root)
        run = runs[mode]
        rate = args.n / run["drive_s"]
        goal = GOALS[mode] * args.n / 170_000
        ok = run["wall_s"] < goal and run["verified"]
        failures += [] if ok else [f"{mode} {args.n:,}"]
        print(
            f"{mode:>9} {args.n:,}: {run['wall_s']:.1f} s end to end (goal < {goal:.0f} s, "
            f"{run['wall_s'] / goal:.2f} of it), driving {run['drive_s']:.1f} s = "
            f"{rate:,.0f} req/s = {rate / baseline:.2f}x the bare loop; lost {run['lost']}, "
            f"duplicated {run['duplicated']}; report afterwards {run['report_s']:.1f} s"
        )

    small = _scale(bench / f"client-{args.small}", args.small, "client", root)
    full = runs["client"]
    growth = full["driver_rss"] - small["driver_rss"]
    growth_max = full["process_peak_rss"] - small["process_peak_rss"]
    ok = growth < RSS_GROWTH_GOAL
    failures += [] if ok else ["driver RSS growth"]
    print(
        f"driver RSS {args.small:,} -> {args.n:,} (client mode): sampled peak "
        f"{small['driver_rss'] / MB:.1f} -> {full['driver_rss'] / MB:.1f} MiB, growth "
        f"{growth / MB:+.1f} MiB (goal < 50 MiB, {growth / RSS_GROWTH_GOAL:.2f} of it); "
        f"VmHWM {small['process_peak_rss'] / MB:.1f} -> {full['process_peak_rss'] / MB:.1f} MiB "
        f"({growth_max / MB:+.1f} MiB)"
    )

    points = ",".join(f"{100 * (k + 1) / (args.kills + 1):.0f}%" for k in range(args.kills))
    oom = _scale(bench / f"oom-{args.oom_n}", args.oom_n, "client", root, "--oom-at", points)
    recoveries = [e for e in _events(oom["run_dir"]) if e["kind"] == "recovered"]
    ok = oom["verified"] and oom["kills"] == args.kills and len(recoveries) == args.kills
    failures += [] if ok else ["OOM resilience"]
    print(
        f"{args.oom_n:,} with {args.kills} OOM kills at {points}: {oom['kills']} kills, "
        f"lost {oom['lost']}, duplicated {oom['duplicated']}, {oom['wall_s']:.1f} s end to end "
        f"({oom['drive_s'] / (args.oom_n / baseline):.2f}x the bare loop's time)"
    )
    for k, r in enumerate(recoveries, 1):
        print(
            f"  recovery {k}: up {r['seconds_to_up']:.2f} s, ready {r['seconds_to_ready']:.2f} s, "
            f"first success {_s(r.get('seconds_to_first_success'))}, "
            f"{r['requests_failed']} requests failed in between"
        )
    print("PASS" if not failures else f"FAIL: {', '.join(failures)}")
    return 0 if not failures else 1


def _baseline(path: Path, dataset: Path, n: int) -> float:
    """Requests/s of a bare httpx loop (64 in flight) against the embedded zero-latency server."""
    payloads = [
        orjson.dumps(body) for _, body in itertools.islice(generators.iter_requests(dataset), n)
    ]
    run_dir = RunDir(path)
    with EmbeddedServer(run_dir, server_args=["--oom", "kill", "--speed", "max"]) as server:

        async def bare() -> float:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(base_url=server.url, limits=limits) as client:
                queue = iter(payloads)

                async def worker() -> None:
                    for payload in queue:
                        response = await client.post(
                            "/v1/chat/completions",
                            content=payload,
                            headers={"content-type": "application/json"},
                        )
                        response.raise_for_status()

                started = time.monotonic()
                await asyncio.gather(*(worker() for _ in range(64)))
                return n / (time.monotonic() - started)

        rate = asyncio.run(bare())
    run_dir.close()
    return rate


def _scale(run_dir: Path, n: int, mode: str, root: Path, *extra: str) -> dict:
    """One `harness scale` process; its wall time, driving time, verification and RSS."""
    command = [
        sys.executable, "-m", "harness", "scale", "--n", str(n), "--mode", mode,
        "--run-dir", str(run_dir), "--runs-root", str(root), "--no-report", *extra,
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    outcome, verification = manifest["outcome"], manifest["verification"]
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "harness", "report", str(run_dir)], capture_output=True, check=False
    )
    report_s = time.monotonic() - started
    return {
        "run_dir": run_dir,
        "wall_s": wall,
        "drive_s": outcome["seconds"],
        "verified": done.returncode == 0
        and verification["lost"] == verification["duplicated"] == 0,
        "lost": verification["lost"],
        "duplicated": verification["duplicated"],
        "kills": outcome["oom_kills"],
        "driver_rss": outcome["driver_peak_rss_bytes"],
        "process_peak_rss": outcome["process_peak_rss_bytes"],
        "report_s": report_s,
    }


def _events(run_dir: Path) -> list[dict]:
    from harness.rundir import read_jsonl

    return list(read_jsonl(run_dir / "events.jsonl"))


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
