"""Hostile clients against `harness serve` (issue 17); timing figures are measured in this run.

1. fuzz: a hypothesis fuzz of N requests (default 10,000); target 0 answers 5xx.
2. health: /health p99 while 1,000 idle sockets and one 64 MB header attempt are open,
   alternating with quiet rounds on the same server; target p99 under 100 ms.
3. throughput: zero-latency chat through the limited protocol (this tree) vs the code of
   --base (default HEAD~ of the server's first limits commit, extracted with git archive), in
   alternating rounds on the same machine; target >= 0.95x.

    .venv/bin/python benchmarks/bench_hostile.py [--only fuzz,health,throughput] [--fuzz-n N]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
sys.path.append(str(ROOT / "tests"))  # last: tests/generators must not hide the package

from bench_server import _free_port, _harness, _measure, _request_bodies, _Server  # noqa: E402

BASE = "1483014"  # main before the connection limits (the branch point of h1-server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="fuzz,health,throughput")
    parser.add_argument("--fuzz-n", type=int, default=10_000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--base", default=BASE, help="git revision of the throughput baseline")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    results = []
    if "fuzz" in chosen:
        results.append(bench_fuzz(args.fuzz_n))
    if "health" in chosen:
        results.append(bench_health(args.idle, args.rounds))
    if "throughput" in chosen:
        results.append(bench_throughput(args))
    print()
    for line, ok in results:
        print(("PASS " if ok else "FAIL ") + line)
    return 0 if all(ok for _, ok in results) else 1


def bench_fuzz(n: int) -> tuple[str, bool]:
    from hypothesis import HealthCheck, given, settings
    from server.fuzzing import requests

    server = _harness("--speed", "max")
    statuses: Counter[int] = Counter()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:

            @settings(
                max_examples=n,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(request=requests())
            def fuzz(request: tuple[str, str, bytes]) -> None:
                method, path, body = request
                statuses[client.request(method, path, content=body).status_code] += 1

            start = time.perf_counter()
            fuzz()
            wall = time.perf_counter() - start
        health = httpx.get(server.url + "/health").status_code
    finally:
        server.stop()
    total = sum(statuses.values())
    errors = sum(c for s, c in statuses.items() if s >= 500)
    by_status = ", ".join(f"{s}: {c}" for s, c in sorted(statuses.items()))
    print(f"fuzz: {total} requests in {wall:.1f} s ({by_status}); /health after: {health}")
    line = f"fuzz: {total} hypothesis requests, {errors} answered 5xx (target 0)"
    return line, errors == 0 and health == 200 and total >= n * 0.9


def _health_p99(url: str, n: int = 300) -> float:
    times = []
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            start = time.perf_counter()
            assert client.get(url + "/health").status_code == 200
            times.append(time.perf_counter() - start)
    return statistics.quantiles(times, n=100)[98] * 1000


def _attack(
    port: int, idle: int, stop: threading.Event
) -> tuple[list[socket.socket], threading.Thread]:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]

    def big_header() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
                chunk = b"a" * (1 << 20)
                for _ in range(64):
                    if stop.is_set():
                        break
                    sock.sendall(chunk)
            except OSError:
                pass  # answered 431 and closed, as it should
            stop.wait(30)

    thread = threading.Thread(target=big_header)
    thread.start()
    return socks, thread


def bench_health(idle: int, rounds: int) -> tuple[str, bool]:
    server = _harness("--speed", "max")
    quiet, attacked = [], []
    try:
        for _ in range(rounds):
            quiet.append(_health_p99(server.url))
            stop = threading.Event()
            socks, thread = _attack(server.port, idle, stop)
            try:
                attacked.append(_health_p99(server.url))
            finally:
                stop.set()
                thread.join()
                for sock in socks:
                    sock.close()
    finally:
        server.stop()
    print(f"health p99 quiet    (ms): {', '.join(f'{v:.1f}' for v in quiet)}")
    print(f"health p99 attacked (ms): {', '.join(f'{v:.1f}' for v in attacked)}")
    worst = max(attacked)
    ratio = statistics.median(attacked) / statistics.median(quiet)
    line = (
        f"health: p99 {worst:.1f} ms (worst of {rounds}) with {idle} idle sockets and a 64 MB "
        f"header open, {ratio:.2f}x quiet (target under 100 ms)"
    )
    return line, worst < 100


def _base_tree(revision: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="bench-hostile-base-"))
    archive = subprocess.run(
        ["git", "archive", revision, "harness", "generators"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def _harness_at(tree: Path) -> _Server:
    port = _free_port()
    data = tempfile.mkdtemp(prefix="bench-serve-")
    command = [sys.executable, "-c", "import sys; from harness.cli import main; sys.exit(main())"]
    command += ["serve", "--port", str(port), "--data-dir", data, "--speed", "max"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    server = _Server.__new__(_Server)
    server.scratch, server.port, server.url = data, port, f"http://127.0.0.1:{port}"
    server.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
    server.process = subprocess.Popen(command, cwd=tree, stderr=server.log, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(server.url + "/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    server.ps = psutil.Process(server.process.pid)
    return server


def bench_throughput(args: argparse.Namespace) -> tuple[str, bool]:
    bodies = _request_bodies(200)
    tree = _base_tree(args.base)
    new, old = _harness("--speed", "max"), _harness_at(tree)
    rows: dict[str, list[float]] = {"new": [], "base": []}
    cpu: dict[str, list[float]] = {"new": [], "base": []}
    try:
        for server in (new, old):  # warm-up
            _measure(server, bodies, 1.0, 32)
        for _ in range(args.rounds):
            for name, server in (("new", new), ("base", old)):
                measured = _measure(server, bodies, args.seconds, 32)
                rows[name].append(measured["rps"])
                cpu[name].append(measured["cpu_us"])
    finally:
        new.stop()
        old.stop()
    for name, values in rows.items():
        print(f"throughput {name:>4} (req/s): {', '.join(f'{v:.0f}' for v in values)}")
        print(f"server CPU {name:>4} (us/req): {', '.join(f'{v:.0f}' for v in cpu[name])}")
    ratio = statistics.median(rows["new"]) / statistics.median(rows["base"])
    cpu_ratio = statistics.median(cpu["new"]) / statistics.median(cpu["base"])
    line = (
        f"throughput: limited protocol {statistics.median(rows['new']):.0f} req/s vs "
        f"{args.base} {statistics.median(rows['base']):.0f} req/s = {ratio:.2f}x (target >= 0.95x),"
        f" server CPU per request {cpu_ratio:.2f}x"
    )
    return line, ratio >= 0.95


if __name__ == "__main__":
    sys.exit(main())
