"""The memory model against hand-computed cases: KV blocks, vLLM's pool, preemption, the prefix
cache, slow faults, an organic OOM at a predicted request, Ollama's unload and reload.

The arithmetic runs in-process on a simulator with round numbers (1 KiB of KV per token, so a
16-token block is 16 KiB); the rest starts real servers and sends real HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import signal

import httpx
import psutil
import pytest

from harness.server import PROFILES
from harness.server.context import ContextPolicy
from harness.server.faults import Faults
from harness.server.generation import count_chat_tokens
from harness.server.memory import BLOCK_TOKENS, KvHolder, SlowFaults, blocks_for, shared_prefix
from harness.server.metrics import ServerMetrics
from harness.server.protocol import ApiError, GenerateRequest
from harness.server.simulator import Plan, Running, Simulator

from .conftest import wait_for

KiB, MiB = 1024, 1024**2
TINY = "qwen2.5-0.5b-1.5gb"


def toy_profile(kind: str = "seed", **changes) -> object:
    """1 KiB of KV per token (2 x 1 layer x 1 head x 256 x 2 bytes), 1 MiB of weights, a 2 MiB
    GPU: 1 MiB = 64 blocks for KV (vLLM at utilization 1.0)."""
    fields = dict(
        name="toy",
        layers=1,
        kv_heads=1,
        head_dim=256,
        kv_dtype_bytes=2,
        weights_bytes=1 * MiB,
        runtime_overhead_bytes=0,
        vram_total_bytes=2 * MiB,
        context_limit=1024,
        max_num_seqs=8,
        activation_bytes_per_token=0,
        gpu_memory_utilization=1.0,
        kind=kind,
    )
    fields.update(changes)
    profile = dataclasses.replace(PROFILES[TINY], **fields)
    profile.check()
    return profile


def simulator(profile, **options) -> Simulator:
    return Simulator(
        profile,
        metrics=ServerMetrics("toy"),
        faults=Faults(),
        context_policy=ContextPolicy(),
        speed=math.inf,
        **options,
    )


def request(user: str, system: str | None = None) -> GenerateRequest:
    messages = ([("system", system)] if system else []) + [("user", user)]
    return GenerateRequest(model="toy", messages=messages, max_tokens=16, stream=False)


def counter(sim: Simulator, name: str) -> float:
    for line in sim.metrics.exposition().decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


# -- KV blocks -------------------------------------------------------------------------------


def test_kv_is_held_in_blocks_of_16_tokens():
    assert [blocks_for(n) for n in (0, 1, 16, 17, 100, 120)] == [0, 1, 1, 2, 7, 8]
    sim = simulator(toy_profile())
    holder = KvHolder()
    sim.allocate(holder, 100)  # 7 blocks of 16 KiB
    assert (holder.kv_tokens, holder.kv_blocks, sim.kv_blocks) == (100, 7, 7)
    assert sim.vram_used_bytes() == 1 * MiB + 7 * 16 * KiB
    sim.allocate(holder, 12)  # 112 tokens still fit in 7 blocks
    assert sim.kv_blocks == 7
    sim.allocate(holder, 8)  # 120 tokens: an eighth block
    assert sim.kv_blocks == 8
    sim.release(holder, 50)  # 70 tokens left: 5 blocks
    assert (holder.kv_tokens, holder.kv_blocks, sim.kv_blocks) == (70, 5, 5)
    assert sim.kv_usage() == pytest.approx(5 / 64)
    sim.release(holder)
    assert sim.kv_blocks == 0 and sim.vram_used_bytes() == 1 * MiB


def test_seed_kind_runs_out_of_memory_when_a_block_does_not_fit():
    sim = simulator(toy_profile())
    holder = KvHolder()
    sim.allocate(holder, 64 * BLOCK_TOKENS)  # all 64 blocks: VRAM exactly full
    assert sim.vram_used_bytes() == 2 * MiB
    with pytest.raises(ApiError) as oom:
        sim.allocate(holder, 1)
    assert oom.value.status == 500 and "Tried to allocate 0.02 MiB" in oom.value.message
    assert sim.kv_blocks == 64  # the failed allocation took nothing


def test_vllm_reserves_its_pool_at_start_up():
    profile = toy_profile("vllm", gpu_memory_utilization=0.75, context_limit=256)
    # 0.75 x 2 MiB = 1.5 MiB usable, less 1 MiB of weights: a 512 KiB pool of 32 blocks
    assert profile.kv_capacity_bytes == 512 * KiB and profile.kv_capacity_blocks == 32
    sim = simulator(profile)
    assert sim.vram_used_bytes() == 1 * MiB + 512 * KiB  # flat-high before any request
    holder = KvHolder()
    sim.allocate(holder, 100)
    assert sim.vram_used_bytes() == 1 * MiB + 512 * KiB  # blocks come from the pool
    assert sim.kv_usage() == pytest.approx(7 / 32)
    with pytest.raises(ValueError, match="cannot hold one 1024-token sequence"):
        toy_profile("vllm", gpu_memory_utilization=0.75)  # 32 blocks = 512 tokens < 1024


def test_vllm_keeps_prefill_activations_in_room_reserved_at_start_up():
    """vLLM sizes its pool after a profiling run has measured one chunk's activations: with
    every slot prefilling at once VRAM stays flat and nothing runs out of memory, where the
    seed kind on the same GPU would need a chunk's activations per prefill."""

    async def scenario() -> None:
        profile = toy_profile(
            "vllm",
            gpu_memory_utilization=0.75,
            context_limit=128,
            activation_bytes_per_token=1 * KiB,
            prefill_chunk_tokens=64,
        )
        # 1.5 MiB usable, less 64 KiB of activations and 1 MiB of weights: a 448 KiB pool
        assert profile.reserved_activation_bytes == 64 * KiB
        assert profile.kv_capacity_bytes == 448 * KiB
        sim = simulator(profile)
        flat = sim.vram_used_bytes()
        assert flat == int(0.75 * 2 * MiB)
        seen = []

        async def one(user: str) -> None:
            await sim.complete(sim.plan(request(user)))
            seen.append(sim.vram_used_bytes())

        await asyncio.gather(*(one(f"{i}" * 200) for i in range(8)))  # 8 prefills of 64+
        assert seen and set(seen) == {flat}
        assert sim.activation_bytes == 0

    asyncio.run(scenario())


