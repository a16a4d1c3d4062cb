"""Reader figures: `harness validate` time as a ratio of `harness gen` time, and peak RSS; and
how soon `harness scale --dataset <batch document> --limit 2000` sends its first request.

Run: .venv/bin/python benchmarks/bench_readers.py [--n 170000] [--rounds 2] [--baseline REF]
Each round writes the batch document with `harness gen` (A) and validates it with
`harness validate` (B), alternating, so a drifting machine weighs on both alike. Prints each
round's ratio B/A, the median ratio, and the peak RSS of validate (target: ratio <= 3,
RSS <= 200 MB whatever N). Peak RSS is the child's VmHWM, polled every 5 ms.

Then, on the same document, `harness scale --dataset DOC --limit 2000` on the embedded server:
this tree's code and the code of git REF (default: the commit before the dataset hash left the
path to the first request), alternating which goes first. Time to first request = the first
`t` in requests.jsonl minus the moment the process was spawned (Python start-up included);
peak RSS = the scale process's own high-water mark (VmHWM, polled every 10 ms until it exits),
not its server's. Targets: first request within 2 s, peak RSS at most 300 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness"]
BASELINE_REF = "75bc431"  # sha256 of the whole file (and a full count) before the first request
LIMIT = 2000


def timed(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one child process; exits on its failure. The peak is
    its VmHWM, polled: wait4's ru_maxrss would carry this process's own RSS across the exec."""
    started = time.perf_counter()
    with subprocess.Popen(argv) as process:
        peak = 0
        while process.poll() is None:
            peak = max(peak, _vm_hwm(process.pid))
            time.sleep(0.005)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed")
    return seconds, peak


def first_request(code: Path, dataset: Path, run_dir: Path) -> tuple[float, int]:
    """(seconds from spawn to the first request sent, the scale process's peak RSS)."""
    argv = [*HARNESS, "scale", "--dataset", str(dataset), "--limit", str(LIMIT)]
    argv += ["--run-dir", str(run_dir), "--no-report"]
    spawned = time.time()
    env = {**os.environ, "PYTHONPATH": str(code)}
    with subprocess.Popen(argv, cwd=code, env=env, stderr=subprocess.DEVNULL) as process:
        peak = 0
        while process.poll() is None:  # VmHWM: the high-water mark of this process, not its server
            peak = max(peak, _vm_hwm(process.pid))
            time.sleep(0.01)
    if process.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed in {code} (exit {process.returncode})")
    with open(run_dir / "requests.jsonl", "rb") as requests:
        first_t = min(orjson.loads(line)["t"] for line in requests if line.strip())
    return first_t - spawned, peak


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def checkout(ref: str, into: Path) -> Path | None:
    """The files of git ref under into, or None when this clone does not have it."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=False
    )
    if archive.returncode != 0:
        return None
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=170_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", default=BASELINE_REF, metavar="REF", help="git ref")
    args = parser.parse_args()
    ratios, peaks = [], []
    firsts: dict[str, list[tuple[float, int]]] = {"current": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="bench-readers-") as tmp:
        path = Path(tmp) / f"candidates-batch-{args.n}.json"
        baseline = checkout(args.baseline, Path(tmp) / "baseline")
        if baseline is None:
            print(f"baseline {args.baseline}: not in this clone; measuring this tree alone")
        codes = {"current": ROOT, "baseline": baseline}
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
            order = ["current", "baseline"] if round_ % 2 else ["baseline", "current"]
            for name in order:
                if codes[name] is None:
                    continue
                run_dir = Path(tmp) / f"scale-{name}-{round_}"
                seconds, rss = first_request(codes[name], path, run_dir)
                firsts[name].append((seconds, rss))
                print(
                    f"round {round_}: scale --limit {LIMIT} ({name}): first request after "
                    f"{seconds:.2f} s, peak RSS {rss / 1e6:.0f} MB"
                )
    print(
        f"N={args.n:,}: validate/gen median ratio {statistics.median(ratios):.2f} (target <= 3), "
        f"peak RSS {max(peaks) / 1e6:.0f} MB (target <= 200)"
    )
    current = statistics.median(s for s, _ in firsts["current"])
    line = (
        f"scale --dataset (N={args.n:,}) --limit {LIMIT}: first request after {current:.2f} s "
        f"median (target <= 2), peak RSS {max(r for _, r in firsts['current']) / 1e6:.0f} MB "
        "(target <= 300)"
    )
    if firsts["baseline"]:
        before = statistics.median(s for s, _ in firsts["baseline"])
        line += (
            f"; {args.baseline}: {before:.2f} s, "
            f"{max(r for _, r in firsts['baseline']) / 1e6:.0f} MB "
            f"(first request {before / current:.1f}x sooner)"
        )
    print(line)


if __name__ == "__main__":
    main()
