"""The chat APIs on the wire: request bodies, and the lines of streamed answers.

OpenAI: POST /v1/chat/completions, SSE (`data: {chunk}` lines, `data: [DONE]` at the end, usage
in the last chunk with stream_options.include_usage, or in every chunk with vLLM's
continuous_usage_stats). Ollama: POST /api/chat, NDJSON messages, counts in the `done` one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from harness.locust.timing import StreamClock

ENDPOINTS = {"openai": "/v1/chat/completions", "ollama": "/api/chat"}


def encode_chat(api: str, body: dict[str, Any], stream: bool) -> bytes:
    """The request bytes of an OpenAI chat body for `api`, streamed or not."""
    if api == "openai":
        extra = {"stream_options": {"include_usage": True}} if stream else {}
        return orjson.dumps({**body, "stream": stream, **extra})
    options = {"temperature": body.get("temperature", 0.0)}
    if body.get("max_tokens"):
        options["num_predict"] = body["max_tokens"]
    ollama = {"model": body["model"], "messages": body["messages"], "stream": stream}
    if (body.get("response_format") or {}).get("type") == "json_object":
        ollama["format"] = "json"
    return orjson.dumps({**ollama, "options": options})


def answer_tokens(api: str, answer: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt tokens, output tokens) a whole (non-streamed) answer reports."""
    if api == "openai":
        usage = answer.get("usage") or {}
        return usage.get("prompt_tokens"), usage.get("completion_tokens")
    return answer.get("prompt_eval_count"), answer.get("eval_count")


class StreamError(Exception):
    """The server reported an error inside a stream that had started with a 2xx status."""


def read_sse_line(
    line: bytes,
    clock: StreamClock,
    now: float,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> bool:
    """Feed one line of an OpenAI chat completion SSE stream; False once `data: [DONE]` arrives.
    `on_chunk` sees each parsed chunk (the driver joins the answer from them)."""
    if not line.startswith(b"data:"):
        return True  # blank separators, comments, `event:` lines
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return False
    chunk = _json(payload)
    if on_chunk is not None:
        on_chunk(chunk)
    if "error" in chunk:
        raise StreamError(_error_text(chunk["error"]))
    usage = chunk.get("usage")
    cumulative = None
    if usage:
        cumulative = usage.get("completion_tokens")
        clock.usage(cumulative, usage.get("prompt_tokens"))
    content = False
    for choice in chunk.get("choices") or ():
        if choice.get("finish_reason"):
            clock.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta") or {}
        content = content or bool(delta.get("content") or delta.get("reasoning_content"))
    if content:
        clock.content(now, cumulative)
    return True


def read_ndjson_line(line: bytes, clock: StreamClock, now: float) -> bool:
    """Feed one line of an Ollama /api/chat NDJSON stream; False once the `done` message arrives."""
    if not line.strip():
        return True
    message = _json(line)
    if "error" in message:
        raise StreamError(_error_text(message["error"]))
    if (message.get("message") or {}).get("content"):
        clock.content(now)
    if message.get("done"):
        clock.finish_reason = str(message.get("done_reason") or "stop")
        clock.usage(message.get("eval_count"), message.get("prompt_eval_count"))
        return False
    return True


def cut_short(clock: StreamClock) -> str | None:
    """Why a stream that reached its end marker is still no answer, or None when it is one.

    Every OpenAI-compatible server ends a finished choice with a finish_reason; a `[DONE]`
    without one is a server cutting the answer short (llama-cpp-python does so to a stream
    when another request arrives, unless started with --interrupt_requests false).
    """
    if clock.finish_reason is None:
        return "the stream reached [DONE] without a finish_reason: the server cut the answer short"
    return None


def _json(payload: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise StreamError(f"malformed stream chunk: {payload[:120]!r}") from None
    if not isinstance(value, dict):
        raise StreamError(f"stream chunk is not a JSON object: {payload[:120]!r}")
    return value


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