# -- preemption --------------------------------------------------------------------------------


def admitted(sim: Simulator, prompt_tokens: int, name: str) -> Running:
    plan = Plan(
        model="toy",
        messages=[("user", name)],
        answer="",
        seed=0,
        max_tokens=None,
        context=None,
        prefix=None,
        new_prompt_tokens=prompt_tokens,
        prompt_tokens=prompt_tokens,
    )
    running = Running(plan, 0.0)
    assert sim._grant(running)
    return running


def test_preemption_frees_the_newest_sequence_and_recomputes_it_later():
    async def scenario() -> None:
        sim = simulator(toy_profile("vllm", context_limit=512))  # 64 blocks
        a, b, c, d = (admitted(sim, 200, n) for n in "abcd")  # 13 blocks each: 52
        assert sim.kv_blocks == 52 and sim.running == 4
        for _ in range(3):  # a decodes 48 tokens: 248 tokens, 16 blocks (+3)
            await sim._grow(a, 16)
        assert (a.kv_blocks, sim.kv_blocks) == (16, 55)
        for _ in range(9):  # b: 344 tokens, 22 blocks (+9): the last 9 free blocks
            await sim._grow(b, 16)
        assert sim._free_blocks() == 0 and counter(sim, "vllm:num_preemptions_total") == 0
        await sim._grow(c, 16)  # c needs a 14th block: d, the newest, is preempted
        assert counter(sim, "vllm:num_preemptions_total") == 1
        assert d.preempted and not d.admitted and d.kv_blocks == 0 and sim.running == 3
        assert sim.kv_blocks == 64 - 13 + 1  # d's 13 blocks freed, c took one of them
        waiting = asyncio.ensure_future(sim._grow(d, 16))  # d waits at the front of the line
        await asyncio.sleep(0)
        assert not waiting.done() and sim.waiting == 1
        sim.close(b, finished=True)  # b's 22 blocks come back: d is admitted again
        await waiting
        assert d.admitted and d.kv_tokens == 200 + 16 and d.kv_blocks == 14
        assert counter(sim, "vllm:num_preemptions_total") == 1

    asyncio.run(scenario())


