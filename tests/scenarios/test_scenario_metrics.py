"""TTFT, ITL, TPOT and tokens/s from streamed answers, as ../shared/llm-metrics.md defines them.

Pure functions fed with the lines a server sends and the times they arrived; no Locust here
(importing Locust would monkey-patch the whole test process for gevent).
"""

from __future__ import annotations

import orjson
import pytest

from harness.locust.protocol import (
    StreamError,
    answer_tokens,
    cut_short,
    encode_chat,
    read_ndjson_line,
    read_sse_line,
)
from harness.locust.timing import StreamClock


def sse(chunk: dict | str) -> bytes:
    data = chunk if isinstance(chunk, str) else orjson.dumps(chunk).decode()
    return f"data: {data}\n".encode()


def delta(**fields: str) -> dict:
    return {"choices": [{"index": 0, "delta": fields}]}


def feed_sse(lines: list[tuple[float, bytes]], sent: float = 0.0) -> tuple[StreamClock, bool]:
    clock = StreamClock(sent)
    going = True
    for now, line in lines:
        going = read_sse_line(line, clock, now) and going
    return clock, going


def test_role_only_and_empty_deltas_do_not_start_ttft() -> None:
    clock, going = feed_sse(
        [
            (0.05, sse(delta(role="assistant"))),
            (0.06, b"\n"),
            (0.07, sse(delta(content=""))),
            (0.30, sse(delta(content="The"))),
            (0.32, sse(delta(content=" score"))),
            (0.34, sse(delta(content=" is"))),
            (0.36, sse({"choices": [], "usage": {"prompt_tokens": 90, "completion_tokens": 3}})),
            (0.37, sse("[DONE]")),
        ]
    )
    metrics = clock.finish(0.38)
    assert not going
    assert metrics.ttft_s == pytest.approx(0.30)
    assert metrics.itl_mean_s == pytest.approx(0.02)  # gaps after the first chunk only
    assert metrics.tpot_s == pytest.approx((0.38 - 0.30) / 2)
    assert (metrics.prompt_tokens, metrics.output_tokens) == (90, 3)
    assert metrics.token_basis == "usage"
    assert metrics.tokens_per_s == pytest.approx(3 / 0.38)


def test_itl_divides_gaps_by_the_tokens_chunks_carried() -> None:
    # 3 chunks, 9 tokens in all: each chunk carried 3 tokens on average, so a 30 ms gap
    # between chunks is 10 ms per token.
    lines = [(0.1 + 0.03 * k, sse(delta(content="abc"))) for k in range(3)]
    lines.append((0.2, sse({"choices": [], "usage": {"completion_tokens": 9}})))
    clock, _ = feed_sse(lines)
    assert clock.finish(0.2).itl_mean_s == pytest.approx(0.06 / 6)


def test_itl_uses_cumulative_usage_per_chunk_when_the_server_sends_it() -> None:
    # vLLM's continuous_usage_stats: the first chunk carried 1 token, the next two 4 each.
    lines = []
    for k, total in enumerate((1, 5, 9)):
        chunk = {**delta(content="x"), "usage": {"completion_tokens": total}}
        lines.append((0.1 + 0.04 * k, sse(chunk)))
    clock, _ = feed_sse(lines)
    assert clock.finish(0.2).itl_mean_s == pytest.approx(0.08 / 8)


def test_without_token_counts_each_chunk_is_one_token() -> None:
    clock, _ = feed_sse([(0.1 + 0.01 * k, sse(delta(content="t"))) for k in range(5)])
    metrics = clock.finish(0.15)
    assert metrics.token_basis == "chunks"
    assert metrics.itl_mean_s == pytest.approx(0.01)
    assert metrics.output_tokens is None


def test_a_single_content_chunk_has_ttft_but_no_itl() -> None:
    clock, _ = feed_sse([(0.2, sse(delta(content="all at once")))])
    metrics = clock.finish(0.21)
    assert metrics.ttft_s == pytest.approx(0.2)
    assert metrics.itl_mean_s is None


