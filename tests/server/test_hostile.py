"""The audit's hand-made hostile inputs (issue 17), as a table: each is a 4xx, never a 500.

Every row must answer its status with an OpenAI-style body (Ollama's {"error": "..."} on
/api/*) that carries no Python exception text, and the server must stay up.
"""

from __future__ import annotations

import socket

import httpx
import orjson
import pytest

from .conftest import ADMIN_TOKEN, MODEL, wait_for

CHAT = "/v1/chat/completions"
EXCEPTION_TEXT = (
    "Traceback",
    "unhashable",
    "object has no attribute",
    "NoneType",
    "cannot convert",
    "could not convert",
    "Errno",
    "TypeError",
    "ValueError",
    "KeyError",
    "OverflowError",
)
SCORING = (
    "You score the candidate against the job.\n"
    "- technical skills (weight {weight})\n"
    "- communication (weight 1)\n"
    "Return a score from 0 to 100."
)


def _chat(*messages: dict, **extra) -> dict:
    return {"model": MODEL, "messages": list(messages), **extra}


def _scoring(weight: str, profile: dict | None = None) -> dict:
    user = orjson.dumps(profile or {"id": "c1", "skills": []}).decode()
    return _chat(
        {"role": "system", "content": SCORING.format(weight=weight)},
        {"role": "user", "content": user},
    )


def _multipart(boundary: str, parts: list[tuple[str, bytes]], close: bool = True) -> bytes:
    pieces = []
    for name, value in parts:
        filename = b'; filename="in.jsonl"' if name == "file" else b""
        pieces.append(
            b'--%s\r\nContent-Disposition: form-data; name="%s"%s\r\n\r\n%s\r\n'
            % (boundary.encode(), name.encode(), filename, value)
        )
    if close:
        pieces.append(b"--%s--\r\n" % boundary.encode())
    return b"".join(pieces)


_HUGE_MAX_TOKENS = b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": 1%s}' % (
    b"0" * 30
)
_ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
_BOUNDARY = "hostileboundary"
_FORM = {"content-type": f"multipart/form-data; boundary={_BOUNDARY}"}
_LINE = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}\n'

