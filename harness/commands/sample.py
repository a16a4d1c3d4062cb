"""`harness sample`: record RAM/VRAM/metrics/disk of any running target into a run directory."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from harness.errors import UserError
from harness.rundir import MANIFEST, RemovedOnFailure, RunDir, new_run_id, read_jsonl, utc_iso
from harness.supervision.samplers import start_sampling
from harness.units import format_bytes, parse_duration, whole_number

_MATCH_RETRY_S = 1.0  # how often a vanished --match target is looked for again


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="sample a running target's RAM/VRAM, its /metrics and disk, standalone",
        description=(
            "Sample RAM (system, the target's process tree RSS/PSS, its cgroup), VRAM (NVML), a "
            "Prometheus /metrics URL and disk free into RUN_DIR/samples.jsonl until --duration "
            "or Ctrl-C. --match follows a restarted target by name."
        ),
        epilog="example: harness sample --match 'vllm serve' --url "
        "http://127.0.0.1:8000/metrics --run-dir runs/soak --duration 10m",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--pid", type=whole_number, help="the target's pid (its child processes count too)"
    )
    which.add_argument(
        "--match", metavar="NAME", help="the oldest process whose command line contains NAME"
    )
    parser.add_argument("--url", metavar="METRICS_URL", help="loopback Prometheus /metrics URL")
    parser.add_argument("--run-dir", help="run directory (default: runs/sample-<id>)")
    parser.add_argument("--duration", help="stop after this long (e.g. 10m); default: Ctrl-C")
    parser.add_argument("--interval", default="0.5s", help="sampling interval (0.5s; 0.1s works)")
    parser.add_argument("--no-gpu", action="store_true", help="do not sample VRAM")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    interval = parse_duration(args.interval, "--interval")
    duration = parse_duration(args.duration, "--duration") if args.duration else None
    if args.pid is not None and not psutil.pid_exists(args.pid):
        raise UserError(f"no process with pid {args.pid}; check it with `ps -p {args.pid}`")
    target = _Matcher(args.match) if args.match else None
    if target is not None and target() is None:
        print(f"harness: no process matches {args.match!r} yet; waiting for one", file=sys.stderr)
    path = Path(args.run_dir) if args.run_dir else Path("runs") / new_run_id("sample")
    with RemovedOnFailure(path) as guard:  # sampling that cannot start leaves no run directory
        run_dir = RunDir(path)
        if run_dir.read_json(MANIFEST) is None:
            run_dir.write_manifest(
                target_url=args.url, sampled={"pid": args.pid, "match": args.match}
            )
        pid: Any = target if target is not None else args.pid
        received: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            received.append(signum)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        print(
            f"harness: sampling every {interval:g} s into {run_dir.path / 'samples.jsonl'}; "
            + (f"for {duration:g} s" if duration else "Ctrl-C stops"),
            file=sys.stderr,
        )
        started = time.monotonic()
        loop = start_sampling(
            run_dir, interval=interval, pid=pid, metrics_url=args.url, gpu=not args.no_gpu
        )
        guard.keep()
        try:
            while not received:
                if duration is not None and time.monotonic() - started >= duration:
                    break
                if args.pid is not None and not psutil.pid_exists(args.pid):
                    print(f"harness: pid {args.pid} exited; sampling stopped", file=sys.stderr)
                    break
                time.sleep(0.1)
        finally:
            loop.stop()
            run_dir.update_manifest(end_time=utc_iso())
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        _summarise(run_dir, loop.stats())
        return 128 + received[0] if received else 0


class _Matcher:
    """Follows the oldest process whose command line contains `needle`, across restarts."""

    def __init__(self, needle: str) -> None:
        self.needle = needle
        self._process: psutil.Process | None = None
        self._searched = float("-inf")

    def __call__(self) -> int | None:
        if self._process is not None and self._process.is_running():
            return self._process.pid
        self._process = None
        if time.monotonic() - self._searched < _MATCH_RETRY_S:
            return None
        self._searched = time.monotonic()
        mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        found = []
        for process in psutil.process_iter(["pid", "cmdline", "create_time"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if self.needle in cmdline and process.info["pid"] not in mine:
                found.append(process)
        if found:
            self._process = min(found, key=lambda p: p.info["create_time"] or 0.0)
            return self._process.pid
        return None


def _summarise(run_dir: RunDir, stats: dict[str, Any]) -> None:
    peak = max(
        (s["rss_bytes"] for s in read_jsonl(run_dir.path / "samples.jsonl") if s.get("rss_bytes")),
        default=None,
    )
    late = stats["lateness_p99_s"]
    print(
        f"harness: {stats['ticks']} ticks ({stats['missed']} missed, p99 lateness "
        f"{late * 1000 if late is not None else 0:.1f} ms); peak target RSS "
        f"{format_bytes(peak)}; run directory {run_dir.path}",
        file=sys.stderr,
    )