def test_a_stream_without_content_has_no_ttft() -> None:
    clock, _ = feed_sse([(0.1, sse(delta(role="assistant"))), (0.2, sse("[DONE]"))])
    metrics = clock.finish(0.2)
    assert metrics.ttft_s is None
    assert metrics.itl_mean_s is None
    assert metrics.e2e_s == pytest.approx(0.2)


def test_a_done_without_a_finish_reason_is_a_stream_cut_short() -> None:
    answer = [(0.1, sse(delta(content="The"))), (0.2, sse(delta(content=" score")))]
    finished = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    clock, going = feed_sse([*answer, (0.3, sse(finished)), (0.4, sse("[DONE]"))])
    assert not going and clock.finish_reason == "length" and cut_short(clock) is None
    # llama-cpp-python's interrupted stream: [DONE] straight after the content
    clock, going = feed_sse([*answer, (0.3, sse("[DONE]"))])
    assert not going and clock.finish_reason is None
    assert "cut the answer short" in cut_short(clock)
    ndjson = StreamClock(0.0)
    assert not read_ndjson_line(b'{"message": {"content": "x"}, "done": true}', ndjson, 0.1)
    assert ndjson.finish_reason == "stop" and cut_short(ndjson) is None


def test_ttft_counts_from_the_send_time() -> None:
    clock, _ = feed_sse([(10.25, sse(delta(content="a")))], sent=10.0)
    assert clock.finish(10.3).ttft_s == pytest.approx(0.25)


def test_an_error_event_in_the_stream_raises_with_its_message() -> None:
    clock = StreamClock(0.0)
    oom = {"error": {"message": "CUDA out of memory. Tried to allocate 2.00 MiB", "code": 500}}
    with pytest.raises(StreamError, match="CUDA out of memory"):
        read_sse_line(sse(oom), clock, 0.1)
    with pytest.raises(StreamError, match="malformed"):
        read_sse_line(b"data: {not json\n", clock, 0.1)


def test_ollama_ndjson_counts_content_and_reads_eval_count() -> None:
    clock = StreamClock(0.0)
    lines = [
        {"message": {"role": "assistant", "content": ""}, "done": False},
        {"message": {"role": "assistant", "content": "Hi"}, "done": False},
        {"message": {"role": "assistant", "content": " there"}, "done": False},
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "eval_count": 2,
            "prompt_eval_count": 40,
        },
    ]
    results = [
        read_ndjson_line(orjson.dumps(m) + b"\n", clock, 0.1 * (k + 1)) for k, m in enumerate(lines)
    ]
    metrics = clock.finish(0.45)
    assert results == [True, True, True, False]
    assert metrics.ttft_s == pytest.approx(0.2)
    assert metrics.itl_mean_s == pytest.approx(0.1)
    assert (metrics.prompt_tokens, metrics.output_tokens) == (40, 2)
    with pytest.raises(StreamError, match="model not found"):
        read_ndjson_line(b'{"error": "model not found"}\n', clock, 0.5)


def test_requests_are_encoded_for_each_api() -> None:
    body = {
        "model": "llama3.1:8b",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16,
        "temperature": 0.0,
        "response_format": {"type": "json_object"},
    }
    openai = orjson.loads(encode_chat("openai", body, stream=True))
    assert openai["stream"] is True
    assert openai["stream_options"] == {"include_usage": True}
    assert openai["max_tokens"] == 16
    ollama = orjson.loads(encode_chat("ollama", body, stream=False))
    assert ollama == {
        "model": "llama3.1:8b",
        "messages": body["messages"],
        "stream": False,
        "format": "json",
        "options": {"temperature": 0.0, "num_predict": 16},
    }
    assert "stream" not in body  # the shared body is not changed


def test_whole_answers_report_their_tokens() -> None:
    assert answer_tokens("openai", {"usage": {"prompt_tokens": 5, "completion_tokens": 7}}) == (
        5,
        7,
    )
    assert answer_tokens("ollama", {"prompt_eval_count": 5, "eval_count": 7}) == (5, 7)
    assert answer_tokens("openai", {}) == (None, None)
