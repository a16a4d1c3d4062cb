"""`harness scale` against a server it does not own: `--serve -- COMMAND` under its supervisor,
`--target` with `--supervisor RUN_DIR` of a separate `harness supervise`, the probe's model and
context. The server is a real `harness serve` process used as a user's server would be: no admin
token, so every OOM is a real SIGKILL from the supervisor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness.errors import UserError
from harness.net import free_port
from harness.rundir import read_jsonl
from harness.scale import ScaleConfig, run_scale

HARNESS = [sys.executable, "-m", "harness"]


@pytest.fixture(autouse=True)
def _no_admin_token(monkeypatch):
    monkeypatch.delenv("HARNESS_ADMIN_TOKEN", raising=False)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("datasets"))


def _config(tmp_path: Path, cache_dir: str, **settings) -> ScaleConfig:
    base = {
        "runs_root": str(tmp_path),
        "cache_dir": cache_dir,
        "report": False,
        "sample_interval": 0.2,
        "ready_timeout_s": 30.0,
        "concurrency": 8,
    }
    return ScaleConfig(**{**base, **settings})


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == kind]


def _serve(port: int, *args: str) -> tuple[str, ...]:
    return (*HARNESS, "serve", "--port", str(port), "--speed", "max", *args)


def test_serve_supervises_the_command_and_two_sigkills_lose_nothing(tmp_path, cache_dir):
    port = free_port()
    command = _serve(port, "--served-model-name", "only-model")
    outcome = run_scale(_config(tmp_path, cache_dir, n=600, oom_at=(0.3, 0.7), serve=command))
    assert outcome.ok and outcome.oom_kills == 2
    v = outcome.verification
    assert (v["received"], v["lost"], v["duplicated"]) == (600, 0, 0)
    exits = [e for e in _events(outcome.run_dir, "exited") if e["cause"] == "oom_kill"]
    assert len(exits) == 2 and all(e["injected"] and e["signal"] == "SIGKILL" for e in exits)
    recovered = _events(outcome.run_dir, "recovered")
    assert len(recovered) == 2
    for stage in ("seconds_to_up", "seconds_to_ready", "seconds_to_first_success"):
        assert all(r[stage] > 0 for r in recovered)
    # the one model it serves was detected and sent instead of the dataset's
    results = list(read_jsonl(outcome.run_dir / "results.jsonl"))
    assert {r["response"]["body"]["model"] for r in results} == {"only-model"}
    ram = [s for s in read_jsonl(outcome.run_dir / "samples.jsonl") if s["source"] == "ram"]
    pids = {s["pid"] for s in ram if s["rss_bytes"]}  # None while it was down
    assert len(pids - {None}) >= 2  # sampling follows the server to its successors


def test_separate_supervise_and_scale_make_one_record_per_incident(tmp_path, cache_dir):
    port = free_port()
    supervise_dir = tmp_path / "supervise"
    supervise = subprocess.Popen(
        [
            *HARNESS,
            "supervise",
            "--run-dir",
            str(supervise_dir),
            "--health",
            f"http://127.0.0.1:{port}/health/ready",
            "--no-sample",
            "--",
            # a simulated delay keeps traffic going for a few samples after the restart
            *_serve(port, "--speed", "100"),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        outcome = run_scale(
            _config(
                tmp_path,
                cache_dir,
                n=500,
                oom_at=(0.5,),
                target=f"http://127.0.0.1:{port}",
                supervisor=str(supervise_dir),
            )
        )
    finally:
        supervise.terminate()
        supervise.wait(30)
    assert outcome.ok
    exited = _events(outcome.run_dir, "exited")
    assert [e["source"] for e in exited] == ["supervisor"] and exited[0]["injected"]
    (recovered,) = [r for r in _events(outcome.run_dir, "recovered") if r["source"] == "scale"]
    assert recovered["seconds_to_first_success"] >= recovered["seconds_to_up"] > 0
    failed_attempts = sum(
        1
        for r in read_jsonl(outcome.run_dir / "requests.jsonl")
        if not r["ok"] and r["t_end"] >= recovered["death_t"]
    )
    assert recovered["requests_failed"] == failed_attempts > 0
    # scale sampled the process listening on the target's port, through its restart
    ram = [s for s in read_jsonl(outcome.run_dir / "samples.jsonl") if s["source"] == "ram"]
    assert len({s["pid"] for s in ram if s["rss_bytes"]} - {None}) == 2


def test_requests_too_long_for_the_context_stop_before_sending(tmp_path, cache_dir):
    port = free_port()
    command = _serve(port, "--set", "context_limit=8192")
    with pytest.raises(
        UserError, match=r"50 of 50 requests would exceed it; lower --max-tokens to \d+ or less"
    ):
        run_scale(_config(tmp_path, cache_dir, n=50, max_tokens=8192, serve=command))
    assert not list(tmp_path.glob("scale-*"))  # nothing was sent: no run directory is left


def test_a_command_without_serve_is_refused(tmp_path):
    done = subprocess.run(
        [*HARNESS, "scale", "--n", "10", "--", "vllm", "serve", "m"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ},
    )
    assert done.returncode == 2
    assert "a server command after -- needs --serve" in done.stderr


def test_a_secret_in_the_serve_command_never_reaches_the_run_directory(tmp_path, cache_dir):
    port = free_port()
    command = (*_serve(port), "--api-key", "sk-very-secret")
    outcome = run_scale(_config(tmp_path, cache_dir, n=20, serve=command, api_key="sk-very-secret"))
    assert outcome.ok
    for path in outcome.run_dir.iterdir():
        if path.is_file():
            assert b"sk-very-secret" not in path.read_bytes(), path.name
