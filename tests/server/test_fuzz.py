"""Fuzzers over the reference server: hypothesis-mutated requests and schemathesis over
/openapi.json. Neither may get a 5xx, and /health stays 200 throughout (issue 17)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from harness.server import openapi
from harness.server.app import ROUTES

from .fuzzing import requests

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as shared:
        yield shared


def test_every_route_is_in_the_openapi_document(server):
    served = httpx.get(server.url + "/openapi.json").json()
    assert served == orjson.loads(openapi.BODY)
    described = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert described == {(method, path) for method, path, _ in ROUTES}


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_hypothesis_fuzz_gets_no_server_error(client, request):
    method, path, body = request
    response = client.request(method, path, content=body)
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error if path.startswith("/api/") else set(error) >= {"message", "type", "code"}


class HealthProbe:
    """GET /health in a loop on a thread; every status seen is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(0.05):
                try:
                    self.statuses.append(client.get(self.url + "/health").status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_schemathesis_over_every_operation_gets_no_server_error(start_server, tmp_path):
    server = start_server("--speed", "max", "--api-key", "sk-fuzz")
    command = [str(SCHEMATHESIS), "run", server.url + "/openapi.json"]
    command += ["-H", "Authorization: Bearer sk-fuzz", "--max-examples", "30", "--seed", "1"]
    command += ["--checks", "not_a_server_error,unsupported_method", "--no-color"]
    command += ["--request-timeout", "30", "--max-failures", "5"]
    with HealthProbe(server.url) as probe:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "23 passed" in result.stdout or "Tested: 23" in result.stdout, result.stdout[-2000:]
    assert probe.statuses and set(probe.statuses) == {200}
