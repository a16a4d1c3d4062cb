"""`harness report` on a 13-hour run: 100K samples per source (ram, vram, server, disk, load) and
100K requests must report in under 10 s.

Baselines measured in the same run: reading every line of the run's files (the floor any reporter
pays), the memory figure with every sample drawn instead of min/max-downsampled, and the same
report on a run 10x shorter (how time and memory grow with N).

    .venv/bin/python benchmarks/bench_report.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reports"))

from synthetic_run import write_synthetic_run  # noqa: E402

from harness.rundir import read_jsonl  # noqa: E402
from reports import load_run, plots  # noqa: E402

INTERVAL_S = 0.5
TARGET_S = 10.0
# Peak RSS of the child from /proc (VmHWM): Linux carries ru_maxrss across exec from the parent.
_CHILD = (
    "import sys; from reports import write_report; write_report(sys.argv[1]); "
    "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
)


def _timed(action):
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def _write_run(path: Path, samples: int) -> None:
    duration = samples * INTERVAL_S
    write_synthetic_run(
        path,
        duration_s=duration,
        interval_s=INTERVAL_S,
        requests_per_s=samples / duration,
        leak_mb_per_h=4,
        kills_at=(0.25, 0.5, 0.75),
        spike_at=0.6,
        gpu=True,
        disk=True,
    )


def _report_in_child(path: Path) -> tuple[float, float]:
    """A report as `harness report` makes it, in a fresh process: seconds (imports included) and
    peak RSS in MiB."""
    command = [sys.executable, "-c", _CHILD, str(path)]
    seconds, done = _timed(
        lambda: subprocess.run(command, capture_output=True, text=True, check=True)
    )
    return seconds, int(done.stdout.split()[-1]) / 1024


def _memory_png(run, max_points: int) -> bytes:
    """The memory figure with at most max_points per line (huge: every sample drawn as it is)."""
    kept, plots.MAX_POINTS = plots.MAX_POINTS, max_points
    try:
        return plots.png_bytes(plots.memory_figure(run, 50_000))
    finally:
        plots.MAX_POINTS = kept


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "run-1h", Path(tmp) / "run-13h"
        _write_run(small, 10_000)
        _write_run(large, 100_000)
        size_mb = sum(f.stat().st_size for f in large.iterdir()) / 1e6
        print(
            f"13.9 h run at {INTERVAL_S} s: 100,000 samples per source x 5 sources + 100,000 "
            f"requests, {size_mb:.0f} MB on disk"
        )

        names = ("samples.jsonl", "requests.jsonl")
        read_s, _ = _timed(lambda: sum(1 for n in names for _ in read_jsonl(large / n)))
        small_s, small_mib = _report_in_child(small)
        large_s, large_mib = _report_in_child(large)
        run = load_run(large)
        figure_s, figure_png = _timed(lambda: _memory_png(run, plots.MAX_POINTS))
        raw_s, raw_png = _timed(lambda: _memory_png(run, 10**9))

        verdict = "PASS" if large_s < TARGET_S else "FAIL"
        print(
            f"harness report, 100K per source (fresh process): {large_s:.2f} s, peak RSS "
            f"{large_mib:.0f} MiB  [target < {TARGET_S:.0f} s: {verdict}]"
        )
        print(
            f"harness report, 10K per source (fresh process):  {small_s:.2f} s, peak RSS "
            f"{small_mib:.0f} MiB  (10x the samples: {large_s / small_s:.1f}x the time, "
            f"{large_mib / small_mib:.1f}x the memory)"
        )
        print(
            f"baseline, only reading every line (100K run):    {read_s:.2f} s  "
            f"(report / read = {large_s / read_s:.1f}x)"
        )
        print(
            f"memory figure, min/max downsampled:              {figure_s:.2f} s, "
            f"PNG {len(figure_png) / 1e3:.0f} kB"
        )
        print(
            f"memory figure, every sample drawn (baseline):    {raw_s:.2f} s, "
            f"PNG {len(raw_png) / 1e3:.0f} kB  (raw / downsampled = {raw_s / figure_s:.2f}x)"
        )
        if large_s >= TARGET_S:
            sys.exit(1)


if __name__ == "__main__":
    main()
