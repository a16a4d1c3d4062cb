"""`harness scale --stream` and the open loop (--rate/--trace) against the real reference server,
and the streamed-answer reader on hand-cut chunks."""

from __future__ import annotations

import io
import itertools
import statistics
from pathlib import Path

import orjson
import pytest

from harness.driver.checkpoint import read_ids
from harness.driver.stream import StreamResponse, streamed
from harness.errors import UserError
from harness.rundir import read_jsonl
from harness.scale import ScaleConfig, run_scale
from reports import load_run, summarize


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("datasets"))


def _config(tmp_path: Path, cache_dir: str, name: str, **settings) -> ScaleConfig:
    base = {
        "runs_root": str(tmp_path),
        "cache_dir": cache_dir,
        "report": False,
        "sample_interval": 0.2,
        "ready_timeout_s": 30.0,
        "run_dir": str(tmp_path / name),
    }
    return ScaleConfig(**{**base, **settings})


def _lines(run_dir: Path) -> list[dict]:
    return list(read_jsonl(run_dir / "requests.jsonl"))


def _sse(*events: dict | str) -> bytes:
    out = b""
    for event in events:
        data = event.encode() if isinstance(event, str) else orjson.dumps(event)
        out += b"data: " + data + b"\n\n"
    return out


def test_the_reader_times_chunks_across_cut_lines() -> None:
    times = iter([0.1, 0.2, 0.3])
    response = StreamResponse(0.0, clock=lambda: next(times))
    response.status = 200
    body = _sse(
        {"id": "c1", "choices": [{"delta": {"role": "assistant"}}]},
        {"choices": [{"delta": {"content": "He"}}]},
        {"choices": [{"delta": {"content": "llo"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
        "[DONE]",
    )
    cut = body.index(b"llo") - 3  # a line cut in the middle, as TCP may deliver it
    response.feed(body[:40])
    response.feed(body[40:cut])
    response.feed(body[cut:])
    assert response.stream_error is None
    metrics = response.metrics(0.4)
    assert (metrics.ttft_s, metrics.ttst_s) == (pytest.approx(0.2), pytest.approx(0.3))
    assert metrics.gaps_s == pytest.approx((0.1,)) and metrics.output_tokens == 2
    answer = response.answer()
    assert answer["choices"][0]["message"]["content"] == "Hello"
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["id"] == "c1"


def test_the_reader_fails_an_error_event_and_a_cut_stream() -> None:
    broken = StreamResponse(0.0, clock=lambda: 0.1)
    broken.status = 200
    broken.feed(_sse({"choices": [{"delta": {"content": "a"}}]}, {"error": {"message": "boom"}}))
    assert broken.stream_error == "boom"
    cut = StreamResponse(0.0, clock=lambda: 0.1)
    cut.status = 200
    cut.feed(_sse({"choices": [{"delta": {"content": "a"}}]}))
    assert cut.stream_error == "the stream ended before its end marker"
    refused = StreamResponse(0.0)
    refused.status = 429
    refused.feed(b'{"error": {"message": "busy"}}')
    assert refused.content == b'{"error": {"message": "busy"}}'  # kept whole, as an error
    assert streamed(b'{"model":"m"}') == (
        b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    )


def test_streamed_runs_time_every_token_and_keep_the_same_answers(
    tmp_path: Path, cache_dir: str
) -> None:
    plain = run_scale(_config(tmp_path, cache_dir, "plain", n=30, concurrency=4), out=io.StringIO())
    stream = run_scale(
        _config(tmp_path, cache_dir, "stream", n=30, concurrency=4, stream=True, speed=2.0),
        out=io.StringIO(),
    )
    assert plain.ok and stream.ok
    for line in _lines(stream.run_dir):
        assert line["ok"] and line["token_basis"] == "usage"
        assert 0 < line["ttft_s"] <= line["ttst_s"] <= line["latency_s"]
        assert len(line["itl_gaps_ms"]) == line["output_tokens"] - 1
        assert line["itl_max_s"] * 1000 == pytest.approx(max(line["itl_gaps_ms"]), abs=0.001)
        assert line["tpot_s"] == pytest.approx(
            (line["latency_s"] - line["ttft_s"]) / (line["output_tokens"] - 1), rel=0.05
        )

    def answers(outcome) -> dict[str, str]:
        path = outcome.run_dir / "results.jsonl"
        bodies = {}
        for record in read_jsonl(path):
            choice = record["response"]["body"]["choices"][0]
            bodies[record["custom_id"]] = choice["message"]["content"]
        return bodies

    assert answers(stream) == answers(plain)  # results.jsonl holds the joined answer
    assert len(dict(read_ids(stream.run_dir / "results.jsonl"))) == 30
    latency = summarize(load_run(stream.run_dir))["latency"]
    assert latency["itl_gap_s"]["n"] == sum(len(x["itl_gaps_ms"]) for x in _lines(stream.run_dir))
    # at speed 2 the server's inter-token latency is 12 ms / 2, x 1 to 1.21 (1 to 4 running of
    # 8 slots), +-15% jitter
    assert 0.0045 < latency["itl_gap_s"]["p50"] < 0.0085


def test_an_open_loop_run_keeps_its_schedule(tmp_path: Path, cache_dir: str) -> None:
    outcome = run_scale(
        _config(tmp_path, cache_dir, "poisson", n=300, rate=60.0, concurrency=32),
        out=io.StringIO(),
    )
    assert outcome.ok
    lines = [x for x in _lines(outcome.run_dir) if x["attempt"] == 1]
    sent = sorted(x["t"] for x in lines)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(gaps) / (sent[-1] - sent[0]) == pytest.approx(60, rel=0.2)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.25)
    assert all(x["schedule_lag_s"] >= 0 and x["scheduled_t"] <= x["t"] + 1e-6 for x in lines)
    summary = summarize(load_run(outcome.run_dir))
    assert summary["schedule"]["arrivals"] == 300 and summary["schedule"]["behind"] is False
    events = [e["kind"] for e in read_jsonl(outcome.run_dir / "events.jsonl")]
    assert "schedule_kept" in events


def test_an_open_loop_sleeps_about_once_per_arrival(tmp_path: Path, cache_dir: str, monkeypatch):
    """uvloop's timers count whole milliseconds and fire a shorter sleep at once: sleeping the
    sub-millisecond rest of a gap spun ~35 times per arrival. Rounded up, one sleep covers it,
    and no request leaves before its time."""
    from harness.driver import client

    sleeps, whole_ms = [], client._whole_ms
    monkeypatch.setattr(client, "_whole_ms", lambda delay: sleeps.append(delay) or whole_ms(delay))
    n = 600
    outcome = run_scale(
        _config(tmp_path, cache_dir, "spin", n=n, rate=2000.0, arrival="constant", concurrency=32),
        out=io.StringIO(),
    )
    assert outcome.ok
    lines = [x for x in _lines(outcome.run_dir) if x["attempt"] == 1]
    assert len(lines) == n and all(x["t"] >= x["scheduled_t"] - 1e-6 for x in lines)
    assert 0 < len(sleeps) <= 2 * n


def test_arrivals_the_cap_holds_back_are_behind_schedule_not_a_saturated_client(
    tmp_path: Path, cache_dir: str
) -> None:
    """One request in flight at a time, each ~0.1 s, against 40 arrivals a second: the cap holds
    them back, they leave late, and latency from the schedule shows what the client hid. The
    client woke on time for each: the cap held them, not a busy client."""
    outcome = run_scale(
        _config(
            tmp_path, cache_dir, "starved", n=40, rate=40.0, arrival="constant", concurrency=1,
            speed=10.0,
        ),
        out=io.StringIO(),
    )  # fmt: skip
    summary = summarize(load_run(outcome.run_dir))
    assert summary["schedule"]["behind"] is True
    assert any("behind schedule" in warning for warning in summary["warnings"])
    assert summary["latency"]["scheduled_s"]["p50"] > 3 * summary["latency"]["e2e_s"]["p50"]
    kinds = [e["kind"] for e in read_jsonl(outcome.run_dir / "events.jsonl")]
    assert "behind_schedule" in kinds
    verdicts = [e for e in read_jsonl(outcome.run_dir / "events.jsonl")]
    monitor = [e for e in verdicts if e["kind"] == "load_generator"][-1]
    assert monitor["timer_lag"]["behind"] is False
    assert monitor["saturated"] == (monitor["saturated_share"] >= 0.1)  # its windows alone


def test_a_trace_is_replayed(tmp_path: Path, cache_dir: str) -> None:
    trace = tmp_path / "trace.jsonl"
    stamps = [0, 100, 150, 400, 1000]  # milliseconds, Mooncake style
    trace.write_bytes(b"".join(orjson.dumps({"timestamp": t}) + b"\n" for t in stamps))
    outcome = run_scale(
        _config(tmp_path, cache_dir, "trace", n=5, trace=str(trace), concurrency=8),
        out=io.StringIO(),
    )
    due = sorted(x["scheduled_t"] for x in _lines(outcome.run_dir))
    assert [round((t - due[0]) * 1000) for t in due] == stamps


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rate": 5.0, "mode": "batch-api"}, "use --mode client"),
        ({"stream": True, "mode": "batch-api"}, "use --mode client"),
        ({"rate": 0.0}, "above 0"),
        ({"rate": 5.0, "arrival": "poisson", "burstiness": 0.5}, "needs arrival gamma"),
        ({"burstiness": 0.5}, "add --rate R"),
        ({"trace": "/nonexistent/trace.jsonl"}, "no such file"),
        ({"slo": "ttft_p99"}, "METRIC_pQ=BOUND"),
    ],
)
def test_bad_load_settings_are_refused_up_front(
    tmp_path: Path, cache_dir: str, settings: dict, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        run_scale(_config(tmp_path, cache_dir, "bad", n=5, **settings), out=io.StringIO())
    assert not (tmp_path / "bad" / "manifest.json").exists()