def test_a_lone_sequence_preempts_itself_only_when_it_must():
    async def scenario() -> None:
        sim = simulator(toy_profile("vllm"))
        a = admitted(sim, 1000, "a")  # 63 blocks of 64
        await sim._grow(a, 16)  # 1016 tokens: 64 blocks
        assert counter(sim, "vllm:num_preemptions_total") == 0 and sim._free_blocks() == 0

    asyncio.run(scenario())


# -- the prefix cache ---------------------------------------------------------------------------


def test_prefix_cache_hits_cover_the_shared_system_prompts_full_blocks():
    async def scenario() -> None:
        profile = toy_profile("vllm", context_limit=512)
        sim = simulator(profile)
        system = "s" * 400  # 100 tokens + 4 of template: 104 tokens, 6 full blocks (96 tokens)
        _, tokens = shared_prefix([("system", system), ("user", "x")])
        assert tokens == 104
        first = sim.plan(request("a" * 200, system))
        assert first.new_prompt_tokens == count_chat_tokens(first.messages) == 3 + 104 + 54
        await sim.complete(first)  # a miss: it computes the prefix, which is then cached
        assert counter(sim, "vllm:prefix_cache_queries_total") == 161
        assert counter(sim, "vllm:prefix_cache_hits_total") == 0
        assert sim.prefix_cache.blocks == 6 and sim.prefix_cache.idle_blocks == 6
        assert sim.kv_blocks == 6  # the request's own blocks were freed, the prefix stays
        second = sim.plan(request("b" * 200, system))
        running = await sim.start(second)
        assert running.cached_tokens == 96
        assert running.kv_blocks == blocks_for(161) - 6  # only the candidate's part is new
        assert sim.prefix_cache.idle_blocks == 0  # in use
        sim.close(running, finished=False)
        assert counter(sim, "vllm:prefix_cache_queries_total") == 2 * 161
        assert counter(sim, "vllm:prefix_cache_hits_total") == 96
        other = sim.plan(request("c" * 200, "another job " * 30))
        await sim.complete(other)  # a different job misses
        assert counter(sim, "vllm:prefix_cache_hits_total") == 96

    asyncio.run(scenario())


def test_a_prefix_hit_shortens_ttft(start_server):
    server = start_server("--profile", "llama3.1-8b-16gb-vllm", "--speed", "1")
    system = "Score the candidate for this job. " * 400  # ~3,400 tokens of shared prompt

    def ttft(user: str) -> float:
        body = {
            "model": "llama3.1:8b",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "max_tokens": 1,
        }
        response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 200
        return response.elapsed.total_seconds()

    cold = ttft("candidate one")
    warm = ttft("candidate two")
    # 3,400 prefilled tokens at 0.1 ms (+30 ms) against ~10: the hit must save most of it
    assert warm < cold - 0.15
    assert server.metric("vllm:prefix_cache_hits_total") >= 3300


# -- slow faults and host memory ---------------------------------------------------------------


def test_leak_and_fragmentation_raise_the_floor():
    async def scenario() -> None:
        faults = SlowFaults(leak_mb_per_1k_requests=100.0, fragmentation=0.25)
        sim = simulator(toy_profile(vram_total_bytes=64 * MiB), slow_faults=faults)
        for user in ("a" * 400, "b" * 400):  # 107 tokens: 7 blocks, plus 16 decoded: 8
            await sim.complete(sim.plan(request(user)))
        assert sim.leaked_bytes == 2 * 100_000  # 100 MB per 1,000 requests
        assert sim.fragmented_bytes == 2 * (8 * 16 * KiB) // 4  # a quarter of each freed block
        assert sim.vram_used_bytes() == 1 * MiB + sim.leaked_bytes + sim.fragmented_bytes

    asyncio.run(scenario())


