"""Learn/`gen --like` figures, all measured in one run.

Run: .venv/bin/python benchmarks/bench_learn.py [--n 20000] [--workers 2] [--rounds 3]
- learn time for a 5,000-record sample (target <= 10 s);
- `gen --like` rate against `harness gen` on the built-in schema, rounds alternating A and B,
  the sample being built-in records so that both write records of the same mean size (>= 0.5x),
  at N and at 4N (where process start-up and pools weigh less), per round;
- peak RSS of `gen --like` at N and 4N (flat, <= 200 MB);
- bytes per record, mean and std, against the sample's (within 10%);
- share of generated records that validate against `learn --emit-schema`'s schema (100%).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]


def harness(*args: str) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the process tree) of one `harness` run."""
    started = time.perf_counter()
    process = psutil.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, max(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.05)
    if process.returncode:
        raise SystemExit(f"harness {' '.join(args)} failed: {process.stderr.read().decode()}")
    return time.perf_counter() - started, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as tmp:
        work = Path(tmp)
        sample = work / "sample.jsonl"
        harness("gen", "--n", "5000", "--seed", "11", "--format", "jsonl", "--out", str(sample))
        learn_s, _ = harness(
            "learn",
            str(sample),
            "--out",
            str(work / "p.json"),
            "--emit-schema",
            str(work / "s.json"),
        )
        print(f"learn 5,000 records: {learn_s:.1f} s wall (process start included; target <= 10 s)")
        peaks = {}
        for n in (args.n, 4 * args.n):
            ratios, peaks[n] = _rounds(work, n, args), None
            print(
                f"N={n:,}: gen --like / harness gen, per round: "
                + ", ".join(f"{r:.2f}" for r in ratios[0])
                + f"; median {statistics.median(ratios[0]):.2f} (target >= 0.5; "
                f"{args.workers} workers, wall incl. start; rates {ratios[1]})"
            )
            peaks[n] = ratios[2]
        print(
            f"peak RSS (largest process): N={args.n:,} {peaks[args.n] / 2**20:.0f} MB, "
            f"N={4 * args.n:,} {peaks[4 * args.n] / 2**20:.0f} MB (target flat, <= 200 MB)"
        )
        sizes = [len(line) for line in (work / "big.jsonl").read_bytes().splitlines()]
        sample_sizes = [
            len(orjson.dumps(orjson.loads(x))) for x in sample.read_bytes().splitlines()
        ]
        for name, f in (("mean", statistics.fmean), ("std", statistics.pstdev)):
            a, b = f(sizes), f(sample_sizes)
            print(
                f"bytes/record {name}: generated {a:,.0f} vs sample {b:,.0f} ({a / b - 1:+.1%};"
                " target within 10%)"
            )
        validator = jsonschema.Draft202012Validator(orjson.loads((work / "s.json").read_bytes()))
        checked = [orjson.loads(x) for x in (work / "big.jsonl").read_bytes().splitlines()[:3000]]
        valid = sum(validator.is_valid(r) for r in checked)
        print(
            f"schema: {valid:,} of {len(checked):,} generated records validate "
            f"({valid / len(checked):.1%})"
        )


def _rounds(work: Path, n: int, args: argparse.Namespace) -> tuple[list[float], str, int]:
    """Alternating rounds at n: each round's like/base rate ratio, the median rates, and the
    peak RSS of --like; the last --like output is kept as big.jsonl for the size checks."""
    common = ("--n", str(n), "--workers", str(args.workers), "--format", "jsonl")
    rates: dict[str, list[float]] = {"like": [], "base": []}
    peak = 0
    for r in range(args.rounds):
        for which in ("base", "like") if r % 2 == 0 else ("like", "base"):
            out = work / ("big.jsonl" if which == "like" else "base.jsonl")
            extra = ("--like", str(work / "p.json")) if which == "like" else ()
            seconds, used = harness("gen", *common, *extra, "--out", str(out))
            rates[which].append(n / seconds)
            if which == "like":
                peak = max(peak, used)
    (work / "base.jsonl").unlink()
    ratios = [a / b for a, b in zip(rates["like"], rates["base"], strict=True)]
    medians = (
        f"{statistics.median(rates['like']):,.0f} vs {statistics.median(rates['base']):,.0f}/s"
    )
    return ratios, medians, peak


if __name__ == "__main__":
    main()
