"""LLMUser: the base of the chat scenarios, a client timing what docs/scenarios.md defines.

Closed loop by default (one request in flight per user); with --rate or --trace each user
hands out this process's scheduled arrivals instead (openloop.py), and every request is also
timed from its scheduled send time.

Each chat request is one Locust request entry (end-to-end latency, to the last byte for streams)
plus, for a successful answer, entries of its own for TTFT, ITL and tokens/s. Those are logged
into their stats entries directly rather than fired as request events, so Locust's Aggregated row
(request count, RPS, failure ratio) stays that of real HTTP requests.
"""

from __future__ import annotations

import time

import gevent
import orjson
from locust.contrib.fasthttp import FAILURE_EXCEPTIONS, FastHttpUser, ResponseContextManager
from locust.env import Environment
from locust.exception import StopUser

from harness.driver.errors import CONNECTION, ENGINE_DEAD, HTTP_5XX, RATE_LIMITED, Failure
from harness.driver.ready import TargetUnavailable
from harness.locust import (
    lifecycle,  # noqa: F401 - registers the plugin's options and hooks
    stopping,
)
from harness.locust.context import RunContext, run_context
from harness.locust.failures import (
    RequestFailed,
    from_exception,
    from_stream_error,
    of_response,
    short_message,
)
from harness.locust.openloop import DEFAULT_PROCESS_CAP
from harness.locust.protocol import (
    ENDPOINTS,
    StreamError,
    answer_tokens,
    cut_short,
    read_ndjson_line,
    read_sse_line,
)
from harness.locust.timing import GAPS_FIELD, StreamClock, StreamMetrics, gaps_ms
from harness.rundir import request_record

_JSON_HEADERS = {"Content-Type": "application/json"}
_DEATHS = (CONNECTION, ENGINE_DEAD)  # the driver's: wait for the health URL, then send again
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0


class LLMUser(FastHttpUser):
    """A user that sends candidate evaluations one at a time, as a batch client does."""

    abstract = True
    api: str | None = None  # the chat API this class sends; None: --api
    concurrency = 1  # one request in flight per user (closed loop)
    network_timeout = 300.0  # a long answer from a loaded server is slow, not broken
    connection_timeout = 10.0

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        open_loop = options is not None and (options.rate or options.trace)
        if open_loop:
            # open loop: this user's requests overlap (connections open lazily, up to the cap)
            self.concurrency = int(options.max_concurrency or DEFAULT_PROCESS_CAP)
        super().__init__(environment)

    def on_start(self) -> None:
        self.run: RunContext = run_context(self.environment)
        self._backoff_s = 0.0

    def chat(self, *, stream: bool) -> None:
        """Send the next candidate evaluation and record it (stats entries, requests.jsonl).

        Open loop: wait for the next scheduled arrival and send it without waiting for the
        answer; once a trace is over, wait for the last answers and stop.
        """
        api = self.api or self.run.settings.api
        open_loop = self.run.open_loop
        if open_loop is None:
            self._wait_ready()
            failure = self._send(None, api, stream)
            self._pace(failure)
            return
        due_t = open_loop.claim()
        if due_t is None:
            open_loop.wait_drained()
            raise StopUser()
        woke_late = open_loop.dispatch(due_t, self._send, api, stream)
        if woke_late is not None and self.run.selfcheck is not None:
            self.run.selfcheck.monitor.timer_lag(woke_late)

    def _send(self, due_t: float | None, api: str, stream: bool) -> Failure | None:
        """One chat request, recorded; due_t is its scheduled send time (open loop)."""
        prompt = self.run.prompts.next()
        endpoint = ENDPOINTS[api]
        name = f"{endpoint} (stream)" if stream else endpoint
        payload = prompt.encoded(api, stream)
        t = time.time()
        sent = time.perf_counter()
        with self.client.post(
            endpoint,
            data=payload,
            headers=_JSON_HEADERS,
            name=name,
            catch_response=True,
            stream=stream,
        ) as response:
            if stream:
                failure, metrics = _read_stream(api, response, sent)
                response.request_meta["response_time"] = metrics.e2e_s * 1000
            else:
                failure, metrics = _read_whole(api, response, sent)
            if failure is not None:
                response.failure(RequestFailed(failure))
        status = response.status_code
        self._record(t, due_t, prompt.custom_id, name, stream, status, failure, metrics)
        self.note_outcome(failure)
        return failure

    def note_outcome(self, failure: Failure | None) -> None:
        """Stop the run when the target rejects requests as `harness scale` would stop."""
        reason = self.run.rejections.note(failure)
        if reason is not None:
            stopping.stop_run(self.environment, reason)

    def _record(
        self,
        t: float,
        due_t: float | None,
        custom_id: str,
        name: str,
        stream: bool,
        status: int,
        failure: Failure | None,
        metrics: StreamMetrics,
    ) -> None:
        ok = failure is None
        line = request_record(
            t=t,
            t_end=t + metrics.e2e_s,
            custom_id=custom_id,
            ok=ok,
            status=status or None,
            error=None if ok else failure.cause,
            latency_s=metrics.e2e_s,
            ttft_s=metrics.ttft_s if ok else None,
            itl_mean_s=metrics.itl_mean_s if ok else None,
            tpot_s=metrics.tpot_s if ok else None,
            ttst_s=metrics.ttst_s if ok else None,
            itl_max_s=metrics.itl_max_s if ok else None,
            prompt_tokens=metrics.prompt_tokens,
            output_tokens=metrics.output_tokens,
            attempt=1,
            message=None if ok else short_message(failure.message),
            scenario=type(self).__name__,
            endpoint=name,
            scheduled_t=due_t,
            schedule_lag_s=None if due_t is None else t - due_t,
            scheduled_latency_s=None if due_t is None else t + metrics.e2e_s - due_t,
        )
        if stream:
            line["token_basis"] = metrics.token_basis
            if ok and metrics.gaps_s:
                line[GAPS_FIELD] = gaps_ms(metrics.gaps_s)
        self.run.log.request(line)
        stats = self.environment.stats
        if due_t is not None:
            stats.get("schedule", "LAG").log(max(0.0, t - due_t) * 1000, 0)
            stats.get(name, "SCHEDULED").log(line["scheduled_latency_s"] * 1000, 0)
        if ok:
            if metrics.ttft_s is not None:
                stats.get(name, "TTFT").log(metrics.ttft_s * 1000, 0)
            if metrics.itl_mean_s is not None:
                stats.get(name, "ITL").log(metrics.itl_mean_s * 1000, 0)
            if metrics.tokens_per_s is not None:
                stats.get(name, "tokens/s").log(metrics.tokens_per_s, 0)

    def _wait_ready(self) -> None:
        """While the process's readiness poller finds out whether the target died, wait."""
        readiness = self.run.readiness
        if readiness is None:
            return
        try:
            readiness.wait()
        except TargetUnavailable as exc:
            stopping.stop_run(self.environment, str(exc))
            raise StopUser() from None

    def _pace(self, failure: Failure | None) -> None:
        """After a death, the next request waits for readiness (the driver's poller); after a
        429, or a refused connection without a poller, back off (doubling) rather than spin."""
        readiness = self.run.readiness
        if failure is not None and readiness is not None and failure.cause in _DEATHS:
            readiness.down(failure.cause)
            self._backoff_s = 0.0
            return
        if failure is None or failure.cause not in (CONNECTION, RATE_LIMITED):
            self._backoff_s = 0.0
            return
        self._backoff_s = min(_BACKOFF_MAX_S, max(_BACKOFF_FIRST_S, 2 * self._backoff_s))
        gevent.sleep(failure.retry_after_s or self._backoff_s)


