"""The client driver against a real local server: exactly-once through deaths, AIMD degradation."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest

from harness.driver.checkpoint import Checkpoint, read_ids, verify
from harness.driver.client import ClientDriver, DriverConfig, TargetRejected
from harness.rundir import RunDir, read_jsonl


def _requests(n: int):
    for i in range(n):
        yield f"r{i:05d}", {"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]}


def _drive(url: str, path, n: int, **config):
    run_dir = RunDir(path)
    checkpoint = Checkpoint(path)
    settings = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, **config}
    driver = ClientDriver(DriverConfig(url=url, **settings), run_dir, checkpoint)
    stats = asyncio.run(driver.run(_requests(n)))
    checkpoint.close()
    run_dir.close()
    return stats


def test_every_request_once_through_resets_and_ooms(tmp_path, make_server):
    def route(path: str, body: bytes):
        if path.startswith("/health"):
            return 200, {}, b"{}"
        number = int(orjson.loads(body)["messages"][0]["content"].split()[1])
        # A sixth of first tries die mid-request; some others hit a CUDA OOM.
        tries[number] = tries.get(number, 0) + 1
        if tries[number] == 1 and number % 6 == 0:
            return "reset"
        if tries[number] == 1 and number % 10 == 3:
            return 500, {}, make_server.OOM_BODY
        return 200, {}, make_server.completion(str(number))

    tries: dict[int, int] = {}
    server = make_server(route)
    stats = _drive(server.url, tmp_path, 300, concurrency=8)
    assert verify((f"r{i:05d}" for i in range(300)), tmp_path / "results.jsonl") == {
        "expected": 300,
        "received": 300,
        "lost": 0,
        "duplicated": 0,
        "unexpected": 0,
        "failed": 0,
        "corrupt": 0,
    }
    assert stats.failures["connection"] >= 50 and stats.failures["oom_error"] == 30
    attempts = list(read_jsonl(tmp_path / "requests.jsonl"))
    assert len(attempts) == stats.attempts == 300 + stats.failures.total()
    assert {a["error"] for a in attempts if not a["ok"]} == {"connection", "oom_error"}
    results = {r["custom_id"]: r for r in read_jsonl(tmp_path / "results.jsonl")}
    content = results["r00042"]["response"]["body"]["choices"][0]["message"]["content"]
    assert content == "42"


def test_a_rejected_request_is_final_recorded_once_and_not_retried(tmp_path, make_server):
    def route(path: str, body: bytes):
        number = int(orjson.loads(body)["messages"][0]["content"].split()[1])
        if number % 10 == 7:
            return 400, {}, b'{"error": {"message": "messages[1]: content too long"}}'
        return 200, {}, make_server.completion()

    server = make_server(route)
    stats = _drive(server.url, tmp_path, 200, concurrency=4, health_url=server.url)
    assert (stats.ok, stats.failed, stats.attempts) == (180, 20, 200)
    failed = [r for r in read_jsonl(tmp_path / "results.jsonl") if not r["ok"]]
    assert sorted(r["custom_id"] for r in failed) == [f"r{i:05d}" for i in range(7, 200, 10)]
    assert failed[0]["error"] == {"code": "http_4xx", "message": "messages[1]: content too long"}


def test_a_target_rejecting_everything_stops_the_run_with_nothing_recorded(tmp_path, make_server):
    server = make_server(lambda path, body: (404, {}, b'{"error": {"message": "no model x"}}'))
    with pytest.raises(TargetRejected, match="404: no model x; check --model"):
        _drive(server.url, tmp_path, 100, concurrency=4, health_url=server.url)
    assert not list(read_ids(tmp_path / "results.jsonl"))  # a resume after the fix sends all


def test_an_unauthorised_answer_stops_the_run_at_once(tmp_path, make_server):
    server = make_server(lambda path, body: (401, {}, b'{"error": {"message": "bad key"}}'))
    with pytest.raises(TargetRejected, match="401: bad key; check the API key"):
        _drive(server.url, tmp_path, 100, concurrency=4, health_url=server.url)


def test_oom_halves_concurrency_then_a_healthy_stretch_restores_it(tmp_path, make_server):
    lock = threading.Lock()
    state = {"in_flight": 0, "served": 0}
    arrivals: list[tuple[float, int]] = []

    def route(path: str, body: bytes):
        if path.startswith("/health"):
            return 200, {}, b"{}"
        with lock:
            state["in_flight"] += 1
            state["served"] += 1
            served = state["served"]
            arrivals.append((time.time(), state["in_flight"]))
        try:
            time.sleep(0.04)  # service time, so the driver's limit is what bounds in-flight
            if 120 < served <= 124:
                return 500, {}, make_server.OOM_BODY
            return 200, {}, make_server.completion()
        finally:
            with lock:
                state["in_flight"] -= 1

    server = make_server(route)
    _drive(server.url, tmp_path, 400, concurrency=16, restore_after=40, restore_step=4)
    events = [
        e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] in ("degraded", "restored")
    ]
    degraded = [e for e in events if e["kind"] == "degraded"]
    restored = [e for e in events if e["kind"] == "restored"]
    assert degraded and degraded[0]["concurrency"] == 8 and degraded[0]["cause"] == "oom_error"
    assert len(degraded) <= 2  # one OOM burst is one incident, not one cut per failed request
    assert restored[-1]["concurrency"] == 16 and restored[-1]["full"] is True
    assert [e["concurrency"] for e in restored] == sorted(e["concurrency"] for e in restored)
    # While degraded, the server saw no more than the lowered limit in flight.
    low = min(e["concurrency"] for e in degraded)
    start, end = degraded[-1]["t"] + 0.05, restored[0]["t"]
    during = [n for t, n in arrivals if start < t < end]
    assert during and max(during) <= low
    assert max(n for t, n in arrivals if t < degraded[0]["t"]) > low  # and more before the OOM
    assert verify((f"r{i:05d}" for i in range(400)), tmp_path / "results.jsonl")["lost"] == 0


def test_engine_dead_waits_for_readiness_without_burning_retries(tmp_path, make_server):
    """vLLM's EngineDeadError: the API server answers 500 and its health fails until restarted."""
    dead_body = (
        b'{"error":{"message":"EngineCore encountered an issue. See stack trace (above) for the '
        b'root cause.","type":"InternalServerError","param":null,"code":500}}'
    )
    state = {"dead": False, "polls_while_dead": 0, "dead_answers": 0}

    def route(path: str, body: bytes):
        if path.startswith("/health"):
            if state["dead"]:
                state["polls_while_dead"] += 1
                state["dead"] = state["polls_while_dead"] < 5  # restarted after a few polls
                return 500, {}, b""
            return 200, {}, b"{}"
        if state["dead_answers"] < 8 and (state["dead"] or state["polls_while_dead"] == 0):
            state["dead"] = True
            state["dead_answers"] += 1
            return 500, {}, dead_body
        return 200, {}, make_server.completion()

    server = make_server(route)
    # max_attempts=2 would fail a request that used its retries on the dead engine
    stats = _drive(server.url, tmp_path, 40, concurrency=4, max_attempts=2, health_url=server.url)
    assert (stats.ok, stats.failed) == (40, 0)
    assert stats.failures["engine_dead"] >= 1 and stats.outages >= 1
    events = [e["kind"] for e in read_jsonl(tmp_path / "events.jsonl")]
    assert "target_down" in events and "target_ready" in events


