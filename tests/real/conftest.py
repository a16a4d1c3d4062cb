"""The real-server tier: llama.cpp's server (llama-cpp-python[server]) with a tiny random-weight
GGUF model written here. Run by `make test-real` (and `.ci/run`); deselected from `make test`.
Without the package every test is skipped with one line saying why, never passed silently."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.net import free_port

ROOT = Path(__file__).resolve().parents[2]
N = 60  # requests per scale run: about 40 s on 2 cores with two OOM kills
SERVER_OPTIONS = ("--n_ctx", "8192", "--flash_attn", "true", "--n_batch", "4096")
SERVER_OPTIONS += ("--n_ubatch", "4096", "--model_alias", "tiny")
# By default a new request cuts a running stream short, which then ends with [DONE] and no content.
SERVER_OPTIONS += ("--interrupt_requests", "false")


def _missing() -> str | None:
    try:
        import gguf  # noqa: F401
        import llama_cpp.server.app  # noqa: F401
    except Exception as exc:  # an ImportError, or a built library that does not load
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def real_deps() -> None:
    why = _missing()
    if why is not None:
        pytest.skip(
            f"real-server tier: llama-cpp-python[server] and gguf are not usable here ({why}); "
            "`make test-real` builds them"
        )


@pytest.fixture(scope="session")
def dataset(real_deps, tmp_path_factory) -> Path:
    from harness.driver.dataset import generated

    cache = tmp_path_factory.mktemp("datasets")
    return generated(N, 0, cache)[0].path


@pytest.fixture(scope="session")
def tiny_model(dataset, tmp_path_factory) -> Path:
    from tests.real.tiny_gguf import corpus_of, write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("model") / "tiny.gguf", corpus_of(dataset))


def server_command(model: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--port", str(port)]


@dataclass
class LlamaServer:
    url: str
    process: subprocess.Popen


def wait_serving(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, "llama_cpp.server exited at start"
        assert time.monotonic() < deadline, f"llama_cpp.server not serving after {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def llama_server(tiny_model, tmp_path_factory) -> Iterator[LlamaServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*server_command(tiny_model, port), *SERVER_OPTIONS], stdout=out, stderr=out
        )
    server = LlamaServer(f"http://127.0.0.1:{port}", process)
    try:
        wait_serving(server.url, process)
        yield server
    finally:
        process.terminate()
        process.wait(30)
