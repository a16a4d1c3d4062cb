"""Timing of one chat answer, as docs/scenarios.md (Metrics) defines TTFT, ITL, TPOT and tokens/s.

TTFT counts from the request being sent to the first chunk whose content is not empty (a role-only
or empty delta does not count). ITL is the mean gap per token after the first content chunk, so
TTFT is never part of it; a chunk carrying several tokens has its gap divided by them when the
server reports token counts (per-chunk cumulative usage, or the final total spread evenly over
the chunks), otherwise each chunk counts as one token and the basis says "chunks".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamMetrics:
    """The figures of one finished stream; times in seconds, None where undefined."""

    e2e_s: float
    ttft_s: float | None
    itl_mean_s: float | None
    tpot_s: float | None
    output_tokens: int | None
    prompt_tokens: int | None
    content_chunks: int
    token_basis: str  # "usage": the server counted tokens; "chunks": one chunk taken as one token

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens over the request's end-to-end latency (per-request rate)."""
        tokens = self.output_tokens if self.output_tokens is not None else self.content_chunks
        return tokens / self.e2e_s if tokens and self.e2e_s > 0 else None


class StreamClock:
    """Arrival times of content chunks and the token counts a server reports, in O(1) memory."""

    __slots__ = (
        "_first",
        "_first_tokens",
        "_last",
        "_sent",
        "chunks",
        "finish_reason",
        "output_tokens",
        "prompt_tokens",
    )

    def __init__(self, sent: float) -> None:
        self._sent = sent
        self._first: float | None = None
        self._last: float | None = None
        self._first_tokens: int | None = None
        self.chunks = 0
        self.finish_reason: str | None = None  # why the server ended the answer, when it said
        self.output_tokens: int | None = None
        self.prompt_tokens: int | None = None

    def content(self, now: float, cumulative_tokens: int | None = None) -> None:
        """A chunk with non-empty content arrived at `now` (cumulative output tokens if known)."""
        if self._first is None:
            self._first = now
            self._first_tokens = cumulative_tokens
        self._last = now
        self.chunks += 1

    def usage(self, output_tokens: int | None, prompt_tokens: int | None = None) -> None:
        """Token counts the server reported so far (the last report wins)."""
        if output_tokens is not None:
            self.output_tokens = int(output_tokens)
        if prompt_tokens is not None:
            self.prompt_tokens = int(prompt_tokens)

    def finish(self, now: float) -> StreamMetrics:
        """The metrics of the stream whose last byte arrived at `now`."""
        e2e = now - self._sent
        if self._first is None or self._last is None:
            return StreamMetrics(
                e2e, None, None, None, self.output_tokens, self.prompt_tokens, 0, "chunks"
            )
        ttft = self._first - self._sent
        tokens = self.output_tokens
        basis = "usage" if tokens else "chunks"
        if not tokens:
            tokens, first_tokens = self.chunks, 1.0
        elif self._first_tokens is not None:
            first_tokens = float(self._first_tokens)
        else:
            first_tokens = tokens / self.chunks  # the total spread evenly over the chunks
        after_first = tokens - first_tokens
        itl = (
            (self._last - self._first) / after_first
            if self.chunks > 1 and after_first > 0
            else None
        )
        tpot = (e2e - ttft) / (tokens - 1) if tokens > 1 else None
        return StreamMetrics(
            e2e, ttft, itl, tpot, self.output_tokens, self.prompt_tokens, self.chunks, basis
        )