def test_prompts_too_long_for_the_model_stop_the_run_with_the_fix(tmp_path, make_server):
    body = (
        b'{"object":"error","message":"This model\'s maximum context length is 512 tokens. '
        b'However, you requested 900 tokens.","type":"BadRequestError","param":null,"code":400}'
    )
    server = make_server(lambda path, _: (400, {}, body))
    with pytest.raises(TargetRejected, match=r"maximum context length.*lower --max-tokens"):
        _drive(server.url, tmp_path, 100, concurrency=4, health_url=server.url)
    assert not list(read_ids(tmp_path / "results.jsonl"))


def test_a_model_the_server_lacks_stops_at_the_first_answer(tmp_path, make_server):
    body = b'{"error":"model \\"llama3\\" not found, try pulling it first"}'
    server = make_server(lambda path, _: (404, {}, body))
    with pytest.raises(TargetRejected, match=r"llama3.* not found.*check --model"):
        _drive(server.url, tmp_path, 100, concurrency=1, health_url=server.url)
    assert len(list(read_jsonl(tmp_path / "requests.jsonl"))) == 1


def test_a_result_counts_as_done_only_once_its_line_is_written(tmp_path, make_server):
    server = make_server(lambda path, body: (200, {}, make_server.completion()))
    results = tmp_path / "results.jsonl"
    counted: list[str] = []

    def on_result(custom_id: str, ok: bool) -> None:
        written = {i for i, _ in read_ids(results)}
        assert custom_id in written and set(counted) < written
        counted.append(custom_id)

    run_dir, checkpoint = RunDir(tmp_path), Checkpoint(tmp_path)
    config = DriverConfig(url=server.url, concurrency=16, health_url=server.url)
    driver = ClientDriver(config, run_dir, checkpoint, on_result=on_result)
    stats = asyncio.run(driver.run(_requests(300)))
    assert stats.done == len(counted) == 300 == len(set(counted))