def test_host_memory_follows_leak_and_fragmentation(start_server):
    server = start_server(
        "--profile", TINY, "--speed", "max", "--host-memory", "--host-memory-ratio", "1",
        "--leak-mb-per-1k-requests", "4000",
    )  # fmt: skip
    rss = psutil.Process(server.process.pid).memory_info().rss
    body = {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "hello"}]}
    for _ in range(10):  # 10 x 4 MB leaked
        assert httpx.post(server.url + "/v1/chat/completions", json=body).status_code == 200
    assert server.metric("harness_sim_leaked_bytes") == 40_000_000
    held = server.metric("harness_host_memory_held_bytes")
    assert held == math.ceil(40_000_000 / MiB) * MiB  # whole MiB, nothing else is held
    assert psutil.Process(server.process.pid).memory_info().rss - rss > 0.8 * held


def test_an_organic_oom_kill_arrives_at_the_predicted_request(start_server):
    profile = PROFILES[TINY]
    leak = 16_000_000  # bytes per finished request
    server = start_server(
        "--profile", TINY, "--speed", "max", "--oom", "kill",
        "--leak-mb-per-1k-requests", str(leak * 1000 / 1_000_000),
    )  # fmt: skip
    content = "x" * 4000  # 1,000 tokens + 4 + 3: 1,007 tokens, 63 blocks
    prompt = 1007
    block = 16 * profile.kv_bytes_per_token
    activation = min(prompt, profile.prefill_chunk_tokens) * profile.activation_bytes_per_token
    peak = max(blocks_for(prompt) * block + activation, blocks_for(prompt + 16) * block)
    base = profile.weights_bytes + profile.runtime_overhead_bytes
    # request i (from 0) finds i leaks left behind; the first that cannot fit its peak dies
    predicted = next(i for i in range(1000) if base + i * leak + peak > profile.vram_total_bytes)
    assert 10 < predicted < 40
    body = {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": content}]}
    for i in range(predicted):
        response = httpx.post(server.url + "/v1/chat/completions", json={**body, "max_tokens": 16})
        assert response.status_code == 200, i
        assert response.json()["usage"]["prompt_tokens"] == prompt
    with pytest.raises(httpx.TransportError):
        httpx.post(server.url + "/v1/chat/completions", json={**body, "max_tokens": 16})
    assert server.process.wait(10) == -signal.SIGKILL
    assert "torch.OutOfMemoryError: CUDA out of memory" in server.stderr()


# -- ollama: slots, keep_alive, unload and reload -----------------------------------------------


def test_ollama_unloads_after_keep_alive_and_loads_again(start_server):
    server = start_server(
        "--profile", "llama3.1-8b-16gb-ollama", "--speed", "100", "--set", "model_load_s=50"
    )  # fmt: skip
    loaded_vram = server.metric("harness_sim_vram_bytes")
    assert loaded_vram >= PROFILES["llama3.1-8b-16gb"].weights_bytes
    chat = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]}
    first = httpx.post(
        server.url + "/api/chat", json={**chat, "stream": False, "keep_alive": 0}, timeout=30
    )
    assert first.status_code == 200 and first.json()["load_duration"] == 0  # already loaded
    wait_for(lambda: server.metric("harness_model_unloads_total") == 1, 10, "the unload")
    assert server.metric("harness_sim_vram_bytes") == 0  # the runner left VRAM
    assert httpx.get(server.url + "/api/ps").json() == {"models": []}
    second = httpx.post(
        server.url + "/api/chat", json={**chat, "stream": False, "keep_alive": "5m"}, timeout=30
    )
    assert second.status_code == 200
    assert second.json()["load_duration"] >= 0.4e9  # 50 s of loading at 100x
    assert server.metric("harness_model_loads_total") == 1
    assert server.metric("harness_sim_vram_bytes") == loaded_vram
    models = httpx.get(server.url + "/api/ps").json()["models"]
    assert len(models) == 1 and models[0]["size_vram"] == loaded_vram


def test_ollama_queue_full_answers_503(start_server):
    server = start_server(
        "--profile", "llama3.1-8b-16gb-ollama", "--speed", "1",
        "--set", "max_num_seqs=1", "--set", "max_waiting=1", "--set", "itl_s=0.2",
    )  # fmt: skip
    body = {"model": "llama3.1:8b", "prompt": "hi", "stream": False, "options": {"num_predict": 8}}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post("/api/generate", json=body) for _ in range(4))
            )
        return sorted(a.status_code for a in answers)

    statuses = asyncio.run(burst())
    assert statuses == [200, 200, 503, 503]  # one running, one queued, two turned away
