"""Failure causes of one request, named as requests.jsonl and the reports name them.

The cause decides what the driver does next: wait for a dead target, slow down after an OOM,
back off after a 429, retry a transient 5xx, or give up on a request the server rejects. Real
servers' own errors get their own causes, each with the hint that names its fix: vLLM's
EngineDeadError (the engine behind a live API server died), a prompt longer than the model's
context, a model the server does not serve, llama.cpp's busy slots and model loading.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from harness.supervision.exits import OOM_TEXT

OOM_ERROR = "oom_error"
CONNECTION = "connection"
TIMEOUT = "timeout"
RATE_LIMITED = "rate_limited"
HTTP_4XX = "http_4xx"
HTTP_5XX = "http_5xx"
ENGINE_DEAD = "engine_dead"
CONTEXT_LENGTH = "context_length"
MODEL_NOT_FOUND = "model_not_found"
SLOTS_BUSY = "slots_busy"

CAUSES = (
    OOM_ERROR,
    CONNECTION,
    TIMEOUT,
    RATE_LIMITED,
    HTTP_4XX,
    HTTP_5XX,
    ENGINE_DEAD,
    CONTEXT_LENGTH,
    MODEL_NOT_FOUND,
    SLOTS_BUSY,
)
# Rejections (4xx) before any success that stop a run: the driver and Locust users alike.
REJECTIONS_BEFORE_STOP = 8

# What a stopped run tells the user to change, by the cause that stopped it.
HINTS = {
    CONTEXT_LENGTH: "prompt plus max_tokens is longer than the model's context: lower --max-tokens,"
    " or serve the model with a longer one (vLLM --max-model-len, llama.cpp --n_ctx,"
    " Ollama num_ctx)",
    MODEL_NOT_FOUND: "the target does not serve that model: check --model, or leave it out to"
    " use the one the target serves",
    HTTP_4XX: "check --model and the target URL",
}

# The engine behind a live API server died: vLLM's EngineDeadError (and the Async/MQ variants of
# older releases), its "EngineCore encountered an issue", Ollama's runner that terminated. The
# server answers 5xx until it is restarted, exactly as if it were down.
_ENGINE_DEAD_TEXT = re.compile(
    rb"EngineDeadError|EngineCore encountered an issue|engine loop is not running"
    rb"|engine is dead|died unexpectedly|llama runner process (?:has )?terminated",
    re.IGNORECASE,
)
# vLLM ("maximum context length is N tokens", "longer than the maximum model length", and from
# 0.32 on "max_tokens=N cannot be greater than max_model_len=M": it cuts a max_tokens that only
# overflows with the prompt to what fits), llama-cpp-python (code context_length_exceeded) and
# llama.cpp's server (exceed_context_size).
_CONTEXT_TEXT = re.compile(
    rb"maximum context length|maximum model length|context_length_exceeded"
    rb"|greater than max_model_len|exceeds? the available context size|exceed_context_size"
    rb"|context window",
    re.IGNORECASE,
)
# Ollama ('model "x" not found, try pulling it first'), vLLM/OpenAI ("The model `x` does not
# exist", code model_not_found).
_MODEL_TEXT = re.compile(
    rb"model_not_found|model\s+\S{1,200}\s+not found|model\s+\S{1,200}\s+does not exist",
    re.IGNORECASE,
)
# llama.cpp's server: every slot is taken, or the model is still loading (503 until ready).
_SLOTS_TEXT = re.compile(
    rb"no slot available|slot unavailable|all slots are busy|loading model", re.IGNORECASE
)

# 4xx a retry can fix: the server timed out reading, or a conflicting request finished meanwhile.
_RETRYABLE_4XX = frozenset({408, 409, 425})


class Failure(NamedTuple):
    """Why one attempt failed: cause, HTTP status (None without a response) and a short message."""

    cause: str
    status: int | None
    message: str
    retry_after_s: float | None = None

    @property
    def target_down(self) -> bool:
        """The target died or ran out of memory: wait until it is ready again before resending."""
        return self.cause in (OOM_ERROR, CONNECTION, ENGINE_DEAD)

    @property
    def retryable(self) -> bool:
        """Worth sending again; False for a request the server rejected (malformed, too long,
        unknown model)."""
        if self.cause in (CONTEXT_LENGTH, MODEL_NOT_FOUND):
            return False
        return self.cause != HTTP_4XX or self.status in _RETRYABLE_4XX

    @property
    def rejected(self) -> bool:
        """The server refused the request itself; before any success, a sign every request will
        be refused (wrong model, wrong endpoint, prompts too long for the model)."""
        return self.cause in (HTTP_4XX, CONTEXT_LENGTH, MODEL_NOT_FOUND) and not self.retryable

    @property
    def hint(self) -> str:
        """The fix to name when this failure stops a run."""
        return HINTS.get(self.cause, HINTS[HTTP_4XX])


def classify_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> Failure | None:
    """None for a 2xx answer, else the Failure it represents."""
    if 200 <= status < 300:
        return None
    message = _error_message(body)
    head = body[:4096]
    if status == 429:
        return Failure(RATE_LIMITED, status, message, _retry_after(headers))
    if status >= 500 and OOM_TEXT.search(head):
        return Failure(OOM_ERROR, status, message)
    if status >= 500 and _ENGINE_DEAD_TEXT.search(head):
        return Failure(ENGINE_DEAD, status, message)
    if status in (500, 503) and _SLOTS_TEXT.search(head):
        return Failure(SLOTS_BUSY, status, message, _retry_after(headers))
    if status >= 500:
        return Failure(HTTP_5XX, status, message, _retry_after(headers))
    if status in (400, 413, 422) and _CONTEXT_TEXT.search(head):
        return Failure(CONTEXT_LENGTH, status, message)
    if status in (400, 404) and _MODEL_TEXT.search(head):
        return Failure(MODEL_NOT_FOUND, status, message)
    return Failure(HTTP_4XX, status, message)


def classify_exception(exc: BaseException) -> Failure:
    """The Failure of a request that got no HTTP answer (refused, reset, cut off, timed out)."""
    message = f"{type(exc).__name__}: {exc}".rstrip(": ")
    httpx = sys.modules.get("httpx")  # not imported here: unloaded, none of its errors exist
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or (
        httpx is not None and isinstance(exc, httpx.TimeoutException)
    ):
        return Failure(TIMEOUT, None, message)
    if isinstance(exc, ConnectionError) or (
        httpx is not None and isinstance(exc, httpx.TransportError)
    ):
        # ConnectError (refused: the target is down), reset (it died mid request),
        # RemoteProtocolError (it closed the connection without answering): httpx's or the
        # driver's own client's (http.py), whose errors are ConnectionErrors.
        return Failure(CONNECTION, None, message)
    raise TypeError(f"not a transport failure: {message}") from exc


def _error_message(body: bytes, limit: int = 300) -> str:
    """The OpenAI-style error message of a body (or Ollama's {"error": "..."}), else its start."""
    text = body[:4096].decode("utf-8", "replace")
    match = re.search(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"', text) or re.search(
        r'^\s*\{\s*"error"\s*:\s*"((?:[^"\\]|\\.)*)"', text
    )
    return (match.group(1) if match else text.strip())[:limit]


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), if present."""
    value = (headers or {}).get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
