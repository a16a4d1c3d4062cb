"""Capture through the proxy with the official clients against a real `harness serve`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import openai
import orjson
import pytest

from generators import iter_requests
from generators.learn import read_sample
from harness.capture import Pseudonymizer
from tests.server.conftest import MODEL, ROOT, Server, free_port, wait_for

PERSON = {
    "name": {"first": "Margaret", "last": "Whitfield"},
    "email": "margaret.whitfield@acme-corp.com",
    "phone": "+1 415-555-0142",
    "address": "1428 Elm Street",
    "profile_url": "https://linkedin.com/in/mwhitfield",
    "id": "cand-0042917",
    "summary": "Margaret Whitfield led data teams; reach her at margaret.whitfield@acme-corp.com.",
}
SECRETS = (
    "Margaret Whitfield",
    "Whitfield",
    "acme-corp",
    "415-555-0142",
    "1428 Elm",
    "mwhitfield",
    "0042917",
)
MESSAGES = [
    {"role": "system", "content": "Score the candidate from 0 to 100."},
    {"role": "user", "content": json.dumps(PERSON)},
]


class Proxy:
    def __init__(self, upstream: str, out: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness",
                "capture",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--upstream",
                upstream,
                "--out",
                str(out),
                *extra,
            ],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(self._up, 30, f"capture proxy on {self.url}")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"proxy exited: {self.process.stderr.read()}")
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=30)
        return err


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    shared = Server(tmp_path_factory.mktemp("capture") / "data", ("--speed", "max"))
    yield shared
    shared.stop()


def test_clients_pass_through_and_the_capture_is_anonymised(server, tmp_path):
    out = tmp_path / "capture.jsonl"
    proxy = Proxy(server.url, out, "--responses")
    try:
        direct = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0)
        want = direct.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=200)
        got = via.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=200)
        assert got.choices[0].message.content == want.choices[0].message.content
        streamed = via.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=200, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert text == want.choices[0].message.content
        client = ollama.Client(host=proxy.url)
        answer = client.chat(model=MODEL, messages=MESSAGES)
        assert answer["message"]["content"]
        pieces = [
            p["message"]["content"]
            for p in client.chat(model=MODEL, messages=MESSAGES, stream=True)
        ]
        assert "".join(pieces) == answer["message"]["content"]
        batch_input = tmp_path / "in.jsonl"
        batch_input.write_text(
            json.dumps(
                {
                    "custom_id": "b1",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": MODEL, "messages": MESSAGES},
                }
            )
            + "\n"
        )
        uploaded = via.files.create(file=batch_input.open("rb"), purpose="batch")
        assert uploaded.id
    finally:
        err = proxy.stop()
    assert "lines recorded" in err
    data = out.read_text()
    assert [s for s in SECRETS if s in data] == []
    lines = [orjson.loads(line) for line in data.splitlines()]
    assert len(lines) == 5
    assert {line["capture"]["api"] for line in lines} == {"openai", "ollama", "batch"}
    users = [
        next(m["content"] for m in line["body"]["messages"] if m["role"] == "user")
        for line in lines
    ]
    assert len(set(users)) == 1  # the same person, the same pseudonyms, whatever the API
    person = json.loads(users[0])
    assert (
        person["summary"].split(" led")[0] == f"{person['name']['first']} {person['name']['last']}"
    )
    assert lines[0]["response"]["status"] == 200 and lines[1]["response"]["stream"] is True
    # the capture is a dataset and a sample
    assert len(list(iter_requests(out))) == 5
    assert read_sample([out]).records[0]["id"] == person["id"]


def test_raw_keeps_real_data_and_says_so(server, tmp_path):
    out = tmp_path / "raw.jsonl"
    proxy = Proxy(server.url, out, "--raw")
    try:
        httpx.post(
            proxy.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES},
            timeout=30,
        ).raise_for_status()
    finally:
        err = proxy.stop()
    assert "WARNING: --raw" in err and "REAL personal data" in err
    assert "Whitfield" in out.read_text()


def test_a_body_too_deep_to_anonymize_is_refused_and_the_proxy_stays_up(server, tmp_path):
    """A body nesting more than 64 deep is refused with an OpenAI-style 400 (it was a 500 from a
    RecursionError); a prompt holding such JSON is anonymized as text; the next request passes."""
    out = tmp_path / "deep.jsonl"
    proxy = Proxy(server.url, out)
    deep = b"[" * 100 + b"]" * 100
    prompt = json.dumps({"mail": "margaret.whitfield@acme-corp.com", "x": json.loads(deep)})
    try:
        refused = httpx.post(
            proxy.url + "/v1/chat/completions",
            content=b'{"model": "%s", "messages": [], "x": %s}' % (MODEL.encode(), deep),
            headers={"content-type": "application/json"},
            timeout=30,
        )
        passed = httpx.post(
            proxy.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]},
            timeout=30,
        )
    finally:
        proxy.stop()
    assert refused.status_code == 400
    assert "more than 64 deep" in refused.json()["error"]["message"]
    assert passed.status_code == 200
    [line] = out.read_bytes().splitlines()
    assert b"acme-corp" not in line and b"whitfield" not in line.lower()


def test_unreachable_upstream_and_non_loopback_are_one_line_errors(tmp_path):
    port = free_port()
    for args, message in (
        (("--upstream", f"http://127.0.0.1:{port}"), "unreachable"),
        (("--upstream", "http://192.0.2.1:80"), "not a loopback"),
        (("--upstream", f"http://127.0.0.1:{port}", "--listen", "0.0.0.0:8000"), "--listen"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "capture",
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--out",
                str(tmp_path / "c.jsonl"),
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_pseudonyms_are_consistent_and_keyed():
    one, two = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32)
    first = one.json(PERSON)
    assert one.json(PERSON) == first
    assert two.json(PERSON) != first
    text = json.dumps(first)
    assert [s for s in SECRETS if s in text] == []
    assert one.text("Call Margaret Whitfield on +44 20 7946 0958.").startswith(
        f"Call {first['name']['first']} {first['name']['last']} on "
    )
