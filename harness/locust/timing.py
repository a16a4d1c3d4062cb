"""Timing of one chat answer, as docs/metrics.md defines TTFT, TTST, ITL, TPOT and tokens/s.

TTFT counts from the request being sent to the first chunk whose content is not empty (a role-only
or empty delta does not count). ITL is the mean gap per token after the first content chunk, so
TTFT is never part of it; a chunk carrying several tokens has its gap divided by them when the
server reports token counts (per-chunk cumulative usage, or the final total spread evenly over
the chunks), otherwise each chunk counts as one token and the basis says "chunks". TTST (time to
second token) is when the second token arrived: with the first when the first chunk carried two.
Every single gap is kept too (bounded), each divided by its chunk's tokens when per-chunk counts
are known: the distribution a per-request mean hides. Shared by the Locust users and the
`harness scale` driver, so both measure the same things.
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
    ttst_s: float | None = None
    itl_max_s: float | None = None
    gaps_s: tuple[float, ...] = ()  # every inter-token gap, in order (at most MAX_GAPS)

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens over the request's end-to-end latency (per-request rate)."""
        tokens = self.output_tokens if self.output_tokens is not None else self.content_chunks
        return tokens / self.e2e_s if tokens and self.e2e_s > 0 else None


MAX_GAPS = 8192  # gaps kept per request; longer answers keep their first MAX_GAPS
GAPS_FIELD = "itl_gaps_ms"  # requests.jsonl: a streamed request's gaps, in milliseconds


def gaps_ms(gaps_s: tuple[float, ...]) -> list[float]:
    """Gaps as requests.jsonl holds them: milliseconds to the microsecond (short lines)."""
    return [round(gap * 1000, 3) for gap in gaps_s]


class StreamClock:
    """Arrival times of content chunks and the token counts a server reports; O(1) memory unless
    `keep_gaps` asks for every gap (bounded by MAX_GAPS)."""

    __slots__ = (
        "_first",
        "_first_tokens",
        "_gaps",
        "_last",
        "_last_tokens",
        "_max_gap",
        "_second",
        "_sent",
        "chunks",
        "finish_reason",
        "output_tokens",
        "prompt_tokens",
    )

    def __init__(self, sent: float, *, keep_gaps: bool = False) -> None:
        self._sent = sent
        self._first: float | None = None
        self._second: float | None = None
        self._last: float | None = None
        self._first_tokens: int | None = None
        self._last_tokens: int | None = None
        self._max_gap: float | None = None
        self._gaps: list[float] | None = [] if keep_gaps else None
        self.chunks = 0
        self.finish_reason: str | None = None  # why the server ended the answer, when it said
        self.output_tokens: int | None = None
        self.prompt_tokens: int | None = None

    def content(self, now: float, cumulative_tokens: int | None = None) -> None:
        """A chunk with non-empty content arrived at `now` (cumulative output tokens if known)."""
        if self._first is None:
            self._first = now
            self._first_tokens = cumulative_tokens
            if cumulative_tokens is not None and cumulative_tokens >= 2:
                self._second = now
        else:
            if self._second is None:
                self._second = now
            tokens = 1
            if cumulative_tokens is not None and self._last_tokens is not None:
                tokens = max(1, cumulative_tokens - self._last_tokens)
            assert self._last is not None
            gap = (now - self._last) / tokens
            if self._max_gap is None or gap > self._max_gap:
                self._max_gap = gap
            if self._gaps is not None and len(self._gaps) < MAX_GAPS:
                self._gaps.extend([gap] * min(tokens, MAX_GAPS - len(self._gaps)))
        self._last = now
        self._last_tokens = cumulative_tokens
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
            e2e,
            ttft,
            itl,
            tpot,
            self.output_tokens,
            self.prompt_tokens,
            self.chunks,
            basis,
            ttst_s=None if self._second is None else self._second - self._sent,
            itl_max_s=self._max_gap,
            gaps_s=tuple(self._gaps or ()),
        )
