"""Batch API mode: retryable failures in a batch and batches the server forgot are sent again."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from harness.driver.batch_api import BatchApiDriver, BatchConfig
from harness.driver.checkpoint import Checkpoint, IdSet, read_ids, verify
from harness.driver.dataset import generated
from harness.net import free_port
from harness.rundir import RunDir, read_jsonl
from harness.scale import ScaleConfig, run_scale


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == kind]


def test_cuda_oom_errors_inside_a_batch_are_sent_again_and_written_once(tmp_path):
    outcome = run_scale(
        ScaleConfig(
            n=600,
            mode="batch-api",
            chunk_size=300,
            oom_at=(0.5,),
            server_args=("--oom", "error"),  # in-flight requests fail with CUDA OOM; no death
            speed=50.0,  # slow enough that requests are in flight when the OOM hits
            runs_root=str(tmp_path),
            report=False,
            sample_interval=0.2,
        )
    )
    assert outcome.ok and outcome.oom_kills == 0
    assert outcome.verification["lost"] == outcome.verification["duplicated"] == 0
    assert outcome.failures["oom_error"] >= 1
    resubmitted = _events(outcome.run_dir, "batch_resubmit")
    assert resubmitted and sum(e["missing"] for e in resubmitted) == outcome.failures["oom_error"]
    attempts = list(read_jsonl(outcome.run_dir / "requests.jsonl"))
    failed_once = {a["id"] for a in attempts if a["error"] == "oom_error"}
    assert failed_once and all(
        a["ok"] and a["attempt"] == 2 for a in attempts if a["id"] in failed_once and a["ok"]
    )
    assert _events(outcome.run_dir, "degraded")[0]["chunk_size"] < 300  # smaller batches after


def test_a_batch_the_restarted_server_forgot_is_sent_again(tmp_path):
    """A server without persistence: killed, its state wiped, restarted on the same port."""
    dataset, _ = generated(300, 0, tmp_path / "datasets")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start(data_dir: Path) -> subprocess.Popen:
        command = [sys.executable, "-m", "harness", "serve", "--port", str(port)]
        command += ["--speed", "50", "--data-dir", str(data_dir)]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    server = start(tmp_path / "state-1")
    run_dir = RunDir(tmp_path / "run")
    checkpoint = Checkpoint(run_dir.path)
    config = BatchConfig(url=url, chunk_size=300, health_url=url + "/health/ready")
    driver = BatchApiDriver(config, run_dir, checkpoint)

    async def chaos() -> None:
        nonlocal server
        await _until(lambda: _events(run_dir.path, "batch_submitted"))
        await _until(lambda: _completed(url, _events(run_dir.path, "batch_submitted")[0]) > 20)
        server.send_signal(signal.SIGKILL)
        await asyncio.to_thread(server.wait, 10)
        shutil.rmtree(tmp_path / "state-1")  # the batch dies with the process
        server = start(tmp_path / "state-2")

    async def both() -> None:
        await _until(lambda: _ready(url))
        await asyncio.gather(driver.run(dataset.path, 300, IdSet()), chaos())

    try:
        asyncio.run(both())
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    checkpoint.close()
    lost = _events(run_dir.path, "batch_lost")
    assert len(lost) == 1
    rounds = [e["round"] for e in _events(run_dir.path, "batch_submitted")]
    assert rounds == [1, 2]
    assert driver.stats.failures["connection"] >= 1
    report = verify((f"cand-{i:07d}" for i in range(300)), run_dir.path / "results.jsonl")
    assert (report["received"], report["lost"], report["duplicated"]) == (300, 0, 0)
    ids = Counter(custom_id for custom_id, _ in read_ids(run_dir.path / "results.jsonl"))
    assert set(ids.values()) == {1}


def _completed(url: str, submitted: dict) -> int:
    response = httpx.get(f"{url}/v1/batches/{submitted['batch_id']}", timeout=2.0)
    return response.json()["request_counts"]["completed"]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/health/ready", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


async def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
