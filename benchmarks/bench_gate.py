"""The CI gate checked for both kinds of error: false alarms on unchanged code, misses on slow code.

Run: .venv/bin/python benchmarks/bench_gate.py [--trials 5] [--repeat 8] [--slowdown 0.25]

Runs the gate of `.ci/run` itself (.ci/gate.py: the baseline's commit and this tree, `--repeat`
runs of 5K candidates each, alternating, judged per pair) `--trials` times on the unchanged tree
(A) and `--trials` times with HARNESS_TEST_SLOWDOWN on this tree's runs (B: every process of the
run does that much more CPU work, harness/slowdown.py), alternating ABAB so that the machine's
drift falls on both. A false alarm is an A gate that exits 1; a miss is a B gate that exits 0.
Prints each gate's verdict, the figure that decided it (CPU per request, with its 95% interval
against the baseline), and the totals; exits 1 unless there were 0 false alarms and no miss.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
GATE = ROOT / ".ci" / "gate.py"
GATE_METRIC = "cost.cpu_s_per_request"


def gate(group: Path, repeat: int, slowdown: float | None) -> tuple[int, dict, float]:
    """One whole gate into `group`: its exit status, compare.json and seconds."""
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_TEST_SLOWDOWN"}
    if slowdown:
        env["HARNESS_TEST_SLOWDOWN"] = str(slowdown)
    started = time.perf_counter()
    command = [sys.executable, str(GATE), "--repeat", str(repeat), "--run-dir", str(group)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1) or not (group / "compare.json").exists():
        sys.exit(f"the gate failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.returncode, orjson.loads((group / "compare.json").read_bytes()), seconds


def _row(verdict: dict, name: str) -> dict:
    return next((row for row in verdict.get("metrics", []) if row["metric"] == name), {})


def _describe(verdict: dict) -> str:
    row = _row(verdict, GATE_METRIC)
    ci = row.get("ci95")
    interval = f" (95% {ci[0]:+.1%} to {ci[1]:+.1%})" if ci else ""
    change = row.get("change")
    text = f"{GATE_METRIC} {change:+.1%}{interval}" if change is not None else "no cost figure"
    others = [r for r in verdict.get("regressions", []) if r != GATE_METRIC]
    return text + (f"; also failed: {', '.join(others)}" if others else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=8, help="runs a side per gate, as .ci/run")
    parser.add_argument("--slowdown", type=float, default=0.25)
    parser.add_argument("--keep", metavar="DIR", help="keep the runs here")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-gate-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    gates: list[tuple[str, int, dict, float]] = []
    for trial in range(args.trials):
        for label, slowdown in (("A unchanged", None), (f"B +{args.slowdown:.0%}", args.slowdown)):
            code, verdict, seconds = gate(
                root / f"gate-{trial + 1}-{label[0]}", args.repeat, slowdown
            )
            gates.append((label, code, verdict, seconds))
            outcome = "REGRESSION (exit 1)" if code else "pass (exit 0)"
            print(
                f"  gate {trial + 1} {label}: {outcome}: {_describe(verdict)}; "
                f"{seconds:.0f} s for {args.repeat} runs a side",
                flush=True,
            )
    false_alarms = sum(1 for label, code, _, _ in gates if label.startswith("A") and code)
    caught = sum(1 for label, code, _, _ in gates if label.startswith("B") and code)
    per_gate = sum(seconds for *_, seconds in gates) / len(gates)
    print(
        f"false alarms: {false_alarms} of {args.trials} unchanged gates; caught: {caught} of "
        f"{args.trials} gates slowed by {args.slowdown:.0%}; a gate took {per_gate:.0f} s; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if false_alarms == 0 and caught == args.trials else 1)


if __name__ == "__main__":
    main()
