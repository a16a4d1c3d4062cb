"""Issue 15 figures: the client driver against its old self, a bare aiohttp loop, and sharded.

    .venv/bin/python benchmarks/bench_driver.py               # every figure (about 10 minutes)
    .venv/bin/python benchmarks/bench_driver.py --quick       # smaller sizes, fewer rounds
    .venv/bin/python benchmarks/bench_driver.py --only cpu    # figure 3 alone
    .venv/bin/python benchmarks/bench_driver.py --only cpu --rate 2000 --cpu-n 20000  # paced

Every client runs in its own process against one embedded zero-latency reference server, in
rounds that alternate their order (A B C, then C B A), so the machine's drift hits all alike;
each figure is the median of the per-round ratios. The old driver is this repository at
OLD_COMMIT (before issue 15), extracted with `git archive` and put first on PYTHONPATH.

1. rate of the driver / rate of the old driver (goal >= 4, concurrency 64)
2. rate of the driver / rate of a bare aiohttp loop posting the same bytes (goal >= 0.8)
3. CPU per request with --processes 2 / with the driver in one process (goal <= 1.10; the
   server shares the cores, so rates say little: CPU counts every driver process and the pool),
   split into sharding itself (against two plain drivers at once, each on its share) and two
   clients sharing the cores (two plain drivers against one), with two controls: the server's
   CPU per request with two plain drivers and with one, and one driver at half the concurrency
   (each of the two processes' part; half the rate with --rate) against one at all of it. Per
   request is what one more request costs: each round also runs every client with nothing to
   send, and the CPU of that pass (starting the processes, importing the driver) is taken off
   and shown as a fixed cost.
   --pin puts the server on the first CPU and every client on the last, so that two driver
   processes share one core as they must on 2 cores, whatever the scheduler would do.
   --rate R runs this figure's passes in an open loop at R req/s (Poisson; the processes share
   the one schedule): every kind then does the same work per second, and at a rate the machine
   keeps with room to spare, no process waits for a core
4. `harness scale --n 170k --oom-at 30%,70%` end to end (goal < 60 s on 2 cores), and the same
   at --baseline-n against the old tree's `harness scale`
5. driver RSS growth from 10K to 170K in those scale runs (goal < 50 MB)
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
from collections.abc import Callable
from pathlib import Path

import orjson
from _drive_once import PIN_ENV, RATE_ENV  # this script's folder is first on sys.path

from harness.driver.dataset import generated
from harness.rundir import RunDir, new_run_id
from harness.supervision.embedded import EmbeddedServer

OLD_COMMIT = "4cb5d15"
ROOT = Path(__file__).resolve().parents[1]
ONCE = str(ROOT / "benchmarks" / "_drive_once.py")
MB = 1e6
GOALS = {"vs_old": 4.0, "vs_aiohttp": 0.8, "cpu_2_processes": 1.10, "e2e_s": 60.0, "rss_mb": 50.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="requests per client pass")
    parser.add_argument("--cpu-n", type=int, default=60_000, help="requests per CPU pass")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--e2e-n", type=int, default=170_000)
    parser.add_argument("--small-n", type=int, default=10_000, help="RSS baseline run size")
    parser.add_argument("--baseline-n", type=int, default=20_000, help="old vs new scale runs")
    parser.add_argument("--root", default="runs", help="runs root (datasets cached beneath)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 rounds")
    parser.add_argument("--only", choices=("cpu",), help="figure 3 alone")
    parser.add_argument(
        "--pin", action="store_true", help="server on the first CPU, the clients on the last"
    )
    parser.add_argument(
        "--rate", type=float, help="figure 3 in an open loop at this many requests a second"
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.cpu_n, args.rounds = 5_000, 10_000, 2
        args.e2e_n, args.small_n, args.baseline_n = 20_000, 5_000, 5_000
    root = Path(args.root)
    bench = root / new_run_id("bench-driver")
    cache = root / "datasets"
    old_tree = Path(tempfile.mkdtemp(prefix="harness-old-driver-"))
    failures: list[str] = []
    try:
        _extract(OLD_COMMIT, old_tree)
        big = generated(max(args.n, args.cpu_n, args.e2e_n), 0, cache)[0]
        for n in {args.e2e_n, args.small_n, args.baseline_n}:
            generated(n, 0, cache)  # the scale runs' datasets, made before any clock starts
        print(f"# bench_driver: results under {bench}; old driver: {OLD_COMMIT}")
        print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
        failures += _clients(bench, big.path, args, old_tree)
        if args.only is None:
            failures += _scale_runs(bench, root, args, old_tree)
    finally:
        shutil.rmtree(old_tree, ignore_errors=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at the end (other jobs share this machine)")
    print("PASS" if not failures else f"FAIL: {', '.join(failures)}")
    return 0 if not failures else 1


def _extract(commit: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def _clients(bench: Path, dataset: Path, args: argparse.Namespace, old_tree: Path) -> list[str]:
    """Figures 1-3: client passes in alternating rounds against one embedded server."""
    run_dir = RunDir(bench / "server")
    rates: dict[str, list[float]] = {"driver": [], "old-driver": [], "aiohttp": []}
    cpu: dict[str, list[float]] = {"driver": [], "processes-2": [], "pair-2": [], "half": []}
    fixed: dict[str, list[float]] = {kind: [] for kind in cpu}  # CPU of a pass sending nothing
    server_cpu: dict[str, list[float]] = {kind: [] for kind in cpu}  # per request
    half = "rate" if args.rate else "concurrency"
    with EmbeddedServer(run_dir, server_args=["--oom", "kill", "--speed", "max"]) as server:
        if args.pin:
            _pin(server.supervisor.pid, args)
        serving = _cpu_reader(server.supervisor.pid)
        kinds = ["old-driver", "driver", "aiohttp"] if args.only is None else []
        for round_ in range(args.rounds):
            for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                path = old_tree if kind == "old-driver" else None
                result = _pass(kind, server.url, dataset, args.n, args, bench, path)
                rates[kind].append(result["n"] / result["seconds"])
                if kind == "driver" and round_ == 0:
                    print(f"  (code: new {result['code']})")
            kinds_cpu = list(cpu)
            for kind in kinds_cpu if round_ % 2 == 0 else kinds_cpu[::-1]:
                # half: one plain driver at the part each of the 2 processes gets: half the
                # concurrency (closed loop) or half the rate (open loop)
                client = "driver" if kind == "half" else kind
                users, rate = args.concurrency, args.rate
                if kind == "half" and rate:
                    rate /= 2
                elif kind == "half":
                    users //= 2
                empty = _pass(client, server.url, dataset, 0, args, bench, None, users, rate)
                served = serving()
                result = _pass(
                    client, server.url, dataset, args.cpu_n, args, bench, None, users, rate
                )
                server_cpu[kind].append((serving() - served) / result["n"])
                fixed[kind].append(empty["cpu_s"])
                cpu[kind].append((result["cpu_s"] - empty["cpu_s"]) / result["n"])
            print(
                f"round {round_ + 1}: "
                + (
                    f"driver {rates['driver'][-1]:,.0f} req/s, old "
                    f"{rates['old-driver'][-1]:,.0f}, aiohttp {rates['aiohttp'][-1]:,.0f}; "
                    if kinds
                    else ""
                )
                + f"CPU per request: 1 process {cpu['driver'][-1] * 1e6:.0f} us, 2 processes "
                f"{cpu['processes-2'][-1] * 1e6:.0f} us, 2 plain drivers at once "
                f"{cpu['pair-2'][-1] * 1e6:.0f} us, 1 process at half the {half} "
                f"{cpu['half'][-1] * 1e6:.0f} us; the server "
                f"{server_cpu['driver'][-1] * 1e6:.0f} us"
            )
    run_dir.close()
    all_in = _ratios(*(_all_in(cpu, fixed, kind, args.cpu_n) for kind in ("processes-2", "driver")))
    print(
        "  fixed CPU of a pass (nothing to send, medians): "
        + ", ".join(f"{kind} {statistics.median(s):.3f} s" for kind, s in fixed.items())
        + f"; counted in, 2 processes / 1 at {args.cpu_n:,} requests: "
        + f"{statistics.median(all_in):.2f}"
    )
    failures = []
    figures = [
        ("vs_old", "driver rate / old driver rate", _ratios(rates["driver"], rates["old-driver"])),
        ("vs_aiohttp", "driver rate / bare aiohttp", _ratios(rates["driver"], rates["aiohttp"])),
        (
            "cpu_2_processes",
            "CPU per request, 2 processes / 1"
            + (f" (open loop, {args.rate:,.0f} req/s)" if args.rate else " (closed loop)"),
            _ratios(cpu["processes-2"], cpu["driver"]),
        ),
    ]
    if cpu["pair-2"]:  # where the 2 processes' extra CPU goes
        splits = {
            "sharding itself (2 processes / 2 plain drivers)": _ratios(
                cpu["processes-2"], cpu["pair-2"]
            ),
            "2 clients sharing the cores with the server (2 plain / 1)": _ratios(
                cpu["pair-2"], cpu["driver"]
            ),
        }
        controls = {
            "the server's CPU per request (2 plain / 1)": _ratios(
                server_cpu["pair-2"], server_cpu["driver"]
            ),
            f"1 process at half the {half} / at all of it": _ratios(cpu["half"], cpu["driver"]),
        }
        for heading, parts in (("of which", splits), ("control:", controls)):
            for label, split in parts.items():
                rounds = ", ".join(f"{r:.2f}" for r in split)
                print(f"  {heading} {label}: {statistics.median(split):.2f} (per round {rounds})")
    for key, label, ratios in figures:
        if not ratios:
            continue
        median = statistics.median(ratios)
        goal = GOALS[key]
        ok = median <= goal if key == "cpu_2_processes" else median >= goal
        failures += [] if ok else [label]
        sign = "<=" if key == "cpu_2_processes" else ">="
        print(
            f"{label}: {median:.2f} (goal {sign} {goal:g}; per round "
            f"{', '.join(f'{r:.2f}' for r in ratios)})"
        )
    if not kinds:
        return failures
    print(
        f"  medians: driver {statistics.median(rates['driver']):,.0f} req/s, old driver "
        f"{statistics.median(rates['old-driver']):,.0f}, aiohttp "
        f"{statistics.median(rates['aiohttp']):,.0f}; concurrency {args.concurrency}, "
        f"{args.n:,} requests a pass"
    )
    return failures


def _pin(server_pid: int | None, args: argparse.Namespace) -> None:
    """--pin: the server's processes on the first CPU this benchmark may use, the clients (and
    the driver processes they start) on the last."""
    import psutil

    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2 or server_pid is None:
        raise SystemExit("--pin needs 2 CPUs or more and a running server")
    server = psutil.Process(server_pid)
    for process in (server, *server.children(recursive=True)):
        process.cpu_affinity(usable[:1])
    args.client_cpu = usable[-1]
    print(f"# pinned: server on CPU {usable[0]}, clients on CPU {usable[-1]}")


def _cpu_reader(pid: int | None) -> Callable[[], float]:
    """CPU seconds of the server's processes so far (the figures' control)."""
    import psutil

    if pid is None:
        raise SystemExit("the embedded server has no process")
    server = psutil.Process(pid)
    processes = [server, *server.children(recursive=True)]

    def read() -> float:
        return sum(sum(process.cpu_times()[:2]) for process in processes)

    return read


def _pass(
    kind: str,
    url: str,
    dataset: Path,
    n: int,
    args: argparse.Namespace,
    bench: Path,
    old_tree: Path | None,
    concurrency: int | None = None,
    rate: float | None = None,
) -> dict:
    run_dir = bench / "passes" / f"{kind}-{time.monotonic_ns()}"
    env = dict(os.environ)
    if old_tree is not None:
        env["PYTHONPATH"] = str(old_tree)
    if getattr(args, "client_cpu", None) is not None:
        env[PIN_ENV] = str(args.client_cpu)
    if rate is not None:
        env[RATE_ENV] = str(rate)
    users = concurrency or args.concurrency
    command = [sys.executable, ONCE, kind, url, str(dataset), str(n), str(users)]
    done = subprocess.run(
        [*command, str(run_dir)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} pass failed:\n{done.stderr[-3000:]}")
    for kept in (run_dir, *run_dir.parent.glob(f"{run_dir.name}-*")):  # pair-K's: run_dir-I
        shutil.rmtree(kept, ignore_errors=True)  # a pass's results are not kept: GBs at 170K
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    expected = str(old_tree) if old_tree is not None else str(ROOT)
    if result["code"] != expected:
        raise SystemExit(f"{kind} ran the code at {result['code']}, not {expected}")
    return result


def _all_in(cpu: dict, fixed: dict, kind: str, n: int) -> list[float]:
    """CPU per request of a kind's passes with their fixed cost counted in."""
    return [per + start / n for per, start in zip(cpu[kind], fixed[kind], strict=True)]


