"""The CI gate (.ci/gate.py) end to end: the baseline's commit and this tree, side by side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
GATE = ROOT / ".ci" / "gate.py"


def _head() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout: the gate needs the baseline's commit")
    return done.stdout.strip()


def _gate(tmp_path: Path, commit: str) -> subprocess.CompletedProcess[str]:
    baseline = orjson.loads((ROOT / "baselines" / "ci.json").read_bytes())
    baseline["source"]["git_commit"] = commit
    (tmp_path / "ci.json").write_bytes(orjson.dumps(baseline))
    command = [sys.executable, str(GATE), "--repeat", "2", "--n", "1500"]
    command += ["--run-dir", str(tmp_path / "ci"), "--baseline", str(tmp_path / "ci.json")]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_the_gate_runs_the_baselines_commit_beside_this_tree_and_judges_pairs(
    tmp_path: Path,
) -> None:
    commit = _head()
    done = _gate(tmp_path, commit)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    order = [line.split()[1] for line in done.stdout.splitlines() if "µs of CPU" in line]
    assert order == ["A", "B", "B", "A"]  # ABBA: neither side always first
    baseline = orjson.loads((tmp_path / "ci-baseline" / "baseline.json").read_bytes())
    assert baseline["paired"] is True and baseline["source"]["git_commit"] == commit
    assert len(baseline["samples"]["cost.cpu_s_per_request"]) == 2
    verdict = orjson.loads((tmp_path / "ci" / "compare.json").read_bytes())
    assert verdict["verdict"] == "pass" and verdict["runs"] == 2
    assert "alternated" in verdict["calibration"]["reason"]
    assert (tmp_path / "ci" / "r2" / "report.html").is_file()
    for run in ("r1", "r2"):  # the A side ran the commit's files, extracted elsewhere
        manifest = orjson.loads((tmp_path / "ci-baseline" / run / "manifest.json").read_bytes())
        assert not manifest["command"][0].startswith(str(ROOT))


def test_without_the_baselines_commit_the_gate_says_so_and_uses_the_committed_figures(
    tmp_path: Path,
) -> None:
    _head()
    done = _gate(tmp_path, "0" * 40)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "is not in this clone" in done.stdout
    assert not (tmp_path / "ci-baseline").exists()
    assert [line.split()[1] for line in done.stdout.splitlines() if "µs of CPU" in line] == [
        "B",
        "B",
    ]
    assert (tmp_path / "ci" / "compare.json").is_file()
