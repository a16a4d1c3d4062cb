"""Benchmarks of `harness serve` (issue 3); every figure is a ratio measured in this same run.

1. throughput: zero-latency (--speed max) non-streaming chat vs a minimal aiohttp JSON echo
   server, driven by the same load generator; target >= 0.8x.
2. itl: mean inter-token latency at 200 concurrent streams vs the configured value; within 5%.
3. batch: a 170,000-request `harness gen --format openai-batch` file through the Batch API in
   zero-latency mode; target under 3 minutes, server RSS growth under 100 MB.

    .venv/bin/python benchmarks/bench_server.py [--only throughput,itl,batch] [--batch-n N]

The batch input is generated once into runs/bench-data/ and reused. Exit status 1 when a
figure misses its target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
MODEL = "llama3.1:8b"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="throughput,itl,batch")
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--itl-ms", type=float, default=50.0)
    parser.add_argument("--stream-tokens", type=int, default=100)
    parser.add_argument("--batch-n", type=int, default=170_000)
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        _run_echo_server(args.echo_server)
        return 0
    chosen = set(args.only.split(","))
    results = []
    if "throughput" in chosen:
        results.append(bench_throughput(args))
    if "itl" in chosen:
        results.append(bench_itl(args))
    if "batch" in chosen:
        results.append(bench_batch(args))
    print()
    for line, ok in results:
        print(("PASS " if ok else "FAIL ") + line)
    return 0 if all(ok for _, ok in results) else 1


# -- servers ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_echo_server(port: int) -> None:
    """The baseline: aiohttp answering each JSON body with itself."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", echo)
    app.router.add_get("/health/ready", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class _Server:
    """A server subprocess on a free loopback port, ready when /health/ready answers 200."""

    def __init__(self, command: list[str], port: int, scratch: str | None = None) -> None:
        self.scratch = scratch  # a data directory to delete when the server stops
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(command, cwd=ROOT, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{command} exited: {self.log.read().decode()}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{command} not ready in 60 s")
        self.ps = psutil.Process(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _harness(*server_args: str) -> _Server:
    port = _free_port()
    data = tempfile.mkdtemp(prefix="bench-serve-")
    command = [sys.executable, "-m", "harness", "serve", "--port", str(port), "--data-dir", data]
    return _Server([*command, *server_args], port, scratch=data)


def _echo() -> _Server:
    port = _free_port()
    return _Server([sys.executable, __file__, "--echo-server", str(port)], port)


# -- 1. throughput ---------------------------------------------------------------------------


def _request_bodies(n: int) -> list[bytes]:
    """Production-shaped chat requests: one job, n different candidates."""
    import generators

    job = generators.job(0)
    return [
        orjson.dumps(
            {
                "model": MODEL,
                "messages": generators.chat_messages(job, generators.candidate(i)),
                "max_tokens": 512,
            }
        )
        for i in range(n)
    ]


async def _drive(url: str, bodies: list[bytes], seconds: float, connections: int) -> int:
    """Requests completed in `seconds` by `connections` keep-alive clients (status 200 only)."""
    import aiohttp

    done = 0
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = time.perf_counter() + seconds

        async def client(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < stop:
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url} answered {r.status}")
                done += 1
                i += connections

        await asyncio.gather(*(client(k) for k in range(connections)))
    return done


def _measure(server: _Server, bodies: list[bytes], seconds: float, connections: int) -> dict:
    me = psutil.Process()
    server.ps.cpu_percent()
    me.cpu_percent()
    start = time.perf_counter()
    done = asyncio.run(_drive(server.url + "/v1/chat/completions", bodies, seconds, connections))
    wall = time.perf_counter() - start
    rps, server_cpu = done / wall, server.ps.cpu_percent()
    return {
        "rps": rps,
        "server_cpu": server_cpu,
        "cpu_us": server_cpu / 100 / rps * 1e6,  # server CPU time per request
        "client_cpu": me.cpu_percent(),
    }


def bench_throughput(args: argparse.Namespace) -> tuple[str, bool]:
    print("== throughput: zero-latency chat vs aiohttp JSON echo, same load generator")
    bodies = _request_bodies(512)
    echo, harness = _echo(), _harness("--speed", "max")
    try:
        for server in (echo, harness):  # warm up connections, caches and imports
            _measure(server, bodies, 1.0, args.connections)
        runs: dict[str, list[dict]] = {"echo": [], "harness": []}
        for _ in range(args.rounds):  # alternate, so background load hits both alike
            for name, server in (("echo", echo), ("harness", harness)):
                result = _measure(server, bodies, args.seconds, args.connections)
                runs[name].append(result)
                print(
                    f"  {name:8s} {result['rps']:8.0f} req/s"
                    f"  server cpu {result['server_cpu']:5.1f}%"
                    f" ({result['cpu_us']:5.1f} us/request)"
                    f"  load generator cpu {result['client_cpu']:5.1f}%"
                )
    finally:
        echo.stop()
        harness.stop()
    echo_rps = statistics.median(r["rps"] for r in runs["echo"])
    harness_rps = statistics.median(r["rps"] for r in runs["harness"])
    ratio = harness_rps / echo_rps
    busy = max(r["client_cpu"] for rs in runs.values() for r in rs)
    note = f" (load generator peaked at {busy:.0f}% CPU)" if busy > 90 else ""
    # When the load generator saturates, the echo rate is its ceiling: CPU per request says how
    # far apart the two servers really are.
    echo_us = statistics.median(r["cpu_us"] for r in runs["echo"])
    harness_us = statistics.median(r["cpu_us"] for r in runs["harness"])
    print(
        f"  server CPU per request: harness {harness_us:.1f} us, echo {echo_us:.1f} us "
        f"(echo/harness = {echo_us / harness_us:.2f}x)"
    )
    line = (
        f"throughput: harness {harness_rps:.0f} req/s / aiohttp echo {echo_rps:.0f} req/s "
        f"= {ratio:.2f}x (target >= 0.80x, {args.connections} connections, "
        f"{len(bodies[0]) // 1024} KB requests){note}"
    )
    return line, ratio >= 0.8


# -- 2. inter-token latency ------------------------------------------------------------------


async def _stream_gaps(url: str, streams: int, tokens: int) -> tuple[list[float], int]:
    """Gaps between content chunks after the first, over all streams; and failed streams."""
    import aiohttp

    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long answer about load testing."}],
        "max_tokens": tokens,
        "stream": True,
    }
    gaps: list[float] = []
    failed = 0
    connector = aiohttp.TCPConnector(limit=streams)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            nonlocal failed
            payload = {**body, "messages": [{"role": "user", "content": f"Question {i}: go on."}]}
            async with session.post(url, json=payload) as response:
                if response.status != 200:
                    failed += 1
                    return
                last = None
                async for line in response.content:
                    if not line.startswith(b"data: {"):
                        continue
                    now = time.perf_counter()
                    chunk = orjson.loads(line[6:])
                    choices = chunk.get("choices") or [{}]
                    if not choices[0].get("delta", {}).get("content"):
                        continue
                    if last is not None:
                        gaps.append(now - last)
                    last = now

        await asyncio.gather(*(one(i) for i in range(streams)))
    return gaps, failed


def bench_itl(args: argparse.Namespace) -> tuple[str, bool]:
    itl_s = args.itl_ms / 1000
    print(f"== itl: {args.streams} concurrent streams, configured ITL {args.itl_ms:g} ms")
    server = _harness(
        "--set", f"itl_s={itl_s}",
        "--set", "load_slowdown=0",  # so the configured ITL is the expected one at any load
        "--set", f"max_num_seqs={max(256, args.streams)}",
        "--set", "context_limit=32768",
    )  # fmt: skip
    me = psutil.Process()
    try:
        server.ps.cpu_percent()
        me.cpu_percent()
        gaps, failed = asyncio.run(
            _stream_gaps(server.url + "/v1/chat/completions", args.streams, args.stream_tokens)
        )
        server_cpu, client_cpu = server.ps.cpu_percent(), me.cpu_percent()
    finally:
        server.stop()
    mean = statistics.fmean(gaps)
    error = mean / itl_s - 1
    p99 = statistics.quantiles(gaps, n=100)[98]
    print(
        f"  {len(gaps)} gaps, mean {mean * 1000:.2f} ms, p99 {p99 * 1000:.1f} ms, "
        f"failed streams {failed}, server cpu {server_cpu:.0f}%, "
        f"load generator cpu {client_cpu:.0f}%"
    )
    line = (
        f"itl: mean {mean * 1000:.2f} ms vs configured {args.itl_ms:g} ms = {error:+.1%} "
        f"at {args.streams} concurrent streams (target within 5%)"
    )
    return line, abs(error) <= 0.05 and failed == 0


# -- 3. a 170K-request batch -----------------------------------------------------------------


def _batch_file(n: int) -> Path:
    path = ROOT / "runs" / "bench-data" / f"candidates-batch-{n}.openai-batch.jsonl"
    if path.exists():
        print(f"  reusing {path.relative_to(ROOT)}")
        return path
    print(f"  generating {n} requests with `harness gen` (once; kept in runs/bench-data/)")
    path.parent.mkdir(parents=True, exist_ok=True)
    command = ["-m", "harness", "gen", "--n", str(n), "--format", "openai-batch"]
    subprocess.run([sys.executable, *command, "--out", str(path)], cwd=ROOT, check=True)
    return path


class _RssWatch:
    """Peak RSS of a process, sampled every 0.2 s by the caller's polling loop."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.start = process.memory_info().rss
        self.peak = self.start

    def sample(self) -> None:
        self.peak = max(self.peak, self.process.memory_info().rss)


def _poll(watch: _RssWatch, until: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError("batch did not finish in time")
        watch.sample()
        time.sleep(0.2)
    watch.sample()


def bench_batch(args: argparse.Namespace) -> tuple[str, bool]:
    n = args.batch_n
    print(f"== batch: {n} requests through the Batch API, zero latency")
    path = _batch_file(n)
    server = _harness("--speed", "max")
    watch = _RssWatch(server.ps)
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            start = time.monotonic()
            with open(path, "rb") as handle:  # httpx streams the file part in chunks
                uploaded = client.post(
                    "/v1/files", files={"file": (path.name, handle)}, data={"purpose": "batch"}
                ).json()
            watch.sample()
            upload_s = time.monotonic() - start
            batch = client.post(
                "/v1/batches",
                json={
                    "input_file_id": uploaded["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            ).json()
            state = {"batch": batch}

            def finished() -> bool:
                state["batch"] = client.get(f"/v1/batches/{batch['id']}").json()
                return state["batch"]["status"] in ("completed", "failed", "cancelled", "expired")

            _poll(watch, finished, timeout=1800)
            total_s = time.monotonic() - start
            batch = state["batch"]
            ids, lines = _count_results(client, batch)
    finally:
        server.stop()
    growth_mb = (watch.peak - watch.start) / 1e6
    counts = batch["request_counts"]
    print(
        f"  upload {upload_s:.1f} s ({path.stat().st_size / 1e6 / upload_s:.0f} MB/s), "
        f"status {batch['status']}, counts {counts}, result lines {lines}, unique ids {ids}"
    )
    print(
        f"  server RSS at ready {watch.start / 1e6:.0f} MB, peak {watch.peak / 1e6:.0f} MB "
        f"(+{growth_mb:.1f} MB)"
    )
    exact = batch["status"] == "completed" and ids == lines == n
    line = (
        f"batch: {n} requests in {total_s:.1f} s (upload + validate + run; target < 180 s), "
        f"server RSS growth {growth_mb:.1f} MB (target < 100 MB), "
        f"{'every custom_id exactly once' if exact else 'RESULTS INCOMPLETE'}"
    )
    return line, exact and total_s < 180 and growth_mb < 100


def _count_results(client: httpx.Client, batch: dict) -> tuple[int, int]:
    """(unique custom_ids, lines) over the output and error files, streamed."""
    ids: set[str] = set()
    lines = 0
    for key in ("output_file_id", "error_file_id"):
        if not batch.get(key):
            continue
        with client.stream("GET", f"/v1/files/{batch[key]}/content") as response:
            for line in response.iter_lines():
                if line:
                    ids.add(orjson.loads(line)["custom_id"])
                    lines += 1
    return len(ids), lines


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
