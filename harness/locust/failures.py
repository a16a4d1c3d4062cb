"""Why a request failed, named with the causes requests.jsonl and the reports use.

Locust groups failures by their text, so the text is kept stable: the cause, the status and the
first clause of the server's message ("oom_error (HTTP 500): CUDA out of memory"), without the
sizes that change from one OOM to the next.
"""

from __future__ import annotations

import re
from typing import Any

import gevent

# The driver's rule and its threshold, one place: harness scale stops on the same count.
from harness.driver.errors import (
    CONNECTION,
    REJECTIONS_BEFORE_STOP,
    TIMEOUT,
    Failure,
    classify_response,
)

_FIRST_CLAUSE = re.compile(r"\.\s|\s\(|;\s")


class RequestFailed(Exception):
    """A failed request as Locust shows it in its failures table, UI, CSV and HTML."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        status = f" (HTTP {failure.status})" if failure.status else ""
        super().__init__(f"{failure.cause}{status}: {short_message(failure.message)}")

    def __repr__(self) -> str:  # Locust keys its failures table on repr()
        return str(self)


def short_message(message: str, limit: int = 120) -> str:
    """The first clause of a message, without the details that vary between occurrences."""
    match = _FIRST_CLAUSE.search(message)
    return (message[: match.start()] if match else message).strip()[:limit]


def of_response(response: Any, body: bytes | None) -> Failure | None:
    """None for a 2xx answer, else the Failure of its status line, or of getting no answer."""
    status = response.status_code
    if not status:
        return from_exception(response.error or ConnectionError("no response"))
    return classify_response(status, body or b"", response.headers)


def from_exception(exc: BaseException) -> Failure:
    """The Failure of a request that got no (complete) answer: timed out, refused, reset, cut."""
    message = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, (TimeoutError, gevent.Timeout)) or "timed out" in message.lower():
        return Failure(TIMEOUT, None, message)
    return Failure(CONNECTION, None, message)


def from_stream_error(status: int, message: str) -> Failure:
    """The Failure an error event inside a started (2xx) stream stands for."""
    failure = classify_response(500, message.encode(), None)
    assert failure is not None
    return failure._replace(status=status)


class Rejections:
    """`harness scale`'s rule: a target that rejects the first requests will reject them all.

    Credentials refused (401/403) stop at once; REJECTIONS_BEFORE_STOP non-retryable 4xx
    before any success stop too (a wrong model, API or port), instead of a flood of them.
    """

    def __init__(self, limit: int = REJECTIONS_BEFORE_STOP) -> None:
        self.limit = limit
        self.rejected = 0
        self.succeeded = False
        self.stopped = False

    def note(self, failure: Failure | None) -> str | None:
        """Count one outcome; the reason to stop the run (given once), or None to go on."""
        reason = self._reason(failure)
        if reason is None or self.stopped:
            return None
        self.stopped = True
        return reason

    def _reason(self, failure: Failure | None) -> str | None:
        if failure is None:
            self.succeeded = True
            return None
        text = f"HTTP {failure.status}: {short_message(failure.message)}"
        if failure.status in (401, 403):
            return f"the target answered {text}; it wants credentials these scenarios do not send"
        if not failure.rejected or self.succeeded:
            return None
        self.rejected += 1
        if self.rejected < self.limit:
            return None
        return (
            f"the target rejected the first {self.rejected} requests (last: {text}); "
            "check --model, --api and --host"
        )
