"""POST /admin/faults, the reference server's fault door, from the client side: coded once for
scale, chaos, the embedded server and the Locust OOM user."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from harness.errors import UserError

FAULTS_PATH = "/admin/faults"


class FaultRefused(UserError):
    """The server answered the fault with an error status (wrong token, unknown fault)."""


def faults_url(origin: str) -> str:
    """The fault door of the server at origin (scheme://host:port)."""
    return origin.rstrip("/") + FAULTS_PATH


def post_fault(
    origin: str, token: str, fault: dict[str, Any], *, timeout_s: float = 10.0
) -> dict[str, Any] | None:
    """Inject one fault; the server's answer, or None when the connection broke before one came
    (a fault that kills the server, as an OOM in kill mode does, may end it mid-request)."""
    url = faults_url(origin)
    try:
        response = httpx.post(
            url,
            json=fault,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            trust_env=False,  # loopback only: never through a proxy from the environment
        )
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        raise FaultRefused(
            f"{url} refused the fault: HTTP {response.status_code}: {_error_message(response)}"
        )
    answer = response.json()
    return answer if isinstance(answer, dict) else {}


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-style error body, else the start of the text."""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(response.json()["error"]["message"])
    return response.text[:200]
