"""`harness supervise` and `harness sample` as users run them: real processes, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.net import free_port
from harness.rundir import RunDir

from .helpers import alive, events, program, samples, wait_for

HARNESS = [sys.executable, "-m", "harness"]


def _ready_target(run_dir: Path) -> dict[str, Any]:
    target = RunDir(run_dir).read_json("target.json")
    return target if target and target["state"] == "ready" else {}


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Any]:
    """Start `harness supervise` on a health server with two children; kill leftovers at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(*extra: str, children: int = 2) -> tuple[subprocess.Popen[str], RunDir, list[int]]:
        port = free_port()
        command = [
            *HARNESS,
            "supervise",
            "--run-dir",
            str(tmp_path / "run"),
            "--health",
            f"http://127.0.0.1:{port}/health",
            "--interval",
            "0.1s",
            *extra,
            "--",
            *program("health_server.py", port, "--children", children),
        ]
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        started.append(process)
        target = wait_for(lambda: _ready_target(tmp_path / "run"), 20, "a ready target")
        tree = wait_for(
            lambda: len(_tree(target["pid"])) == children + 1 and _tree(target["pid"]),
            what="the target's tree",
        )
        return process, RunDir(tmp_path / "run"), tree

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _tree(pid: int) -> list[int]:
    try:
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_are_forwarded_and_leave_no_orphans(supervise: Any, sig: int) -> None:
    process, run_dir, tree = supervise()
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 128 + sig
    assert not [pid for pid in tree if alive(pid)], "orphans left behind"
    exited = events(run_dir, "exited")[-1]
    assert exited["cause"] == "stopped"
    assert f"target exited: stopped ({signal.Signals(sig).name}" in stderr
    assert samples(run_dir, "ram"), "the supervised run was sampled"
    manifest = run_dir.read_json("manifest.json")
    assert manifest is not None and manifest["end_time"] is not None


def test_a_killed_supervisor_takes_its_child_along(supervise: Any) -> None:
    process, _, tree = supervise(children=0)
    process.kill()  # SIGKILL: no handler runs; the kernel ends the child (PR_SET_PDEATHSIG)
    process.wait()
    wait_for(lambda: not alive(tree[0]), what="the child to die with its supervisor")


def test_memory_limit_exit_code_and_plain_words(tmp_path: Path) -> None:
    options = ["--memory-limit", "64M", "--max-restarts", "0", "--no-gpu", "--"]
    target = program("alloc.py", 16, 20, 0.05)
    result = subprocess.run(
        [*HARNESS, "supervise", "--run-dir", str(tmp_path), *options, *target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 137  # 128 + SIGKILL, as a shell or Docker reports an OOM kill
    assert "passed --memory-limit 64.0 MiB: killing it with SIGKILL" in result.stderr
    assert "harness: target exited: OOM kill (SIGKILL, exit -9): killed by SIGKILL" in result.stderr
    assert "raise the memory limit" in result.stderr and "reduce the workload" in result.stderr
    assert "allocated 16 MB" in (tmp_path / "target.log").read_text()


def test_supervise_without_a_command_is_a_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*HARNESS, "supervise", "--run-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("harness: error: no command to supervise; put it after --")


def test_sample_a_pid_and_a_match(tmp_path: Path) -> None:
    child = subprocess.Popen(program("alloc.py", 8, 4, 0.05, "--tag", "sample-cli-target"))
    try:
        for how in (["--pid", str(child.pid)], ["--match", "sample-cli-target"]):
            run = RunDir(tmp_path / how[0].strip("-"))
            options = ["--duration", "0.6s", "--interval", "0.1s", "--no-gpu"]
            result = subprocess.run(
                [*HARNESS, "sample", *how, "--run-dir", str(run.path), *options],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            rows = samples(run, "ram")
            assert len(rows) >= 3 and {row["pid"] for row in rows} == {child.pid}
            assert "peak target RSS" in result.stderr
    finally:
        child.kill()
        child.wait()


def test_secrets_in_the_command_never_reach_the_run_directory(tmp_path: Path) -> None:
    secrets = ["K-api-123", "T-admin-456", "H-hf-789", "S-secret-0"]
    run = tmp_path / "run"
    command = [
        *HARNESS,
        "supervise",
        "--run-dir",
        str(run),
        "--interval",
        "0.1s",
        "--",
        "env",
        f"HF_TOKEN={secrets[2]}",
        sys.executable,
        "-c",
        "import time; time.sleep(0.5)",
        "--api-key",
        secrets[0],
        f"--admin-token={secrets[1]}",
        "--db-password",
        secrets[3],
        "--port",
        "8000",
    ]
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"supervising {Path(sys.executable).name} in" in done.stderr  # the program, not `env`
    files = [path for path in run.rglob("*") if path.is_file()]
    assert {"target.json", "manifest.json", "events.jsonl", "target.log"} <= {
        path.name for path in files
    }
    for path in files:
        text = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in text, f"{secret} leaked into {path.name}"
    started = next(e for e in RunDir(run).events() if e["kind"] == "started")
    assert started["command"][-7:] == [
        "--api-key",
        "***",
        "--admin-token=***",
        "--db-password",
        "***",
        "--port",
        "8000",
    ]
    assert "HF_TOKEN=***" in started["command"]
