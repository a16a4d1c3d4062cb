"""`harness scale` end to end: the real reference server, real SIGKILLs, exactly-once results."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from harness.driver.checkpoint import read_ids
from harness.net import free_port
from harness.rundir import read_jsonl
from harness.scale import ScaleConfig, run_ladder, run_scale

HARNESS = [sys.executable, "-m", "harness"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    """One dataset cache for the module: each size is generated once."""
    return str(tmp_path_factory.mktemp("datasets"))


def _config(tmp_path: Path, cache_dir: str, **settings) -> ScaleConfig:
    base = {
        "runs_root": str(tmp_path),
        "cache_dir": cache_dir,
        "report": False,
        "sample_interval": 0.2,
        "ready_timeout_s": 30.0,
    }
    return ScaleConfig(**{**base, **settings})


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == kind]


def _exactly_once(outcome, n: int) -> None:
    assert outcome.verification == {
        "expected": n,
        "received": n,
        "lost": 0,
        "duplicated": 0,
        "unexpected": 0,
        "failed": 0,
        "corrupt": 0,
    }
    ids = Counter(custom_id for custom_id, _ in read_ids(outcome.run_dir / "results.jsonl"))
    assert len(ids) == n and set(ids.values()) == {1}


def test_client_mode_survives_oom_kills_with_every_result_once(tmp_path, cache_dir):
    outcome = run_scale(
        _config(tmp_path, cache_dir, n=800, oom_at=(0.3, 0.7), concurrency=16, mode="client")
    )
    assert outcome.ok
    _exactly_once(outcome, 800)
    assert outcome.oom_kills == 2
    recovered = _events(outcome.run_dir, "recovered")
    assert len(recovered) == 2
    # Both timed; the supervisor's ready probe polls, so traffic may see "serving" a little first.
    assert all(r["seconds_to_first_success"] > 0 and r["seconds_to_ready"] > 0 for r in recovered)
    assert outcome.failures.get("connection", 0) >= 1  # in-flight requests died with the server
    assert _events(outcome.run_dir, "degraded")[0]["concurrency"] == 8
    retried = [r for r in read_jsonl(outcome.run_dir / "requests.jsonl") if r["attempt"] > 1]
    assert retried and all(r["ok"] for r in retried[-5:])
    manifest = orjson.loads((outcome.run_dir / "manifest.json").read_bytes())
    assert (
        manifest["verification"]["lost"] == 0 and manifest["calibration"]["requests_per_cpu_s"] > 0
    )
    assert manifest["dataset"]["n"] == 800 and len(manifest["dataset"]["sha256"]) == 64


def test_batch_api_mode_survives_an_oom_kill_with_every_result_once(tmp_path, cache_dir):
    outcome = run_scale(
        _config(tmp_path, cache_dir, n=1500, oom_at=(0.4,), chunk_size=500, mode="batch-api")
    )
    assert outcome.ok
    _exactly_once(outcome, 1500)
    assert outcome.oom_kills == 1
    submitted = _events(outcome.run_dir, "batch_submitted")
    assert {e["chunk"] for e in submitted} == {1, 2, 3}
    assert len(_events(outcome.run_dir, "recovered")) == 1


def test_the_driver_killed_mid_run_resumes_without_loss_or_repeat(tmp_path, cache_dir):
    port = free_port()
    server = subprocess.Popen(
        [*HARNESS, "serve", "--port", str(port), "--speed", "max", "--data-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    run_dir = tmp_path / "run"
    results = run_dir / "results.jsonl"
    try:
        _wait_for(lambda: _ready(url), "the reference server to be ready")
        args = ["--target", url, "--run-dir", str(run_dir), "--no-report", "--concurrency", "8"]
        common = ["--runs-root", str(tmp_path), "--cache-dir", cache_dir]
        driver = subprocess.Popen(
            [*HARNESS, "scale", "--n", "2500", *args, *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _wait_for(lambda: results.exists() and results.stat().st_size > 400_000, "some results")
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        before = sum(1 for _ in read_ids(results))
        assert 0 < before < 2500
        data = results.read_bytes()
        with results.open("ab") as torn:  # as if the kill had cut a line in half
            torn.write(b'{"custom_id":"cand-torn","ok":tr')
        torn_bytes = len(data) - (data.rfind(b"\n") + 1) + len(b'{"custom_id":"cand-torn","ok":tr')
        resumed = subprocess.run(
            [*HARNESS, "scale", "--resume", str(run_dir), "--target", url, "--no-report"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert resumed.returncode == 0, resumed.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    ids = Counter(custom_id for custom_id, _ in read_ids(results))
    assert len(ids) == 2500 and set(ids.values()) == {1}
    resume = _events(run_dir, "checkpoint")[-1]
    assert (resume["action"], resume["completed"]) == ("resume", before)
    assert resume["torn_bytes"] == torn_bytes
    assert f"{before:,} of 2,500 already done" in resumed.stderr
    verification = _events(run_dir, "verification")[-1]
    assert (verification["lost"], verification["duplicated"]) == (0, 0)


def test_a_sigkilled_scale_leaves_no_embedded_server_behind(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = ["--n", "2500", "--run-dir", str(run_dir), "--no-report", "--speed", "max"]
    driver = subprocess.Popen(
        [*HARNESS, "scale", *args, "--runs-root", str(tmp_path), "--cache-dir", cache_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = run_dir / "results.jsonl"
    _wait_for(lambda: results.exists() and results.stat().st_size > 0, "some results")
    server_pid = orjson.loads((run_dir / "target.json").read_bytes())["pid"]
    assert psutil.pid_exists(server_pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait(10)
    _wait_for(lambda: not _alive(server_pid), "the embedded server to die with its driver")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_ladder_fits_small_sizes_and_extrapolates(tmp_path, cache_dir):
    out = io.StringIO()
    document = run_ladder(
        [800, 200, 400],
        # a simulated delay, so each rung's time grows with its size, whatever the driver's speed
        _config(tmp_path, cache_dir, concurrency=8, speed=200.0, run_dir=str(tmp_path / "ladder")),
        target_n=170_000,
        out=out,
    )
    assert [r["n"] for r in document["rungs"]] == [200, 400, 800]
    assert all(r["ok"] and r["driver_peak_rss_bytes"] > 0 for r in document["rungs"])
    table = out.getvalue()
    assert "  170,000 " in table and "(extrapolated)" in table and "fit: time = " in table
    seconds = document["fits"]["seconds"]
    assert seconds["points"] == 3 and seconds["at_target"] > 0
    assert seconds["model"] == "linear" and seconds["formula"].startswith("time = ")
    assert seconds["loo_rmse"]["linear"] is not None
    low, high = seconds["interval"]
    assert low <= seconds["at_target"] <= high
    assert document["speed"] == "200.0" and "predicted at --speed 200: " in table
    assert orjson.loads((tmp_path / "ladder" / "ladder.json").read_bytes()) == document
    assert all((tmp_path / "ladder" / f"n{n}" / "results.jsonl").exists() for n in (200, 400, 800))


def test_a_non_loopback_target_is_refused_before_anything_runs(tmp_path):
    done = subprocess.run(
        [
            *HARNESS,
            "scale",
            "--n",
            "10",
            "--target",
            "http://10.0.0.1:8000",
            "--runs-root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "not a loopback" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())


def test_resume_of_a_directory_that_is_no_run_says_so(tmp_path):
    done = subprocess.run(
        [*HARNESS, "scale", "--resume", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "not a harness scale run directory" in done.stderr


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/health/ready", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
