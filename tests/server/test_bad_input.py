"""Every bad-input class answers 4xx with an OpenAI-style error body, and the server stays up."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from .conftest import MODEL

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]


def assert_error(response: httpx.Response, status: int, code: str | None, server) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["code"] == code
    assert httpx.get(server.url + "/health").status_code == 200  # still up
    return error


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_json", None),
        (b'{"messages": []}', 400, "missing_required_parameter", "model"),
        (b'{"model": "llama3.1:8b"}', 400, "missing_required_parameter", "messages"),
        (b'{"model": "llama3.1:8b", "messages": "hi"}', 400, "invalid_type", "messages"),
        (b'{"model": "llama3.1:8b", "messages": []}', 400, "empty_array", "messages"),
        (
            b'{"model": "llama3.1:8b", "messages": [{"role": "robot", "content": "x"}]}',
            400,
            "invalid_value",
            "messages[0].role",
        ),
        (
            b'{"model": "llama3.1:8b", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": "many"}',
            400,
            "invalid_type",
            "max_tokens",
        ),
        (
            b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
            "model",
        ),
    ],
)
def test_malformed_and_incomplete_requests(server, body, status, code, param):
    response = httpx.post(server.url + CHAT, content=body)
    assert assert_error(response, status, code, server)["param"] == param


def test_unknown_model_through_the_client(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        client.chat.completions.create(model="gpt-9", messages=HELLO)


def test_over_long_context_is_rejected(server):
    huge = [{"role": "user", "content": "x" * (4 * 33_000)}]
    response = httpx.post(server.url + CHAT, json={"model": MODEL, "messages": huge})
    error = assert_error(response, 400, "context_length_exceeded", server)
    assert "maximum context length is 32768 tokens" in error["message"]
    too_many = {"model": MODEL, "messages": HELLO, "max_tokens": 40_000}
    assert_error(
        httpx.post(server.url + CHAT, json=too_many), 400, "context_length_exceeded", server
    )


def test_body_over_the_limit_is_413(start_server):
    server = start_server("--speed", "max", "--max-body-mb", "0.01")
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 20_000}]}
    assert_error(httpx.post(server.url + CHAT, json=big), 413, "request_too_large", server)

    def chunks():  # no Content-Length: the limit holds while streaming the body in
        for _ in range(30):
            yield b" " * 1000

    response = httpx.post(server.url + CHAT, content=chunks())
    assert_error(response, 413, "request_too_large", server)


def test_api_key_is_required_when_configured(start_server):
    server = start_server("--speed", "max", "--api-key", "sk-right")
    for key in ("sk-wrong", None):
        headers = {"authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(
            server.url + CHAT, json={"model": MODEL, "messages": HELLO}, headers=headers
        )
        assert_error(response, 401, "invalid_api_key", server)
    assert httpx.get(server.url + "/api/tags").status_code == 401
    good = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-right", max_retries=0)
    assert good.chat.completions.create(model=MODEL, messages=HELLO).choices
    assert httpx.get(server.url + "/health/ready").status_code == 200  # health stays open


def test_unknown_routes_and_methods(server):
    assert_error(httpx.get(server.url + "/v1/nothing"), 404, "not_found", server)
    assert_error(httpx.get(server.url + CHAT), 405, "method_not_allowed", server)
    assert_error(httpx.get(server.url + "/v1/batches/batch_nope"), 404, "not_found", server)


def test_bad_uploads_and_batch_bodies(server, tmp_path):
    url = server.url
    no_file = httpx.post(url + "/v1/files", data={"purpose": "batch"}, files={"x": ("a", b"1")})
    assert_error(no_file, 400, "missing_required_parameter", server)
    wrong_purpose = httpx.post(
        url + "/v1/files", data={"purpose": "vision"}, files={"file": ("a", b"1")}
    )
    assert_error(wrong_purpose, 400, "invalid_value", server)
    assert_error(httpx.post(url + "/v1/files", content=b"x"), 400, "invalid_content_type", server)
    missing_file = {
        "input_file_id": "file-doesnotexist",
        "endpoint": CHAT,
        "completion_window": "24h",
    }
    assert_error(httpx.post(url + "/v1/batches", json=missing_file), 404, "file_not_found", server)
    bad_endpoint = {**missing_file, "endpoint": "/v1/embeddings"}
    assert_error(httpx.post(url + "/v1/batches", json=bad_endpoint), 400, "invalid_value", server)
    bad_window = {**missing_file, "completion_window": "soon"}
    assert_error(httpx.post(url + "/v1/batches", json=bad_window), 400, "invalid_value", server)


def test_full_queue_answers_429_with_retry_after(start_server):
    server = start_server(
        "--speed", "1", "--set", "max_num_seqs=1", "--set", "max_waiting=1", "--set", "itl_s=0.05"
    )
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 20}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post(CHAT, json=body) for _ in range(6)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429, 429, 429]
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["retry-after"] == "1"
    assert_error(limited, 429, "rate_limit_exceeded", server)
