"""The CI scale-regression gate: this tree against the baseline's commit, on this machine, at once.

A CPU second or a request per second on a CI runner is not one on the machine that made the
baseline (measured: the same code at 409 µs of CPU per request on a CI runner, 285-300 on a
development machine), and the loopback reference is too noisy to correct a 10% threshold. So the
gate measures both sides here: the commit that made baselines/ci.json (`source.git_commit`,
extracted with `git archive`) and this tree, K runs each, alternating so that the runner's
drift falls on both (ABBA: neither side always first). The baseline commit's runs become a
paired baseline (with the committed file's thresholds) and `harness compare` judges this tree's
group against it on the 95% interval of the per-pair ratios.

Where that commit is not in the clone (a shallow checkout), the gate compares with the committed
figures instead and says so: make the clone whole (`fetch-depth: 0`) to get the A/B gate.

Run: .venv/bin/python .ci/gate.py [--repeat 8] [--run-dir runs/ci] [--baseline baselines/ci.json]
Exit status: 0 pass, 1 a regression, 2 the gate could not run. HARNESS_TEST_SLOWDOWN (the
gate's own check, benchmarks/bench_gate.py) reaches this tree's runs only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from harness.rundir import write_json_atomic
from reports import make_baseline, write_report, write_summary
from reports.repeat import write_repeat

ROOT = Path(__file__).resolve().parents[1]
SLOWDOWN = "HARNESS_TEST_SLOWDOWN"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=8, help="runs on each side (default 8)")
    parser.add_argument("--n", default="5k", help="candidates per run (default 5k)")
    parser.add_argument("--oom-at", default="50%", help="OOM kills per run (default 50%%)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/ci"), help="this tree's group")
    parser.add_argument("--baseline", type=Path, default=ROOT / "baselines" / "ci.json")
    args = parser.parse_args()
    committed = orjson.loads(args.baseline.read_bytes())
    commit = (committed.get("source") or {}).get("git_commit")
    group = args.run_dir.resolve()
    base_group = group.with_name(group.name + "-baseline")
    for path in (group, base_group):
        shutil.rmtree(path, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="harness-gate-"))
    try:
        tree = _extract(commit, work / "tree") if commit else None
        if tree is None:
            print(
                f"gate: the baseline's commit {commit or '(none recorded)'} is not in this clone; "
                f"comparing with the figures committed in {args.baseline}, made on another "
                "machine (fetch the whole history for the A/B gate)",
                flush=True,
            )
            _group(group, [_scale(group / f"r{i}", args, None, work) for i in _count(args)])
            return _compare(group, args.baseline)
        print(f"gate: this tree (B) against {commit[:12]} (A), {args.repeat} runs each, ABBA")
        ours, theirs = [], []
        for i in _count(args):  # ABBA: neither side always runs first
            pair = [(base_group, tree, theirs), (group, None, ours)]
            for parent, code, runs in pair if i % 2 else pair[::-1]:
                runs.append(_scale(parent / f"r{i}", args, code, work))
        summaries = _group(base_group, theirs, report=False)
        _group(group, ours)
        baseline = make_baseline(summaries, committed.get("thresholds") or {})
        baseline["source"] = {**baseline["source"], "git_commit": commit}
        baseline["paired"] = True  # run i of each side ran back to back: judge per pair
        write_json_atomic(base_group / "baseline.json", baseline)
        return _compare(group, base_group / "baseline.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _count(args: argparse.Namespace) -> range:
    return range(1, args.repeat + 1)


def _extract(commit: str, tree: Path) -> Path | None:
    """The commit's files (not its history) at `tree`, or None when the clone lacks it."""
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    if known.returncode != 0:
        return None
    tree.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", commit], cwd=ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"gate: git archive {commit} failed")
    return tree


def _scale(run_dir: Path, args: argparse.Namespace, tree: Path | None, work: Path) -> Path:
    """One `harness scale` run of this tree, or of the baseline's commit at `tree`."""
    env = dict(os.environ)
    side = "A" if tree is not None else "B"
    if tree is not None:  # run from there: `-m` puts the working directory first
        env.pop(SLOWDOWN, None)
        env["PYTHONPATH"] = str(tree)
    command = [
        sys.executable, "-m", "harness", "scale", "--n", args.n, "--oom-at", args.oom_at,
        "--run-dir", str(run_dir), "--cache-dir", str(work / f"datasets-{side}"),
        "--no-report",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tree or ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-2000:] + done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"gate: the {side} run {run_dir} failed (exit {done.returncode})")
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    ran = Path(manifest["command"][0]).resolve().parents[1]  # .../harness/__main__.py
    if ran != (tree or ROOT).resolve():
        raise SystemExit(f"gate: the {side} run {run_dir} ran the code at {ran}")
    cost = manifest.get("cost") or {}
    per_request = cost["cpu_s"] / cost["requests"] * 1e6 if cost.get("cpu_s") else float("nan")
    print(f"gate: {side} {run_dir.name}: {per_request:.0f} µs of CPU per request", flush=True)
    return run_dir


def _group(group: Path, runs: list[Path], *, report: bool = True) -> list[dict]:
    """The runs as a repeat group (repeat.json), summarised (and reported) by this tree."""
    summaries = [(write_report if report else write_summary)(run).summary for run in runs]
    write_repeat(group, runs, summaries)
    return summaries


def _compare(group: Path, baseline: Path) -> int:
    command = [sys.executable, "-m", "harness", "compare", str(group), "--baseline", str(baseline)]
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
