"""Failure classification on real httpx exceptions and responses from a real local server."""

from __future__ import annotations

import httpx
import pytest

from harness.driver.errors import classify_exception, classify_response
from harness.net import free_port


def _outcome(url: str, timeout: float = 2.0):
    with httpx.Client(timeout=timeout) as client:
        try:
            response = client.post(url, content=b"{}")
        except httpx.TransportError as exc:
            return classify_exception(exc)
        return classify_response(response.status_code, response.content, response.headers)


def test_success_is_not_a_failure(tiny_server):
    assert _outcome(tiny_server.url + "/v1/chat/completions") is None


def test_cuda_out_of_memory_in_a_500_body_is_oom_error(tiny_server):
    failure = _outcome(tiny_server.url + "/oom")
    assert (failure.cause, failure.status) == ("oom_error", 500)
    assert failure.message.startswith("CUDA out of memory. Tried to allocate 512.00 MiB")
    assert failure.target_down and failure.retryable


def test_429_is_rate_limited_with_retry_after(tiny_server):
    failure = _outcome(tiny_server.url + "/busy")
    assert (failure.cause, failure.retry_after_s, failure.message) == (
        "rate_limited",
        2.0,
        "slow down",
    )
    assert failure.retryable and not failure.target_down


def test_400_is_final(tiny_server):
    failure = _outcome(tiny_server.url + "/bad")
    assert (failure.cause, failure.status, failure.retryable) == ("http_4xx", 400, False)


def test_plain_503_is_http_5xx(tiny_server):
    failure = _outcome(tiny_server.url + "/unavailable")
    assert (failure.cause, failure.status, failure.message) == ("http_5xx", 503, "upstream gone")
    assert failure.retryable and not failure.target_down


@pytest.mark.parametrize("path", ["/close", "/reset"])
def test_connection_cut_mid_request_is_connection(tiny_server, path):
    failure = _outcome(tiny_server.url + path)
    assert (failure.cause, failure.status) == ("connection", None)
    assert failure.target_down


def test_refused_connection_is_connection():
    failure = _outcome(f"http://127.0.0.1:{free_port()}/v1/chat/completions")
    assert failure.cause == "connection"
    assert "ConnectError" in failure.message


def test_no_answer_in_time_is_timeout(tiny_server):
    failure = _outcome(tiny_server.url + "/hang", timeout=0.2)
    assert (failure.cause, failure.target_down) == ("timeout", False)


def test_oom_text_in_a_4xx_is_not_an_oom():
    failure = classify_response(400, b'{"error": {"message": "prompt is out of memory range"}}')
    assert failure.cause == "http_4xx"


def test_programming_errors_are_not_swallowed():
    with pytest.raises(TypeError):
        classify_exception(KeyError("custom_id"))
