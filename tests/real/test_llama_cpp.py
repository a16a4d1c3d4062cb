"""The harness, unchanged, against llama.cpp's server: probe, `scale --serve` with two OOM kills,
Locust's chat users, `sample` and `supervise --memory-limit`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from harness.rundir import read_jsonl
from harness.targets import probe
from tests.real.conftest import ROOT, SERVER_OPTIONS, N, server_command

HARNESS = [sys.executable, "-m", "harness"]
pytestmark = pytest.mark.real


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == kind]


def _run(*command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_probe_knows_llama_cpp_and_its_one_model(llama_server):
    target = probe(llama_server.url)
    assert target.kind == "llama.cpp" and target.models == ("tiny",)
    assert target.health_url == llama_server.url + "/v1/models"
    assert target.metrics_url is None  # llama-cpp-python exports no Prometheus metrics


def test_scale_serve_survives_two_oom_kills_with_every_result_once(tiny_model, dataset, tmp_path):
    from harness.net import free_port

    run_dir = tmp_path / "run"
    done = _run(
        *HARNESS,
        "scale",
        "--dataset",
        str(dataset),
        "--max-tokens",
        "8",
        "--concurrency",
        "4",
        "--oom-at",
        "30%,70%",
        "--run-dir",
        str(run_dir),
        "--serve",
        "--",
        *server_command(tiny_model, free_port()),
        *SERVER_OPTIONS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "target llama.cpp; models: tiny; max_model_len 8192" in done.stderr
    assert f"all {N} requests fit" in done.stderr
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    v = manifest["verification"]
    assert (v["expected"], v["received"], v["lost"], v["duplicated"], v["failed"]) == (
        N,
        N,
        0,
        0,
        0,
    )
    kills = [e for e in _events(run_dir, "exited") if e["cause"] == "oom_kill"]
    assert len(kills) == 2 and all(e["injected"] for e in kills)
    recovered = _events(run_dir, "recovered")
    assert len(recovered) == 2
    for stage in ("seconds_to_up", "seconds_to_ready", "seconds_to_first_success"):
        assert all(r[stage] > 0 for r in recovered), recovered
    answers = [r["response"]["body"] for r in read_jsonl(run_dir / "results.jsonl")]
    assert {a["model"] for a in answers} == {"tiny"}
    assert all(a["usage"]["completion_tokens"] <= 8 for a in answers)
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    assert summary["recovery"]["incidents"] == 2 and summary["recovery"]["unrecovered"] == 0


def test_locust_chat_and_streaming_users_run_unchanged(llama_server, tmp_path):
    done = _run(
        sys.executable,
        "-m",
        "locust",
        "-f",
        "scenarios/",
        "--headless",
        "--only-summary",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "8s",
        "--host",
        llama_server.url,
        "--model",
        "tiny",
        "--max-tokens",
        "8",
        "--run-dir",
        str(tmp_path / "locust"),
        "--json-file",
        "stats",
        "ChatUser",
        "StreamingChatUser",
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    stats = orjson.loads((tmp_path / "locust" / "stats.json").read_bytes())
    by_name = {(s["method"], s["name"]): s for s in stats}
    assert sum(s["num_failures"] for s in stats if s["method"] in ("POST", "GET")) == 0
    streamed = [s for (method, _), s in by_name.items() if method == "POST" and s["num_requests"]]
    assert len(streamed) >= 2, sorted(by_name)  # one entry per user class's request
    requests = list(read_jsonl(tmp_path / "locust" / "requests.jsonl"))
    assert requests and all(r["ok"] for r in requests)
    assert any(r.get("ttft_s") for r in requests)  # the streaming user timed its first token


def test_sample_records_its_memory_and_says_metrics_are_missing(llama_server, tmp_path):
    run_dir = tmp_path / "sample"
    done = _run(
        *HARNESS,
        "sample",
        "--pid",
        str(llama_server.process.pid),
        "--url",
        llama_server.url + "/metrics",
        "--duration",
        "2s",
        "--interval",
        "0.5s",
        "--run-dir",
        str(run_dir),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ram = [s for s in read_jsonl(run_dir / "samples.jsonl") if s["source"] == "ram"]
    assert ram and all(s["pid"] == llama_server.process.pid and s["rss_bytes"] > 0 for s in ram)
    assert "metrics" in done.stderr and "404" in done.stderr


def test_supervise_memory_limit_kills_the_server_as_the_oom_killer_would(tiny_model, tmp_path):
    from harness.net import free_port

    port = free_port()
    run_dir = tmp_path / "supervise"
    done = _run(
        *HARNESS,
        "supervise",
        "--run-dir",
        str(run_dir),
        "--health",
        f"http://127.0.0.1:{port}/v1/models",
        "--memory-limit",
        "40M",  # the loaded server holds more than this
        "--max-restarts",
        "1",
        "--no-sample",
        "--",
        *server_command(tiny_model, port),
        *SERVER_OPTIONS,
        timeout=180,
    )
    assert done.returncode != 0
    exceeded = _events(run_dir, "memory_limit_exceeded")
    assert len(exceeded) == 2 and all(e["rss_bytes"] > e["limit_bytes"] for e in exceeded)
    exits = _events(run_dir, "exited")
    assert [e["cause"] for e in exits] == ["oom_kill", "oom_kill"]
    assert _events(run_dir, "gave_up")