# (case, method, path, JSON body or raw bytes, extra headers, status)
CASES = [
    ("chat role is a list", "POST", CHAT, _chat({"role": [], "content": "x"}), None, 400),
    ("chat role is an object", "POST", CHAT, _chat({"role": {}, "content": "x"}), None, 400),
    ("chat role is a number", "POST", CHAT, _chat({"role": 7, "content": "x"}), None, 400),
    ("chat role is very long", "POST", CHAT, _chat({"role": "r" * 10_000}), None, 400),
    ("ollama role is a list", "POST", "/api/chat", _chat({"role": [], "content": "x"}), None, 400),
    ("ollama role is an object", "POST", "/api/chat", _chat({"role": {"a": 1}}), None, 400),
    ("weight with two dots", "POST", CHAT, _scoring("1.2.3"), None, 400),
    ("weight is a lone dot", "POST", CHAT, _scoring("."), None, 400),
    ("weight of 400 digits", "POST", CHAT, _scoring("9" * 400), None, 400),
    ("ollama weight of 400 digits", "POST", "/api/chat", _scoring("9" * 400), None, 400),
    ("skill name is a number", "POST", CHAT, _scoring("1", {"skills": [{"name": 5}]}), None, 400),
    ("skill name is a list", "POST", CHAT, _scoring("1", {"skills": [{"name": []}]}), None, 400),
    ("messages of nulls", "POST", CHAT, _chat(None, None), None, 400),
    ("content part not text", "POST", CHAT, _chat({"role": "user", "content": [1]}), None, 400),
    ("model is a list", "POST", CHAT, {"model": [], "messages": []}, None, 400),
    ("max_tokens huge", "POST", CHAT, _HUGE_MAX_TOKENS, None, 400),
    ("max_tokens boolean", "POST", CHAT, _chat({"role": "user", "content": "x"}, max_tokens=True),
     None, 400),
    ("stream_options not an object", "POST", CHAT,
     _chat({"role": "user", "content": "x"}, stream_options=[]), None, 400),
    ("context_id a number", "POST", CHAT, _chat({"role": "user", "content": "x"}, context_id=5),
     None, 400),
    ("completion prompt a dict", "POST", "/v1/completions", {"model": MODEL, "prompt": {}}, None,
     400),
    ("ollama options a list", "POST", "/api/generate", {"model": MODEL, "options": []}, None, 400),
    ("ollama num_predict a string", "POST", "/api/generate",
     {"model": MODEL, "options": {"num_predict": "x"}}, None, 400),
    ("deeply nested JSON", "POST", CHAT, b"[" * 100_000 + b"]" * 100_000, None, 400),
    ("invalid UTF-8", "POST", CHAT, b'{"model": "\xff\xfe"}', None, 400),
    ("NaN literal", "POST", CHAT, b'{"model": NaN}', None, 400),
    ("huge window", "POST", "/v1/batches",
     {"input_file_id": "file-x", "endpoint": CHAT,
      "completion_window": "99999999999999999999999d"}, None, 400),
    ("window not 24h", "POST", "/v1/batches",
     {"input_file_id": "file-x", "endpoint": CHAT, "completion_window": "1h"}, None, 400),
    ("window a number", "POST", "/v1/batches",
     {"input_file_id": "file-x", "endpoint": CHAT, "completion_window": 24}, None, 400),
    ("metadata a list", "POST", "/v1/batches",
     {"input_file_id": "file-x", "endpoint": CHAT, "completion_window": "24h", "metadata": []},
     None, 400),
    ("batch limit 10**40", "GET", "/v1/batches?limit=" + "9" * 40, None, None, 400),
    ("batch id traversal", "GET", "/v1/batches/..%2F..%2Fetc", None, None, 404),
    ("file id traversal", "GET", "/v1/files/file-..%2Fx/content", None, None, 404),
    ("fault with a wrong token", "POST", "/admin/faults", b"{}", {"authorization": "Bearer t"},
     401),
    ("fault body a list", "POST", "/admin/faults", b"[]", _ADMIN, 400),
    ("fault seconds NaN", "POST", "/admin/faults", b'{"fault": "hang", "seconds": NaN}', _ADMIN,
     400),
    ("fault seconds 1e400", "POST", "/admin/faults", b'{"fault": "hang", "seconds": 1e400}',
     _ADMIN, 400),
    ("multipart without closing boundary", "POST", "/v1/files",
     _multipart(_BOUNDARY, [("purpose", b"batch"), ("file", _LINE)], close=False), _FORM, 400),
    ("multipart of 100,000 fields", "POST", "/v1/files",
     _multipart(_BOUNDARY, [("purpose", b"batch"), ("file", _LINE)]
                + [(f"f{i}", b"v") for i in range(100_000)]), _FORM, 400),
    ("multipart part header of 1 MB", "POST", "/v1/files",
     _multipart(_BOUNDARY, [("purpose", b"batch")], close=False)
     + b'--%s\r\nContent-Disposition: form-data; name="file"; filename="a"\r\nX-Big: %s\r\n\r\n'
     % (_BOUNDARY.encode(), b"a" * (1 << 20)) + _LINE + b"\r\n--%s--\r\n" % _BOUNDARY.encode(),
     _FORM, 400),
    ("multipart field value of 1 MB", "POST", "/v1/files",
     _multipart(_BOUNDARY, [("purpose", b"b" * (1 << 20))]), _FORM, 400),
    ("multipart boundary garbage", "POST", "/v1/files", b"\x00" * 1000, _FORM, 400),
    ("multipart no boundary", "POST", "/v1/files", b"x",
     {"content-type": "multipart/form-data"}, 400),
    ("header of 1 MB", "GET", "/health", None, {"x-big": "a" * (1 << 20)}, 431),
    ("200 headers", "GET", "/health", None, {f"x-h{i}": "1" for i in range(200)}, 431),
    ("URL over the head limit", "GET", "/v1/" + "a" * 65_450, None, None, 431),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_hostile_input_is_a_4xx_with_an_error_body(server, method, path, body, headers, status):
    content = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    response = httpx.request(
        method, server.url + path, content=content, headers=headers, timeout=30
    )
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    if path.startswith("/api/"):
        assert isinstance(error, str) and error
    else:
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    for text in EXCEPTION_TEXT:
        assert text not in response.text
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def _upload(server, content: bytes) -> str:
    response = httpx.post(
        server.url + "/v1/files",
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", content)},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_a_refused_completion_window_leaves_the_file_and_batches_usable(server):
    file_id = _upload(server, _LINE.replace(b"{}", orjson.dumps(_chat({"role": "user"}))))
    body = {"input_file_id": file_id, "endpoint": CHAT}
    for window in ("99999999999999999999999d", "48h", "0s"):
        response = httpx.post(
            server.url + "/v1/batches", json={**body, "completion_window": window}
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "completion_window"
    assert httpx.get(server.url + "/v1/batches").status_code == 200
    deleted = httpx.delete(server.url + f"/v1/files/{file_id}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True


def test_batch_lines_with_hostile_roles_fail_alone_with_a_400(server):
    lines = []
    for i, role in enumerate(([], {}, 5, "user")):
        body = _chat({"role": role, "content": "hello"}, max_tokens=5)
        lines.append({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body})
    file_id = _upload(server, b"".join(orjson.dumps(line) + b"\n" for line in lines))
    created = httpx.post(
        server.url + "/v1/batches",
        json={"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"},
    ).json()
    batch = wait_for(
        lambda: (
            (b := httpx.get(server.url + f"/v1/batches/{created['id']}").json())["status"]
            in ("completed", "failed")
            and b
        ),
        30,
        "the batch to finish",
    )
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
    errors = httpx.get(server.url + f"/v1/files/{batch['error_file_id']}/content").text
    results = [orjson.loads(line) for line in errors.splitlines()]
    assert sorted(r["custom_id"] for r in results) == ["r0", "r1", "r2"]
    assert {r["response"]["status_code"] for r in results} == {400}


def test_with_an_api_key_an_unknown_path_is_401_not_404(start_server):
    server = start_server("--speed", "max", "--api-key", "sk-right")
    for path in ("/nothing", "/v1/nothing", "/api/nothing", "/v2/models"):
        response = httpx.get(server.url + path)
        assert response.status_code == 401, path
        if not path.startswith("/api/"):
            assert response.json()["error"]["code"] == "invalid_api_key"
    authorized = httpx.get(server.url + "/nothing", headers={"authorization": "Bearer sk-right"})
    assert authorized.status_code == 404
    for path in ("/health", "/health/ready", "/metrics", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 200, path


def test_the_issue_reproducer_gets_a_431_without_stalling_health(server):
    """256 MB of one header: answered 431 after the head limit, not after buffering it all."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
        sock.sendall(head + b"a" * (1 << 20))
        assert httpx.get(server.url + "/health", timeout=10).status_code == 200
        try:
            for _ in range(255):
                sock.sendall(b"a" * (1 << 20))
        except OSError:
            pass  # the server stopped reading: it has answered and closed
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.1 431 ")