def _ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def _scale_runs(bench: Path, root: Path, args: argparse.Namespace, old_tree: Path) -> list[str]:
    """Figures 4-5: whole `harness scale` runs with two OOM kills."""
    failures = []
    ratios = []
    for round_ in range(2):
        order = ["new", "old"] if round_ == 0 else ["old", "new"]
        walls = {}
        for which in order:
            tree = old_tree if which == "old" else None
            walls[which] = _scale(bench / f"baseline-{which}-{round_}", args.baseline_n, root, tree)
        ratios.append(walls["old"]["wall_s"] / walls["new"]["wall_s"])
        print(
            f"scale --n {args.baseline_n:,} --oom-at 30%,70%: old {walls['old']['wall_s']:.1f} s, "
            f"new {walls['new']['wall_s']:.1f} s end to end"
        )
    print(f"  old / new end-to-end time at {args.baseline_n:,}: {statistics.median(ratios):.2f}x")
    full = _scale(bench / f"e2e-{args.e2e_n}", args.e2e_n, root, None)
    goal = GOALS["e2e_s"] * args.e2e_n / 170_000
    ok = full["wall_s"] < goal and full["verified"]
    failures += [] if ok else ["170K end to end"]
    print(
        f"scale --n {args.e2e_n:,} --oom-at 30%,70%: {full['wall_s']:.1f} s end to end (goal < "
        f"{goal:.0f} s), driving {full['drive_s']:.1f} s = {full['rate']:,.0f} req/s, "
        f"{full['kills']} OOM kills, lost {full['lost']}, duplicated {full['duplicated']}"
    )
    small = _scale(bench / f"e2e-{args.small_n}", args.small_n, root, None)
    growth = (full["driver_rss"] - small["driver_rss"]) / MB
    ok = growth < GOALS["rss_mb"]
    failures += [] if ok else ["driver RSS growth"]
    print(
        f"driver RSS {args.small_n:,} -> {args.e2e_n:,}: {small['driver_rss'] / MB:.1f} -> "
        f"{full['driver_rss'] / MB:.1f} MB, growth {growth:+.1f} MB (goal < "
        f"{GOALS['rss_mb']:g} MB)"
    )
    return failures


