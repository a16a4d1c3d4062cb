"""OOM for real (SIGKILL, CUDA error), host memory, model load, and /admin/faults."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import openai
import psutil
import pytest

from .conftest import MODEL, wait_for

CHAT = "/v1/chat/completions"
TINY = "qwen2.5-0.5b-1.5gb"  # 12 KiB of KV per token, 28,815 tokens of KV capacity


def chat(server, content: str = "hello", **extra) -> httpx.Response:
    body = {"model": extra.pop("model", MODEL), "messages": [{"role": "user", "content": content}]}
    return httpx.post(server.url + CHAT, json={**body, **extra}, timeout=30)


def test_oom_kill_dies_of_sigkill_after_logging_the_cuda_message(start_server):
    server = start_server("--profile", TINY, "--oom", "kill", "--speed", "max")
    with pytest.raises(httpx.HTTPError):
        chat(server, "x" * (4 * 30_000), model="qwen2.5:0.5b")  # 30K tokens > 28.8K of KV
    assert server.process.wait(10) == -signal.SIGKILL
    log = server.stderr()
    assert "CUDA out of memory. Tried to allocate " in log and "GiB total capacity" in log


def test_oom_error_answers_500_and_keeps_serving(start_server):
    server = start_server("--profile", TINY, "--speed", "max")
    response = chat(server, "x" * (4 * 30_000), model="qwen2.5:0.5b")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "cuda_out_of_memory"
    assert error["message"].startswith("CUDA out of memory. Tried to allocate 351.")
    assert server.metric("harness_oom_total") == 1
    assert server.metric("harness_sim_kv_cache_bytes") == 0  # nothing leaked
    assert chat(server, model="qwen2.5:0.5b").status_code == 200


def test_host_memory_holds_ram_in_proportion_to_the_kv_cache(start_server):
    ratio = 0.5
    server = start_server(
        "--profile", TINY, "--speed", "max", "--host-memory", "--host-memory-ratio", str(ratio)
    )
    rss = psutil.Process(server.process.pid).memory_info().rss
    tokens = 0
    for i in range(4):  # a running context keeps 4 x ~5K tokens in the KV cache
        response = chat(server, f"{i} " + "y" * 20_000, model="qwen2.5:0.5b", context_id="job-1")
        assert response.status_code == 200
        tokens = response.json()["usage"]["prompt_tokens"]
    held = server.metric("harness_host_memory_held_bytes")
    kv = server.metric("harness_sim_kv_cache_bytes")
    assert kv >= tokens * 12 * 1024 and held == pytest.approx(kv * ratio, rel=0.01)
    grown = psutil.Process(server.process.pid).memory_info().rss - rss
    assert grown > 0.8 * held  # really resident, not just accounted


def test_running_context_grows_vram_and_is_trimmed_at_the_threshold(start_server):
    server = start_server("--profile", TINY, "--speed", "max", "--trim-every", "0")
    vram0 = server.metric("harness_sim_vram_bytes")
    first = chat(server, "z" * 20_000, model="qwen2.5:0.5b", context_id="c").json()
    grown = server.metric("harness_sim_vram_bytes") - vram0
    held = first["usage"]["total_tokens"]
    # blocks of 16 tokens, 2 x 24 layers x 2 kv heads x 64 x 2 bytes per token
    assert grown == -(-held // 16) * 16 * 12 * 1024
    for _ in range(5):  # 5K tokens per exchange: the 87.5% threshold (28,672) is passed
        assert chat(server, "z" * 20_000, model="qwen2.5:0.5b", context_id="c").status_code == 200
    assert server.metric("harness_context_trims_total") >= 1
    assert server.metric("harness_context_tokens") <= 0.5 * 32768 + 6000


def test_model_load_time_gates_readiness(start_server):
    server = start_server("--load-time", "1.5", "--speed", "max", ready=False)
    ready = httpx.get(server.url + "/health/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "loading"
    loading = chat(server)
    assert loading.status_code == 503 and loading.json()["error"]["code"] == "model_loading"
    wait_for(server.is_ready, 10, "the simulated load to finish")
    assert chat(server).status_code == 200


def test_admin_rejects_wrong_tokens_and_bad_faults(server):
    response = server.admin({"fault": "hang", "seconds": 1}, token="wrong")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_admin_token"
    no_token = httpx.post(server.url + "/admin/faults", json={"fault": "crash"})
    assert no_token.status_code == 401
    bad = server.admin({"fault": "meltdown"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "fault"
    assert server.admin({"fault": "hang", "seconds": -1}).status_code == 400


def test_admin_disabled_without_a_token_says_how_to_enable():
    from harness.server.faults import check_admin
    from harness.server.protocol import ApiError

    with pytest.raises(ApiError) as disabled:
        check_admin("127.0.0.1", "Bearer x", None)
    assert disabled.value.status == 403 and "--admin-token" in disabled.value.message
    with pytest.raises(ApiError) as remote:
        check_admin("10.1.2.3", "Bearer x", "x")
    assert remote.value.status == 403
    check_admin("::1", "Bearer x", "x")


def test_error_rate_latency_and_hang_faults(server):
    assert server.admin({"fault": "error_rate", "rate": 1.0, "seconds": 30}).json()["rate"] == 1.0
    failed = chat(server)
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "injected_fault"
    assert server.admin({"fault": "clear"}).status_code == 200
    assert chat(server).status_code == 200

    server.admin({"fault": "latency", "extra_seconds": 0.3, "seconds": 30})
    start = time.perf_counter()
    assert chat(server).status_code == 200
    assert time.perf_counter() - start >= 0.3
    server.admin({"fault": "clear"})

    answer = server.admin({"fault": "hang", "seconds": 0.6}).json()
    assert answer == {"injected": "hang", "seconds": 0.6}
    start = time.perf_counter()
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    assert time.perf_counter() - start >= 0.5  # nothing answered during the hang


def test_injected_oom_in_error_mode_fails_in_flight_streams(start_server):
    server = start_server("--speed", "1", "--set", "itl_s=0.05")

    async def stream_and_inject() -> str:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=60, stream=True
        )
        try:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    await asyncio.to_thread(server.admin, {"fault": "oom"})
        except openai.APIError as error:
            return str(error)
        return "finished without error"

    assert "CUDA out of memory" in asyncio.run(stream_and_inject())
    assert server.metric("vllm:num_requests_running") == 0
    assert chat(server, max_tokens=2).status_code == 200


def test_injected_oom_in_kill_mode_and_crash(start_server):
    killed = start_server("--oom", "kill", "--speed", "max")
    answer = killed.admin({"fault": "oom"})
    assert answer.status_code == 200 and answer.json()["mode"] == "kill"
    assert killed.process.wait(10) == -signal.SIGKILL
    assert "torch.OutOfMemoryError: CUDA out of memory." in killed.stderr()

    crashed = start_server("--speed", "max")
    assert crashed.admin({"fault": "crash"}).json() == {"injected": "crash", "exit_code": 1}
    assert crashed.process.wait(10) == 1
    assert "Traceback (most recent call last)" in crashed.stderr()
