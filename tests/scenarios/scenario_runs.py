"""Real headless Locust runs of scenarios/ as subprocesses, and what the tests read of them."""

from __future__ import annotations

import contextlib
import csv
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from harness.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
# Short answers from a 10x faster simulated GPU: many requests in a few seconds.
FAST = ["--max-tokens", "16", "--candidates", "40", "--server-args=--speed 10"]
HTTP = {"GET", "POST"}


@dataclass
class Run:
    returncode: int
    output: str
    run_dir: Path

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """Locust's CSV: a snapshot it rewrites every second, so it may miss the last requests."""
        with open(self.run_dir / "stats_stats.csv", newline="") as handle:
            return {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}

    def final(self) -> dict[tuple[str, str], dict]:
        """Locust's final stats (--json-file), written as it exits."""
        entries = orjson.loads((self.run_dir / "stats.json").read_bytes())
        return {(e["method"], e["name"]): e for e in entries}

    def requests(self) -> list[dict]:
        return list(read_jsonl(self.run_dir / "requests.jsonl"))

    def events(self, kind: str) -> list[dict]:
        return [e for e in read_jsonl(self.run_dir / "events.jsonl") if e["kind"] == kind]

    def sample_sources(self) -> set[str]:
        return {s["source"] for s in read_jsonl(self.run_dir / "samples.jsonl")}


def locust(
    run_dir: Path, *args: str, timeout: float = 60.0, locustfiles: str = "scenarios/"
) -> Run:
    command = [sys.executable, "-m", "locust", "-f", locustfiles, "--headless", "--only-summary"]
    command += ["--run-dir", str(run_dir), "--csv", "stats", "--json-file", "stats", *args]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Run(done.returncode, done.stdout + done.stderr, run_dir)


def count(run: Run, kind: str, name: str) -> int:
    return run.final()[(kind, name)]["num_requests"]


def http_requests(run: Run) -> int:
    return sum(e["num_requests"] for (kind, _), e in run.final().items() if kind in HTTP)


@contextlib.contextmanager
def serving(command: list[str], ready_url: str, timeout: float = 30.0) -> Iterator[str]:
    """A server process for the length of a test, once ready_url answers 200."""
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(ready_url, timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, f"{command[:3]} exited"
            assert time.monotonic() < deadline, f"{ready_url} not ready"
            time.sleep(0.05)
        yield ready_url
    finally:
        server.terminate()
        server.wait(10)
