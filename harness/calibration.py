"""The loopback HTTP reference: how fast this machine, right now, runs a fixed HTTP exchange.

A scale run against the embedded server is bound by two busy Python processes talking HTTP over
loopback (the driver and the server), so its reference is the same shape of work with fixed code:
a small asyncio server process and a client process exchanging candidate-sized JSON requests
over keep-alive connections, each side parsing and serialising with orjson. It runs in its own
processes (with HARNESS_TEST_SLOWDOWN removed), so it measures the machine, never the code under
test. `harness compare` scales timing metrics by the ratio of two references' requests per CPU
second (docs/reports.md, "Calibration"): the machine's speed at this kind of work. Its requests
per wall second are kept too, but not divided by: on a shared machine they swing with whatever
else runs at that moment, which the run itself did not see. The earlier reference, the best of
five rounds of a single-threaded loop, over-corrected on busy machines for that reason.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

import orjson

from harness.slowdown import SLOWDOWN_ENV

# Bump when the workload changes: references of different workloads are not comparable.
WORKLOAD = "harness-loopback-http/2"
CONNECTIONS = 8

_SERVER = r"""
import asyncio, os, resource, sys
import orjson

ANSWER = {"id": "chatcmpl-ref", "object": "chat.completion", "model": "reference",
          "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
          "content": orjson.dumps({"score": 7, "reasons": ["python"] * 40}).decode()}}],
          "usage": {"prompt_tokens": 2000, "completion_tokens": 120, "total_tokens": 2120}}

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /cpu "):  # the client reads this side's CPU between rounds
                usage = resource.getrusage(resource.RUSAGE_SELF)
                body = b"%.6f" % (usage.ru_utime + usage.ru_stime)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                continue
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            request = orjson.loads(await reader.readexactly(length))
            words = sum(len(m["content"].split()) for m in request["messages"])
            body = orjson.dumps({**ANSWER, "usage": {**ANSWER["usage"], "prompt_tokens": words}})
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""

_CLIENT = r"""
import asyncio, resource, sys, time
import orjson

port, connections, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
seconds = float(sys.argv[3])
PROFILE = {"id": "cand-000042", "summary": "Built and operated batch inference platforms " * 60,
           "skills": [{"name": f"skill-{i}", "years": i % 12} for i in range(60)]}
BODY = orjson.dumps({"model": "reference", "max_tokens": 256, "messages": [
    {"role": "system", "content": "You evaluate candidates for a job. Answer in JSON."},
    {"role": "user", "content": orjson.dumps(PROFILE).decode()}]})
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
           b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY))

async def worker(deadline, counts):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.perf_counter() < deadline:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        answer = orjson.loads(await reader.readexactly(length))
        orjson.loads(answer["choices"][0]["message"]["content"])
        counts[0] += 1
    writer.close()

def cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

async def server_cpu_s():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /cpu HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    value = float(await reader.readexactly(length))
    writer.close()
    return value

async def main():
    rounds_out = []
    for _ in range(rounds):
        counts = [0]
        mine, theirs = cpu_s(), await server_cpu_s()
        began = time.perf_counter()
        await asyncio.gather(*(worker(began + seconds, counts) for _ in range(connections)))
        wall = time.perf_counter() - began
        cpu = cpu_s() - mine + await server_cpu_s() - theirs
        rounds_out.append({"requests": counts[0], "wall_s": wall, "cpu_s": cpu})
    print(orjson.dumps(rounds_out).decode())

asyncio.run(main())
"""


def measure(seconds: float = 1.0, *, rounds: int = 5) -> dict[str, Any]:
    """Requests per CPU second of the fixed loopback exchange (both processes' CPU, read between
    rounds), the speed `harness compare` divides by, and its requests per wall second: each the
    median of `rounds` equal rounds, with every round kept for compare's noise estimate."""
    if seconds <= 0 or rounds < 1:
        raise ValueError("the reference needs a positive number of seconds and rounds")
    env = {k: v for k, v in os.environ.items() if k != SLOWDOWN_ENV}
    env["PYTHONHASHSEED"] = "0"
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-I", "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        port = server.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError("the reference server did not start")
        client = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                _CLIENT,
                port,
                str(CONNECTIONS),
                str(seconds / rounds),
                str(rounds),
            ],
            capture_output=True,
            env=env,
            text=True,
            timeout=60 + 10 * seconds,
            check=True,
        )
        server.stdin.close()
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    rounds_out = orjson.loads(client.stdout)
    if any(r["requests"] < 1 or r["cpu_s"] <= 0 for r in rounds_out):
        raise RuntimeError("a round of the reference exchange completed no request")
    per_cpu = [r["requests"] / r["cpu_s"] for r in rounds_out]
    per_wall = [r["requests"] / r["wall_s"] for r in rounds_out]
    return {
        "workload": WORKLOAD,
        "requests_per_cpu_s": round(statistics.median(per_cpu), 1),
        "rounds_requests_per_cpu_s": [round(rate, 1) for rate in per_cpu],
        "requests_per_s": round(statistics.median(per_wall), 1),
        "rounds_requests_per_s": [round(rate, 1) for rate in per_wall],
        "connections": CONNECTIONS,
        "seconds": round(time.perf_counter() - started, 3),
        "python": platform.python_version(),
        "orjson": orjson.__version__,
    }
