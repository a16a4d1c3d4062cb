"""Streamed answers in the driver (`harness scale --stream`): every chunk timed as it arrives.

The request asks for an SSE stream with the usage in its last chunk (OpenAI's
stream_options.include_usage). The answer's body is handed to `StreamResponse.feed` chunk by
chunk as the connection reads it (http.py), its lines fed to the same SSE reader and clock as the
Locust users' (harness/locust/protocol.py, timing.py), so TTFT, TTST, ITL, TPOT and every gap
mean the same in both. The content is joined into a chat.completion body, so results.jsonl holds
the answer as a non-streamed request would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness.driver.http import MAX_BODY_BYTES, Response
from harness.locust.protocol import StreamError, read_sse_line
from harness.locust.timing import StreamClock, StreamMetrics

_STREAM_FLAGS = b',"stream":true,"stream_options":{"include_usage":true}}'


def streamed(payload: bytes) -> bytes:
    """A chat request body (a JSON object's bytes) asking for an SSE stream with usage."""
    end = payload.rstrip()
    if not end.endswith(b"}"):
        raise ValueError("a request body must be a JSON object")
    inner = end[:-1].rstrip()
    return inner + (_STREAM_FLAGS if not inner.endswith(b"{") else _STREAM_FLAGS[1:])


class StreamResponse(Response):
    """An SSE chat completion read as it arrives (a non-2xx answer is kept whole, as an error)."""

    __slots__ = ("_buffer", "_clock", "_content", "_done", "_error", "_last", "_now", "_size")

    def __init__(
        self, sent: float | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        super().__init__()
        self._now = clock
        self._clock = StreamClock(clock() if sent is None else sent, keep_gaps=True)
        self._buffer = b""
        self._content: list[str] = []
        self._size = 0
        self._done = False
        self._error: str | None = None
        self._last: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> None:
        if not 200 <= self.status < 300:
            super().feed(chunk)  # an error body: classified as a whole answer is
            return
        now = self._now()
        data = self._buffer + chunk
        *lines, self._buffer = data.split(b"\n")
        for line in lines:
            if self._done or self._error is not None:
                continue
            try:
                if not read_sse_line(line, self._clock, now, self._keep):
                    self._done = True
            except StreamError as exc:
                self._error = str(exc)

    def _keep(self, chunk: dict[str, Any]) -> None:
        """The parts of the stream the joined answer needs: content, id, model, finish."""
        if "error" in chunk:
            return
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text and self._size < MAX_BODY_BYTES:
                self._content.append(text)
                self._size += len(text)
            if choice.get("finish_reason"):
                self._last["finish_reason"] = choice["finish_reason"]
        for key in ("id", "model", "usage"):
            if chunk.get(key):
                self._last[key] = chunk[key]

    @property
    def stream_error(self) -> str | None:
        """What went wrong inside a 2xx stream: an error chunk, or no end marker."""
        if self._error is not None:
            return self._error
        if not self._done:
            return "the stream ended before its end marker"
        return None

    def metrics(self, finished: float) -> StreamMetrics:
        return self._clock.finish(finished)

    def answer(self) -> dict[str, Any]:
        """The stream as one chat.completion body (what results.jsonl keeps)."""
        return {
            "id": self._last.get("id"),
            "object": "chat.completion",
            "model": self._last.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self._content)},
                    "finish_reason": self._last.get("finish_reason"),
                }
            ],
            "usage": self._last.get("usage"),
        }
