"""A failed command leaves no empty run directory behind: `harness scale` (bad dataset, dead
target, a --resume of nothing), `harness supervise` (a command that cannot start), `harness
sample` (a metrics URL it may not scrape); and never touches a directory that held something."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.net import free_port
from harness.rundir import RemovedOnFailure

HARNESS = [sys.executable, "-m", "harness"]


def _harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*HARNESS, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A working directory with a file that is no dataset and a real one of 20 requests."""
    (tmp_path / "bad.jsonl").write_text("this is not JSON\n")
    done = _harness("gen", "--n", "20", "--out", str(tmp_path / "ok.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path


def _left(root: Path) -> list[str]:
    """What a command left under root besides the inputs the fixture made."""
    return sorted(p.name for p in root.iterdir() if p.name not in ("bad.jsonl", "ok.json"))


def test_scale_failing_before_it_sends_leaves_no_run_directory(work: Path):
    dead = f"http://127.0.0.1:{free_port()}"
    for args, message in (
        (("--dataset", "bad.jsonl"), "not a dataset"),
        (("--dataset", "missing.json"), "does not exist"),
        (("--dataset", "ok.json", "--limit", "50"), "more than the 20 requests"),
        (("--dataset", "ok.json", "--target", dead), "nothing answers"),
        (("--n", "10", "--target", dead), "nothing answers"),
    ):
        done = _harness("scale", *args, "--no-report", "--cache-dir", str(work / "cache"), cwd=work)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        left = [name for name in _left(work) if name != "cache"]
        assert left in ([], ["runs"]), (args, left)
        assert not (work / "runs").exists() or not list((work / "runs").iterdir()), args


def test_a_given_run_directory_is_emptied_again_or_left_alone(work: Path):
    empty = work / "empty"
    empty.mkdir()
    done = _harness(
        "scale", "--dataset", "ok.json", "--limit", "50", "--run-dir", "empty", cwd=work
    )
    assert done.returncode == 2 and empty.is_dir() and not list(empty.iterdir())
    held = work / "held"
    held.mkdir()
    (held / "notes.txt").write_text("mine")
    dead = f"http://127.0.0.1:{free_port()}"
    done = _harness(
        "scale", "--dataset", "ok.json", "--target", dead, "--run-dir", "held", cwd=work
    )
    assert done.returncode == 2 and (held / "notes.txt").read_text() == "mine"


def test_a_resume_of_nothing_makes_nothing(work: Path):
    done = _harness("scale", "--resume", "no-such-run", cwd=work)
    assert done.returncode == 2 and "not a harness scale run directory" in done.stderr
    assert not (work / "no-such-run").exists()


def test_supervise_and_sample_that_cannot_start_leave_no_run_directory(work: Path):
    done = _harness("supervise", "--run-dir", "sup", "--", str(work / "no-such-program"), cwd=work)
    assert done.returncode == 2 and "cannot start" in done.stderr
    done = _harness(
        "sample",
        "--pid",
        str(os.getpid()),
        "--url",
        "http://10.0.0.1:8000/metrics",
        "--duration",
        "1",
        "--run-dir",
        "smp",
        cwd=work,
    )
    assert done.returncode == 2 and "loopback" in done.stderr
    assert _left(work) == []


def test_removed_on_failure_keeps_what_became_useful(tmp_path: Path):
    with pytest.raises(RuntimeError), RemovedOnFailure(tmp_path / "a") as guard:
        (tmp_path / "a").mkdir()
        raise RuntimeError("pre-check failed")
    assert not (tmp_path / "a").exists() and not guard.kept
    with pytest.raises(RuntimeError), RemovedOnFailure(tmp_path / "b") as guard:
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "results.jsonl").write_text("{}\n")
        guard.keep()
        raise RuntimeError("the target died mid-run")
    assert (tmp_path / "b" / "results.jsonl").exists()


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (lambda line: line[: len(line) // 2], "cut short"),
        (lambda line: b"[1, 2]", "not an object"),
        (lambda line: line.replace(b'"custom_id":"', b'"custom_id":7,"x":"', 1), "numeric id"),
        (lambda line: line[: line.index(b'"body":')] + b'"body":[]}', "body not an object"),
    ],
)
def test_scale_refuses_a_request_line_it_could_not_send_before_it_starts(work: Path, line, why):
    """Every line is read as the driver reads it before the run begins: one line that could not
    be sent is a one-line error naming it, not a traceback at the hour it is reached."""
    done = _harness("gen", "--n", "30", "--format", "openai-batch", "--out", "ok.jsonl", cwd=work)
    assert done.returncode == 0, done.stderr
    lines = (work / "ok.jsonl").read_bytes().splitlines()
    lines[20] = line(lines[20])
    (work / "bad-line.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    done = _harness(
        "scale", "--dataset", "bad-line.jsonl", "--no-report", "--run-dir", "run", cwd=work
    )
    assert done.returncode == 2, (why, done.stderr)
    error = done.stderr.strip().splitlines()[-1]
    assert "bad-line.jsonl" in error and "not an OpenAI Batch request" in error, (why, error)
    assert "line 21" in error or "request 21" in error, (why, error)
    assert not (work / "run").exists(), why


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("gen", "--n", "1e309"), 2, "not a whole number of candidates"),
        (("gen", "--n", "99999999999999999999"), 2, "is more than 1e+12"),
        (("scale", "--victim", "abc"), 2, "is not leader, largest or a pid"),
        (("serve", "--max-file-mb", "inf"), 2, "is not a finite number"),
        (("sweep", "--seed", "99999999999999999999"), 2, "out of range (64-bit)"),
        (("sweep", "--concurrency", "1,inf"), 2, "write the points as 1,2,4,8"),
        (("sweep", "--ram-budget", "99999999999999999999"), 2, "more than any machine holds"),
        (("sweep", "--n", "10", "--runs-root", "/dev/null"), 1, "Not a directory: /dev/null/"),
    ],
)
def test_option_values_out_of_range_are_one_line_errors(tmp_path: Path, args, code, fragment):
    """Values found by fuzzing the options (infinities, numbers past 64 bits, a parser's own
    error raised inside argparse, a runs root that is a file): one line, no traceback."""
    done = _harness(*args, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and fragment in lines[-1], (args, done.stderr)
    assert lines[-1].startswith("harness"), lines
