"""Failure causes of one request, named as requests.jsonl and the reports name them.

The cause decides what the driver does next: wait for a dead target, slow down after an OOM,
back off after a 429, retry a transient 5xx, or give up on a request the server rejects.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import NamedTuple

import httpx

from harness.supervision.exits import OOM_TEXT

OOM_ERROR = "oom_error"
CONNECTION = "connection"
TIMEOUT = "timeout"
RATE_LIMITED = "rate_limited"
HTTP_4XX = "http_4xx"
HTTP_5XX = "http_5xx"

CAUSES = (OOM_ERROR, CONNECTION, TIMEOUT, RATE_LIMITED, HTTP_4XX, HTTP_5XX)
# Rejections (4xx) before any success that stop a run: the driver and Locust users alike.
REJECTIONS_BEFORE_STOP = 8

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
        return self.cause in (OOM_ERROR, CONNECTION)

    @property
    def retryable(self) -> bool:
        """Worth sending again; False for a request the server rejected as malformed."""
        return self.cause != HTTP_4XX or self.status in _RETRYABLE_4XX


def classify_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> Failure | None:
    """None for a 2xx answer, else the Failure it represents."""
    if 200 <= status < 300:
        return None
    message = _error_message(body)
    if status == 429:
        return Failure(RATE_LIMITED, status, message, _retry_after(headers))
    if status >= 500 and OOM_TEXT.search(body):
        return Failure(OOM_ERROR, status, message)
    if status >= 500:
        return Failure(HTTP_5XX, status, message, _retry_after(headers))
    return Failure(HTTP_4XX, status, message)


def classify_exception(exc: BaseException) -> Failure:
    """The Failure of a request that got no HTTP answer (refused, reset, cut off, timed out)."""
    message = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, httpx.TimeoutException):
        return Failure(TIMEOUT, None, message)
    if isinstance(exc, (httpx.TransportError, ConnectionError)):
        # ConnectError (refused: the target is down), ReadError/WriteError (reset: it died mid
        # request), RemoteProtocolError (it closed the connection without answering).
        return Failure(CONNECTION, None, message)
    raise TypeError(f"not a transport failure: {message}") from exc


def _error_message(body: bytes, limit: int = 300) -> str:
    """The OpenAI-style error message of a body when it has one, else its start."""
    text = body[:4096].decode("utf-8", "replace")
    match = re.search(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
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
