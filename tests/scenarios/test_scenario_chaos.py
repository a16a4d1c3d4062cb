"""OOMRecoveryUser against a supervised real-server tree: a `harness supervise` of the fake vLLM
(API server, engine, worker), Locust given --supervisor. The OOM is a SIGKILL of the process the
kernel would pick (the worker), the death is recorded by the supervisor and copied into Locust's
run, timed against its own requests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil
import pytest
from scenario_runs import ROOT, count, locust

from harness.net import free_port
from harness.rundir import read_jsonl

FAKE_VLLM = ROOT / "tests" / "supervision" / "programs" / "fake_vllm.py"
MODEL = "fake"
WORKER_MIB = 160  # far above the API server and the engine, as vLLM's worker


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == kind]


@dataclass
class Supervised:
    run_dir: Path
    leader: int
    worker: int  # the largest process of the tree, the OOM killer's pick


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    """`harness supervise` keeping the fake vLLM alive, once ready with its worker's memory held."""
    port = free_port()
    run_dir = tmp_path / "supervise"
    command = [sys.executable, "-m", "harness", "supervise", "--run-dir", str(run_dir)]
    command += ["--health", f"http://127.0.0.1:{port}/health", "--no-sample", "--"]
    command += [sys.executable, str(FAKE_VLLM), str(port), "--worker-mib", str(WORKER_MIB)]
    command += ["--model", MODEL]
    supervisor = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=None)
    try:
        deadline = time.monotonic() + 30
        while (found := _ready_tree(run_dir)) is None:
            assert supervisor.poll() is None, "harness supervise exited"
            assert time.monotonic() < deadline, "the fake vLLM was not ready"
            time.sleep(0.05)
        yield Supervised(run_dir, *found)
    finally:
        supervisor.terminate()
        supervisor.wait(30)


def _ready_tree(run_dir: Path) -> tuple[int, int] | None:
    """(leader, worker) once the target is ready and its worker holds its memory."""
    try:
        target = orjson.loads((run_dir / "target.json").read_bytes())
        tree = psutil.Process(target["pid"]).children(recursive=True)
        held = [p.pid for p in tree if p.memory_info().rss > WORKER_MIB << 20]
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    return (target["pid"], held[0]) if target.get("state") == "ready" and held else None


def test_the_chaos_user_kills_what_the_oom_killer_would_through_the_supervisor(
    supervised: Supervised, tmp_path: Path
) -> None:
    run = locust(
        tmp_path / "locust",
        "-u",
        "3",
        "-r",
        "3",
        "-t",
        "8s",
        "--model",
        MODEL,
        "--max-tokens",
        "4",
        "--supervisor",
        str(supervised.run_dir),
        "--chaos-every",
        "1.5s",
        "--chaos-max",
        "1",
        "ChatUser",
        "OOMRecoveryUser",
    )
    assert "Traceback" not in run.output, run.output[-3000:]

    # the supervisor's record: the worker, not the API server, killed as an injected OOM
    (fault,) = _events(supervised.run_dir, "fault_injected")
    assert fault["by"] == "OOMRecoveryUser" and fault["pid"] == supervised.leader
    assert fault["victim_pid"] == supervised.worker
    died = _events(supervised.run_dir, "exited")[0]
    assert died["cause"] == "oom_kill" and died["injected"] is True
    assert died["descendant_killed"] == f"pid {fault['victim_pid']}"
    assert "EngineDeadError" in died["engine_death_line"]

    # one incident, one record in Locust's run: copied, and timed against its own requests
    copied = [e for e in run.events("exited") if e.get("source") == "supervisor"]
    assert [e["cause"] for e in copied] == ["oom_kill"]
    (recovered,) = run.events("recovered")
    assert recovered["source"] == "locust"  # no second, client-side record of the same death
    assert recovered["pid"] == _events(supervised.run_dir, "started")[1]["pid"]
    assert 0 < recovered["seconds_to_up"] <= recovered["seconds_to_ready"]
    assert recovered["seconds_to_ready"] <= recovered["seconds_to_first_success"]
    death_t = recovered["death_t"]
    first_t = death_t + recovered["seconds_to_first_success"]
    failed = [r for r in run.requests() if not r["ok"] and death_t <= r["t_end"] <= first_t]
    assert recovered["requests_failed"] == len(failed)
    assert count(run, "RECOVERY", "to first success") == 1
    summary = orjson.loads((run.run_dir / "summary.json").read_bytes())
    assert (summary["recovery"]["incidents"], summary["recovery"]["unrecovered"]) == (1, 0)


def test_victim_needs_the_supervisor(tmp_path: Path) -> None:
    run = locust(tmp_path, "--victim", "leader", "-t", "1s", timeout=30)
    assert run.returncode == 2 and "give --supervisor too" in run.output