def _scale(run_dir: Path, n: int, root: Path, old_tree: Path | None) -> dict:
    """One `harness scale` process with two OOM kills, of this tree or the old one."""
    env = dict(os.environ)
    if old_tree is not None:  # and run from there: `-m` puts the working directory first
        env["PYTHONPATH"] = str(old_tree)
    command = [
        sys.executable, "-m", "harness", "scale", "--n", str(n), "--oom-at", "30%,70%",
        "--run-dir", str(run_dir.resolve()), "--runs-root", str(root.resolve()), "--no-report",
    ]  # fmt: skip
    cwd = old_tree or ROOT
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    outcome, verification = manifest["outcome"], manifest["verification"]
    ran = Path(manifest["command"][0]).resolve().parents[1]  # .../harness/__main__.py
    if ran != Path(cwd).resolve():
        raise SystemExit(f"the scale run at {run_dir} ran the code at {ran}, not {cwd}")
    for name in os.listdir(run_dir):  # the results and attempts of 170K: GBs not worth keeping
        if name.startswith(("results", "requests")):
            (run_dir / name).unlink()
    return {
        "wall_s": wall,
        "drive_s": outcome["seconds"],
        "rate": n / outcome["seconds"],
        "verified": done.returncode == 0
        and verification["lost"] == verification["duplicated"] == 0,
        "lost": verification["lost"],
        "duplicated": verification["duplicated"],
        "kills": outcome["oom_kills"],
        "driver_rss": outcome["driver_peak_rss_bytes"],
    }


if __name__ == "__main__":
    sys.exit(main())
