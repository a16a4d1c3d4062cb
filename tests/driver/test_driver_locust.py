"""Locust's distributed path on the scale driver's core: `locust --processes 2` with real OOM kills.

The workers classify failures with the driver's causes, build requests.jsonl lines with the same
record, wait out a death with the driver's readiness rules (one poller per process, its events),
and each checks itself as a load generator with the driver's loop monitor.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import orjson

from harness.driver.errors import CAUSES
from harness.rundir import EventKind, read_jsonl, request_record

ROOT = Path(__file__).resolve().parents[2]
LOCUST_MASTER_PORT = 5557  # Locust's default --master-bind-port


def test_two_locust_processes_share_the_driver_core(tmp_path):
    command = [
        sys.executable, "-m", "locust", "-f", "scenarios/", "--headless", "--only-summary",
        "--run-dir", str(tmp_path), "--json-file", "stats",
        "--processes", "2", "--expect-workers", "2", "-u", "6", "-r", "6", "-t", "8s",
        "--max-tokens", "16", "--candidates", "40", "--server-args=--speed 10",
        "--chaos-every", "2s", "ChatUser", "OOMRecoveryUser",
    ]  # fmt: skip
    # Locust's fixed master port, taken: the master and its workers meet on a port of their own
    # (on 5557, two runs on one machine took each other's workers)
    squatter = socket.socket()
    with contextlib.suppress(OSError):  # taken already: the run must avoid it all the same
        squatter.bind(("127.0.0.1", LOCUST_MASTER_PORT))
        squatter.listen()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        squatter.close()
    output = done.stdout + done.stderr
    assert "Unknown User" not in output and "Traceback" not in output, output[-3000:]
    events = list(read_jsonl(tmp_path / "events.jsonl"))
    kills = [e for e in events if e["kind"] == EventKind.EXITED and e["cause"] == "oom_kill"]
    assert kills, output[-3000:]

    # one record: every line has the driver's keys, in its order, then Locust's own
    lines = list(read_jsonl(tmp_path / "requests.jsonl"))
    common = list(request_record(t=0, t_end=0, custom_id="", ok=True, status=200, error=None,
                                 latency_s=0, attempt=1))  # fmt: skip
    assert lines and all(list(line)[: len(common)] == common for line in lines)
    # one set of causes: what the kills did to requests in flight is the driver's `connection`
    errors = {line["error"] for line in lines if not line["ok"]}
    assert "connection" in errors and errors <= set(CAUSES)

    # one readiness rule: a death is confirmed on the health URL and waited out, then traffic
    # resumes; the events are the driver's
    down = [e for e in events if e["kind"] == EventKind.TARGET_DOWN]
    ready = [e for e in events if e["kind"] == EventKind.TARGET_READY]
    assert down and ready  # the reference server routes /health/ready: the rule's first pick
    assert all(e["health_url"].endswith("/health/ready") for e in down)
    last_ready = max(e["t"] for e in ready)
    assert any(line["ok"] and line["t"] > last_ready for line in lines)

    # one self-check: each worker judged itself as a load generator
    verdicts = [e for e in events if e["kind"] == EventKind.LOAD_GENERATOR]
    assert len({v["pid"] for v in verdicts}) == len(verdicts) == 2
    assert all(v["windows"] >= 4 and v["loop_lag_p99_s"] is not None for v in verdicts)
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["load_generator"]["processes"] == 2
