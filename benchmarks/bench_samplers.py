"""Sampler overhead and schedule jitter at a 0.1 s interval with a 5-process target tree.

Figures (issue 4): overhead at most 1% of one core; p99 lateness at most 10 ms on an idle machine.
Baseline, measured in the same run: a naive sampler doing the same work the obvious way (rescan the
whole process table and read PSS of every process on every tick), on the same schedule.

    .venv/bin/python benchmarks/bench_samplers.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

from harness.rundir import RunDir
from harness.supervision.samplers import DiskSampler, RamSampler, SamplerLoop, Tick

_TREE = (
    "import subprocess, sys, time\n"
    "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
    " for _ in range(4)]\n"
    "print('up', flush=True)\n"
    "time.sleep(600)\n"
)


class _NaiveRam:
    """The obvious implementation: full process-table scan and PSS of every member, every tick."""

    source = "ram"

    def read(self, tick: Tick) -> list[dict[str, Any]]:
        system = psutil.virtual_memory()
        root = psutil.Process(tick.pid)
        members = [root, *root.children(recursive=True)]
        full = [p.memory_full_info() for p in members]
        return [
            {
                "system_used_bytes": system.total - system.available,
                "rss_bytes": sum(m.rss for m in full),
                "pss_bytes": sum(m.pss for m in full),
                "nprocs": len(members),
            }
        ]


def _measure(samplers: list[Any], pid: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir(tmp)
        loop = SamplerLoop(run_dir, samplers, interval=0.1, pid=lambda: pid).start()
        time.sleep(seconds)
        loop.stop()
        run_dir.close()
        return loop.stats()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    tree = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE)
    try:
        assert tree.stdout is not None and tree.stdout.readline().strip() == b"up"
        nprocs = 1 + len(psutil.Process(tree.pid).children(recursive=True))
        ours = _measure(
            [RamSampler(pss_interval_s=1.0), DiskSampler(tempfile.gettempdir())],
            tree.pid,
            args.seconds,
        )
        naive = _measure([_NaiveRam()], tree.pid, args.seconds)
    finally:
        for child in psutil.Process(tree.pid).children(recursive=True):
            child.kill()
        tree.kill()
        tree.wait()
    load = os.getloadavg()[0]
    print(
        f"sampler overhead at 0.1 s, {nprocs}-process tree, {args.seconds:g} s per variant "
        f"(load average {load:.2f} on {os.cpu_count()} cores; jitter goal is for an idle machine)"
    )
    for name, stats in (("harness (ram+disk)", ours), ("naive baseline", naive)):
        print(
            f"  {name:20s} cpu {stats['cpu_percent_of_core']:.3f}% of one core, "
            f"p50 lateness {stats['lateness_p50_s'] * 1e3:.2f} ms, "
            f"p99 {stats['lateness_p99_s'] * 1e3:.2f} ms, "
            f"max {stats['lateness_max_s'] * 1e3:.2f} ms, "
            f"ticks {stats['ticks']}, missed {stats['missed']}"
        )
    ratio = naive["cpu_seconds"] / ours["cpu_seconds"] if ours["cpu_seconds"] else float("inf")
    print(f"  naive / harness CPU ratio: {ratio:.1f}x")
    print(
        f"  goal: <= 1% of a core -> {'met' if ours['cpu_percent_of_core'] <= 1.0 else 'MISSED'}; "
        f"p99 lateness <= 10 ms -> {'met' if ours['lateness_p99_s'] <= 0.010 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