def _read_whole(
    api: str, response: ResponseContextManager, sent: float
) -> tuple[Failure | None, StreamMetrics]:
    e2e = time.perf_counter() - sent
    content = response.content if response.status_code else None
    failure = of_response(response, content)
    prompt_tokens = output_tokens = None
    if failure is None:
        try:
            answer = orjson.loads(content or b"")
        except orjson.JSONDecodeError:
            failure = Failure(HTTP_5XX, response.status_code, "the answer is not JSON")
        else:
            prompt_tokens, output_tokens = answer_tokens(api, answer)
    metrics = StreamMetrics(e2e, None, None, None, output_tokens, prompt_tokens, 0, "usage")
    return failure, metrics


def _read_stream(
    api: str, response: ResponseContextManager, sent: float
) -> tuple[Failure | None, StreamMetrics]:
    """Read SSE or NDJSON line by line as it arrives (read(n) would wait for n bytes)."""
    clock = StreamClock(sent, keep_gaps=True)
    status = response.status_code
    failure = of_response(response, response.content if status and status >= 300 else None)
    if failure is not None:
        return failure, clock.finish(time.perf_counter())
    read_line = read_sse_line if api == "openai" else read_ndjson_line
    raw = response._response  # geventhttpclient's response: readline returns each line on arrival
    ended = False
    size = 0
    try:
        while line := raw.readline(b"\n"):
            size += len(line)
            if not read_line(line, clock, time.perf_counter()):
                ended = True  # keep reading to the last byte, which frees the connection for reuse
    except StreamError as exc:
        failure = from_stream_error(status, str(exc))
    except FAILURE_EXCEPTIONS as exc:
        failure = from_exception(exc)
    metrics = clock.finish(time.perf_counter())
    response.request_meta["response_length"] = size
    if failure is None and not ended:
        failure = Failure(CONNECTION, status, "the stream ended before its end marker")
    elif failure is None and (short := cut_short(clock)) is not None:
        failure = Failure(CONNECTION, status, short)
    return failure, metrics
