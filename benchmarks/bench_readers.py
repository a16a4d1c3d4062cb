"""Reader figures: `harness validate` time as a ratio of `harness gen` time, and peak RSS.

Run: .venv/bin/python benchmarks/bench_readers.py [--n 170000] [--rounds 2]
Each round writes the batch document with `harness gen` (A) and validates it with
`harness validate` (B), alternating, so a drifting machine weighs on both alike. Prints each
round's ratio B/A, the median ratio, and the peak RSS of validate (target: ratio <= 3,
RSS <= 200 MB whatever N). Peak RSS is the child's ru_maxrss, read with wait4.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HARNESS = [sys.executable, "-m", "harness"]


def timed(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one child process; exits on its failure."""
    started = time.perf_counter()
    pid = os.spawnv(os.P_NOWAIT, argv[0], argv)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed")
    return seconds, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=170_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ratios, peaks = [], []
    with tempfile.TemporaryDirectory(prefix="bench-readers-") as tmp:
        path = Path(tmp) / f"candidates-batch-{args.n}.json"
        for round_ in range(1, args.rounds + 1):
            path.unlink(missing_ok=True)
            gen_s, _ = timed([*HARNESS, "gen", "--n", str(args.n), "--out", str(path)])
            validate_s, peak = timed([*HARNESS, "validate", str(path)])
            ratios.append(validate_s / gen_s)
            peaks.append(peak)
            print(
                f"round {round_}: gen {gen_s:.1f} s, validate {validate_s:.1f} s "
                f"(ratio {validate_s / gen_s:.2f}), validate peak RSS {peak / 1e6:.0f} MB"
            )
    print(
        f"N={args.n:,}: validate/gen median ratio {statistics.median(ratios):.2f} (target <= 3), "
        f"peak RSS {max(peaks) / 1e6:.0f} MB (target <= 200)"
    )


if __name__ == "__main__":
    main()
