"""The target probe against a real `harness serve` and against servers that answer, over real
HTTP, exactly what vLLM, Ollama and llama.cpp's C++ server answer on their routes."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import orjson
import pytest

from harness.errors import UserError
from harness.targets import choose_model, probe
from tests.server.conftest import Server

# Route -> (status, body) as the real servers answer (vLLM 0.10, Ollama 0.12, llama-server b6000).
VLLM_ROUTES = {
    "/version": (200, b'{"version":"0.10.1"}'),
    "/health": (200, b""),
    "/v1/models": (
        200,
        b'{"object":"list","data":[{"id":"Qwen/Qwen2.5-7B-Instruct","object":"model",'
        b'"owned_by":"vllm","root":"Qwen/Qwen2.5-7B-Instruct","max_model_len":16384}]}',
    ),
    "/metrics": (
        200,
        b"# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        b"# TYPE vllm:num_requests_running gauge\n"
        b'vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 0.0\n'
        b'vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 0.0\n',
    ),
}
OLLAMA_ROUTES = {
    "/": (200, b"Ollama is running"),
    "/api/version": (200, b'{"version":"0.12.3"}'),
    "/api/tags": (
        200,
        b'{"models":[{"name":"llama3.1:8b","model":"llama3.1:8b","size":4920753328},'
        b'{"name":"qwen2.5:7b","model":"qwen2.5:7b","size":4683087332}]}',
    ),
    "/v1/models": (
        200,
        b'{"object":"list","data":[{"id":"llama3.1:8b","object":"model","owned_by":"library"},'
        b'{"id":"qwen2.5:7b","object":"model","owned_by":"library"}]}',
    ),
    "POST /api/show": (
        200,
        b'{"parameters":"num_ctx                        8192\\nstop \\"<|eot_id|>\\"",'
        b'"model_info":{"general.architecture":"llama","llama.context_length":131072}}',
    ),
}
LLAMA_SERVER_ROUTES = {
    "/health": (200, b'{"status":"ok"}'),
    "/props": (
        200,
        b'{"default_generation_settings":{"n_ctx":8192,"params":{"n_predict":-1}},'
        b'"total_slots":4,"model_path":"/models/tiny.gguf","build_info":"b6000-abc"}',
    ),
    "/v1/models": (
        200,
        b'{"object":"list","data":[{"id":"tiny.gguf","object":"model","owned_by":"llamacpp",'
        b'"meta":{"n_ctx_train":4096}}]}',
    ),
    "/metrics": (200, b"# HELP llamacpp:prompt_tokens_total x\nllamacpp:prompt_tokens_total 0\n"),
}


class _Canned(http.server.ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def canned() -> Iterator:
    servers: list[_Canned] = []

    def start(routes: dict[str, tuple[int, bytes]]) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, key: str) -> None:
                status, body = routes.get(key, (404, b'{"detail":"Not Found"}'))
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(self.path)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self._answer("POST " + self.path)

            def log_message(self, *args: object) -> None:
                pass

        server = _Canned(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_reference_server_is_known_with_its_model_context_and_metrics(tmp_path):
    server = Server(tmp_path / "data", ("--served-model-name", "tiny-7b"))
    try:
        target = probe(server.url)
        models = orjson.loads(httpx.get(server.url + "/v1/models").content)
    finally:
        server.stop()
    assert target.kind == "harness"
    assert target.models == ("tiny-7b",)
    assert target.max_model_len == models["data"][0]["max_model_len"] > 0
    assert target.health_url == server.url + "/health/ready"
    assert target.metrics_url == server.url + "/metrics"
    assert "vllm:num_requests_running" in target.metric_names
    assert choose_model(target, None) == "tiny-7b"


def test_vllm_is_known_by_its_version_and_metrics(canned):
    url = canned(VLLM_ROUTES)
    target = probe(url)
    assert (target.kind, target.version) == ("vllm", "0.10.1")
    assert (target.max_model_len, target.max_model_len_source) == (
        16384,
        "/v1/models max_model_len",
    )
    assert target.health_url == url + "/health"
    assert target.metric_names == ("vllm:num_requests_running", "vllm:kv_cache_usage_perc")
    assert choose_model(target, None) == "Qwen/Qwen2.5-7B-Instruct"


def test_ollama_lists_its_models_and_cuts_prompts_at_num_ctx(canned):
    url = canned(OLLAMA_ROUTES)
    target = probe(url, model="llama3.1:8b")
    assert (target.kind, target.version) == ("ollama", "0.12.3")
    assert target.models == ("llama3.1:8b", "qwen2.5:7b")
    assert (target.max_model_len, target.max_model_len_source) == (8192, "/api/show num_ctx")
    assert target.metrics_url is None and target.health_url == url + "/api/version"
    with pytest.raises(UserError, match=r"serves 2 models \(llama3.1:8b, qwen2.5:7b\); pick one"):
        choose_model(target, None)
    assert choose_model(target, "qwen2.5:7b") == "qwen2.5:7b"


def test_llama_server_context_is_its_per_slot_share(canned):
    url = canned(LLAMA_SERVER_ROUTES)
    target = probe(url)
    assert target.kind == "llama.cpp" and target.models == ("tiny.gguf",)
    assert (target.max_model_len, target.max_model_len_source) == (2048, "/props n_ctx / 4 slots")
    assert target.health_url == url + "/health"


def test_a_server_that_is_not_an_llm_server_is_a_one_line_error(canned):
    url = canned({"/": (200, b"<html>hello</html>")})
    with pytest.raises(UserError, match="not as an LLM server we know"):
        probe(url)


def test_nothing_listening_is_a_one_line_error():
    from harness.net import free_port

    with pytest.raises(UserError, match="nothing answers at"):
        probe(f"http://127.0.0.1:{free_port()}")


@pytest.mark.parametrize(
    ("command", "url", "health", "context"),
    [
        (
            ["vllm", "serve", "m", "--max-model-len", "16384"],
            "http://127.0.0.1:8000",
            "/health",
            16384,
        ),
        (
            ["python", "-m", "vllm.entrypoints.openai.api_server", "--port=8100"],
            "http://127.0.0.1:8100",
            "/health",
            None,
        ),
        (["/usr/bin/ollama", "serve"], "http://127.0.0.1:11434", "/api/version", None),
        (
            ["python", "-m", "llama_cpp.server", "--model", "x.gguf"],
            "http://127.0.0.1:8000",
            "/v1/models",
            2048,
        ),
        (
            ["llama-server", "-m", "x.gguf", "-c", "4096", "--host", "0.0.0.0"],
            "http://127.0.0.1:8080",
            "/health",
            4096,
        ),
        (
            [
                *("env", "-u", "CUDA_VISIBLE_DEVICES", "VLLM_CPU_KVCACHE_SPACE=1", "python", "-m"),
                *("vllm.entrypoints.openai.api_server", "--max-model-len", "8192"),
            ],
            "http://127.0.0.1:8000",
            "/health",
            8192,
        ),
        (["./my-server", "--port", "9000"], "http://127.0.0.1:9000", "/v1/models", None),
        (["./my-server"], None, "/v1/models", None),
    ],
)
def test_where_a_serve_command_listens_and_says_it_is_ready(command, url, health, context):
    from harness.targets import serve_context, serve_health_path, serve_url

    assert serve_url(command) == url
    assert serve_health_path(command) == health
    assert (serve_context(command) or (None,))[0] == context
