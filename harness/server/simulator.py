"""The simulated GPU and model: profiles, KV-cache accounting, scheduling and the latency model.

Memory: VRAM = weights + runtime overhead + KV cache + prefill activations + what slow faults left
behind (a leak, allocator fragmentation). KV is held in blocks of 16 tokens; a token costs
2 (K and V) x layers x kv_heads x head_dim x dtype bytes. A profile's kind says how a server
spends it:

- `seed`, the team's batch server: up to max_num_seqs sequences run, and an allocation that does
  not fit is an out-of-memory error (or death, --oom kill);
- `vllm`: gpu_memory_utilization of the GPU is reserved at start-up for a block pool (VRAM is flat
  and high); a sequence that needs a block when none is free preempts the newest running one,
  whose KV is recomputed when it is scheduled again; the shared system prompt is prefix-cached;
- `ollama`: OLLAMA_NUM_PARALLEL slots (max_num_seqs) and a queue, KV that grows with the contexts
  in the slots (OOM when they outgrow VRAM), and a model that unloads after keep_alive idle
  seconds and loads again (model_load_s) for the next request.

Time: TTFT = prefill overhead + prefilled tokens x prefill cost; tokens then follow at the
inter-token latency with jitter; both grow with the running batch and with the KV each sequence
attends to. `speed` divides every simulated delay (infinity: no delay at all).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from harness.server.context import Context, ContextPolicy, ContextStore
from harness.server.faults import Faults, cuda_oom_message, die_of_oom
from harness.server.generation import (
    TOKEN_CHARS,
    count_chat_tokens,
    request_seed,
    respond,
    split_tokens,
)
from harness.server.memory import (
    BLOCK_TOKENS,
    HostMemory,
    KvHolder,
    PrefixCache,
    PrefixEntry,
    SlowFaults,
    blocks_for,
    shared_prefix,
)
from harness.server.metrics import ServerMetrics
from harness.server.pacing import Pacer
from harness.server.protocol import ApiError, GenerateRequest

GiB = 1024**3
MiB = 1024**2
KiB = 1024
KINDS = ("seed", "vllm", "ollama")


@dataclass(frozen=True)
class Profile:
    """A model on a GPU: what the memory and the latency model are computed from."""

    name: str
    description: str
    model: str
    aliases: tuple[str, ...]
    family: str
    parameter_size: str
    quantization: str
    weights_bytes: int
    layers: int
    kv_heads: int
    head_dim: int
    kv_dtype_bytes: int
    vram_total_bytes: int
    runtime_overhead_bytes: int
    context_limit: int
    max_num_seqs: int
    max_waiting: int
    prefill_overhead_s: float
    prefill_per_token_s: float
    itl_s: float
    itl_jitter: float
    load_slowdown: float
    activation_bytes_per_token: int = 0  # prefill activations, held while a chunk is prefilled
    prefill_chunk_tokens: int = 2048  # prefill runs in chunks (vLLM's chunked prefill, llama.cpp)
    kind: str = "seed"  # how the server spends its memory: one of KINDS
    gpu_memory_utilization: float = 0.9  # vllm: the share of VRAM reserved at start-up
    keep_alive_s: float = 300.0  # ollama: idle seconds before the model unloads (< 0: never)
    model_load_s: float = 0.0  # ollama: seconds to load the model again after an unload

    @property
    def kv_bytes_per_token(self) -> int:
        """2 (K and V) x layers x kv_heads x head_dim x dtype bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_dtype_bytes

    @property
    def block_bytes(self) -> int:
        return BLOCK_TOKENS * self.kv_bytes_per_token

    @property
    def reserved_activation_bytes(self) -> int:
        """vllm: the peak activations of one prefill chunk, measured by vLLM's profiling run at
        start-up and kept out of the pool, so prefills never allocate; 0 for other kinds."""
        if self.kind != "vllm":
            return 0
        return self.prefill_chunk_tokens * self.activation_bytes_per_token

    @property
    def kv_capacity_bytes(self) -> int:
        """VRAM for the KV cache once weights and runtime overhead are loaded: what is left
        (seed, ollama), or vLLM's pool within gpu_memory_utilization (less the activations
        its profiling run reserved)."""
        usable = self.vram_total_bytes
        if self.kind == "vllm":
            usable = int(self.gpu_memory_utilization * usable) - self.reserved_activation_bytes
        return usable - self.weights_bytes - self.runtime_overhead_bytes

    @property
    def kv_capacity_tokens(self) -> int:
        return self.kv_capacity_bytes // self.kv_bytes_per_token

    @property
    def kv_capacity_blocks(self) -> int:
        return self.kv_capacity_bytes // self.block_bytes

    def with_overrides(self, overrides: dict[str, str]) -> Profile:
        """A copy with fields replaced from text values; ValueError names a bad field or value."""
        types = {f.name: f.type for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, text in overrides.items():
            if key not in types or key == "aliases":
                settable = ", ".join(k for k in types if k != "aliases")
                raise ValueError(f"unknown profile field {key!r}; settable fields: {settable}")
            kind = {"int": int, "float": float, "str": str}[types[key]]
            try:
                changes[key] = kind(float(text)) if kind is int else kind(text)
            except ValueError:
                raise ValueError(f"{key}={text!r} is not a valid {types[key]}") from None
        profile = dataclasses.replace(self, **changes)
        profile.check()
        return profile

    def check(self) -> None:
        """ValueError when the numbers cannot describe a working server."""
        if self.kind not in KINDS:
            raise ValueError(f"profile {self.name}: kind must be one of {', '.join(KINDS)}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"profile {self.name}: gpu_memory_utilization must be in (0, 1]")
        if self.kv_capacity_bytes < self.block_bytes:
            fixed = (self.weights_bytes + self.runtime_overhead_bytes) / GiB
            raise ValueError(
                f"profile {self.name}: weights + runtime overhead "
                f"({fixed:.2f} GiB) leave no room "
                f"for a KV cache in {self.vram_total_bytes / GiB:.2f} GiB of VRAM"
            )
        if self.kind == "vllm" and self.kv_capacity_tokens < self.context_limit:
            raise ValueError(  # vLLM refuses to start in this case too
                f"profile {self.name}: the KV-cache pool ({self.kv_capacity_tokens} tokens at "
                f"gpu_memory_utilization {self.gpu_memory_utilization:g}) cannot hold one "
                f"{self.context_limit}-token sequence; raise gpu_memory_utilization or lower "
                "context_limit"
            )
        positive = ("layers", "kv_heads", "head_dim", "kv_dtype_bytes", "context_limit")
        for key in (*positive, "max_num_seqs", "prefill_chunk_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"profile {self.name}: {key} must be at least 1")
        for key in (
            "max_waiting",
            "prefill_overhead_s",
            "prefill_per_token_s",
            "itl_s",
            "activation_bytes_per_token",
            "model_load_s",
        ):
            if getattr(self, key) < 0:
                raise ValueError(f"profile {self.name}: {key} must not be negative")
        if not 0 <= self.itl_jitter < 1:
            raise ValueError(f"profile {self.name}: itl_jitter must be in [0, 1)")


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="llama3.1-8b-16gb",
            description="Llama 3.1 8B Instruct, Q6_K weights, fp16 KV, on a 16 GB GPU",
            model="llama3.1:8b",
            aliases=("meta-llama/Llama-3.1-8B-Instruct",),
            family="llama",
            parameter_size="8.0B",
            quantization="Q6_K",
            weights_bytes=6_596_006_112,
            layers=32,
            kv_heads=8,
            head_dim=128,
            kv_dtype_bytes=2,
            vram_total_bytes=16 * GiB,
            runtime_overhead_bytes=1 * GiB,
            context_limit=32768,
            max_num_seqs=8,
            max_waiting=256,
            prefill_overhead_s=0.03,
            prefill_per_token_s=0.0001,
            itl_s=0.012,
            itl_jitter=0.15,
            load_slowdown=0.5,
            activation_bytes_per_token=128 * KiB,
            model_load_s=4.0,
        ),
        Profile(
            name="llama3.1-70b-80gb",
            description="Llama 3.1 70B Instruct, AWQ int4 weights, fp16 KV, on an 80 GB GPU",
            model="llama3.1:70b",
            aliases=("meta-llama/Llama-3.1-70B-Instruct",),
            family="llama",
            parameter_size="70.6B",
            quantization="AWQ-INT4",
            weights_bytes=39_770_000_000,
            layers=80,
            kv_heads=8,
            head_dim=128,
            kv_dtype_bytes=2,
            vram_total_bytes=80 * GiB,
            runtime_overhead_bytes=2 * GiB,
            context_limit=32768,
            max_num_seqs=32,
            max_waiting=1024,
            prefill_overhead_s=0.05,
            prefill_per_token_s=0.0003,
            itl_s=0.03,
            itl_jitter=0.1,
            load_slowdown=0.8,
            activation_bytes_per_token=256 * KiB,
            model_load_s=25.0,
        ),
        Profile(
            name="qwen2.5-0.5b-1.5gb",
            description="Qwen2.5 0.5B Instruct, fp16, on a 1.5 GB GPU slice (small, OOMs early)",
            model="qwen2.5:0.5b",
            aliases=("Qwen/Qwen2.5-0.5B-Instruct",),
            family="qwen2",
            parameter_size="494M",
            quantization="F16",
            weights_bytes=988_097_536,
            layers=24,
            kv_heads=2,
            head_dim=64,
            kv_dtype_bytes=2,
            vram_total_bytes=1536 * MiB,
            runtime_overhead_bytes=256 * MiB,
            context_limit=32768,
            max_num_seqs=4,
            max_waiting=64,
            prefill_overhead_s=0.005,
            prefill_per_token_s=0.00002,
            itl_s=0.004,
            itl_jitter=0.1,
            load_slowdown=0.3,
            activation_bytes_per_token=16 * KiB,
            prefill_chunk_tokens=512,
            model_load_s=1.0,
        ),
    )
}
_LLAMA_8B = PROFILES["llama3.1-8b-16gb"]
PROFILES.update(
    {
        p.name: p
        for p in (
            dataclasses.replace(
                _LLAMA_8B,
                name="llama3.1-8b-16gb-vllm",
                description="Llama 3.1 8B on a 16 GB GPU under vLLM: a block pool reserved at "
                "start-up (gpu_memory_utilization 0.9), preemption, prefix caching",
                kind="vllm",
                max_num_seqs=32,
            ),
            dataclasses.replace(
                _LLAMA_8B,
                name="llama3.1-8b-16gb-ollama",
                description="Llama 3.1 8B on a 16 GB GPU under Ollama: 4 parallel slots "
                "(OLLAMA_NUM_PARALLEL), a queue of 512, keep_alive 5 min, 4 s to load",
                kind="ollama",
                max_num_seqs=4,
                max_waiting=512,
            ),
        )
    }
)
DEFAULT_PROFILE = "llama3.1-8b-16gb"


@dataclass(slots=True)
class Plan:
    """One request, decided before it runs: what it will say and what it costs."""

    model: str
    messages: list[tuple[str, str]]
    answer: str
    seed: int
    max_tokens: int | None
    context: Context | None
    prefix: tuple[bytes, int] | None  # the shared system prompt: cache key and tokens
    keep_alive_s: float | None = None  # ollama: this request's keep_alive (None: the profile's)
    new_messages: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    prompt_tokens: int = 0
    new_prompt_tokens: int = 0
    text: str = ""
    output_tokens: int = 0
    finish_reason: str = "stop"
    has_turn: bool = False  # holds its context's turn (released when the request ends)
    queue_s: float = 0.0
    load_s: float = 0.0  # ollama: waited for the model to load
    ttft_s: float = 0.0
    e2e_s: float = 0.0


class Simulator:
    """The simulated GPU: admits sequences, accounts their KV cache, paces their tokens."""

    def __init__(
        self,
        profile: Profile,
        *,
        metrics: ServerMetrics,
        faults: Faults,
        context_policy: ContextPolicy,
        speed: float = 1.0,
        oom_mode: str = "error",
        host_memory_ratio: float = 0.0,
        load_time_s: float = 0.0,
        slow_faults: SlowFaults | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.metrics = metrics
        self.faults = faults
        self.speed = speed
        self.oom_mode = oom_mode
        self.slow_faults = slow_faults or SlowFaults()
        self.load_time_s = load_time_s
        self.contexts = ContextStore(context_policy, profile.context_limit, self)
        self.prefix_cache = PrefixCache()
        self.host = HostMemory(host_memory_ratio)
        self.running = 0
        self.kv_blocks = 0  # blocks held by sequences, contexts and the prefix cache
        self.leaked_bytes = 0
        self.fragmented_bytes = 0
        self.activation_bytes = 0
        self._clock = clock
        # Token timelines need sub-millisecond wakeups; an injected clock keeps loop sleeps.
        self._pacer = Pacer() if clock is time.monotonic else None
        self._started = clock()
        self._load_started = self._started
        self._load_seconds = load_time_s
        self._loaded = True
        self._loading: asyncio.Task[None] | None = None
        self._keep_alive_s = profile.keep_alive_s
        self._last_active = self._started
        self._unload_timer: asyncio.TimerHandle | None = None
        self._waiting: deque[tuple[asyncio.Future[None], Running]] = deque()
        self._waiting_for_turn = 0
        self._active: dict[Running, None] = {}  # admitted, oldest first
        self._leak_per_request = self.slow_faults.leak_bytes_per_request
        metrics.bind_gauges(
            {
                "running": lambda: self.running,
                "waiting": lambda: self.waiting,
                "kv_usage": self.kv_usage,
                "vram_used": self.vram_used_bytes,
                "vram_total": lambda: profile.vram_total_bytes,
                "kv_bytes": lambda: self.kv_blocks * profile.block_bytes,
                "leaked": lambda: self.leaked_bytes,
                "fragmented": lambda: self.fragmented_bytes,
                "activation": lambda: self.activation_bytes,
                "host_memory": lambda: self.host.held_bytes,
                "context_tokens": lambda: self.contexts.total_tokens,
                "ready": lambda: 1.0 if self.ready else 0.0,
                "loaded": lambda: 1.0 if self.load_fraction() >= 1 else 0.0,
                "speed": lambda: 0.0 if math.isinf(speed) else speed,
            }
        )

    # -- state -------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Requests accepted and not yet running: in line for a slot or for their context."""
        return len(self._waiting) + self._waiting_for_turn

    @property
    def ready(self) -> bool:
        """The start-up load is over (an unloaded Ollama model still answers: it loads again)."""
        return self.seconds_to_ready() <= 0

    def seconds_to_ready(self) -> float:
        return max(0.0, self.load_time_s - (self._clock() - self._started))

    def load_fraction(self) -> float:
        """Share of the weights in VRAM: a load ramps it up; an unloaded model holds none."""
        if not self._loaded:
            return 0.0
        if self._load_seconds <= 0:
            return 1.0
        return min(1.0, (self._clock() - self._load_started) / self._load_seconds)

    def vram_used_bytes(self) -> int:
        p = self.profile
        loaded = self.load_fraction()
        if loaded <= 0:
            return 0
        base = int(p.weights_bytes * loaded) + p.runtime_overhead_bytes
        if p.kind == "vllm":  # the pool and the activations' room, reserved once loaded
            kv = p.kv_capacity_bytes + p.reserved_activation_bytes if loaded >= 1 else 0
        else:
            kv = self.kv_blocks * p.block_bytes
        return base + kv + self.activation_bytes + self.leaked_bytes + self.fragmented_bytes

    def vram_fraction(self) -> float:
        return self.vram_used_bytes() / self.profile.vram_total_bytes

    def kv_usage(self) -> float:
        """Share of KV blocks in use (vLLM counts cached blocks nobody uses as free)."""
        in_use = self.kv_blocks - self.prefix_cache.idle_blocks
        return in_use / max(1, self.profile.kv_capacity_blocks)

    def expires_at(self) -> float | None:
        """ollama: the monotonic time the idle model unloads; None when it never does."""
        if self._keep_alive_s < 0:
            return None
        return self._last_active + self._keep_alive_s / self.speed

    # -- memory ------------------------------------------------------------------------------

    def _free_blocks(self) -> int:
        return self.profile.kv_capacity_blocks - self.kv_blocks

    def _fits(self, extra_bytes: int) -> bool:
        return self.vram_used_bytes() + extra_bytes <= self.profile.vram_total_bytes

    def _reclaim(self, blocks: int) -> bool:
        """vllm: free `blocks` blocks by evicting unused cached prefixes, then the least recently
        used contexts (in vLLM a conversation's KV is cached blocks too); False if short."""
        if self._free_blocks() < blocks:
            self.kv_blocks -= self.prefix_cache.evict(blocks - self._free_blocks())
        while self._free_blocks() < blocks and self.contexts.drop_oldest():
            pass
        return self._free_blocks() >= blocks

    def _take(self, holder: KvHolder, tokens: int) -> bool:
        """Hold KV for `tokens` more tokens; vllm: False when the pool has no room (the caller
        preempts); seed and ollama: out of memory when VRAM has no room."""
        if tokens <= 0:
            return True
        need = blocks_for(holder.kv_tokens + tokens) - holder.kv_blocks
        if need > 0:
            if self.profile.kind == "vllm":
                if not self._reclaim(need):
                    return False
            elif not self._fits(need * self.profile.block_bytes):
                self._out_of_memory(need * self.profile.block_bytes)
            self.kv_blocks += need
            holder.kv_blocks += need
        holder.kv_tokens += tokens
        self._follow_host()
        return True

    def allocate(self, holder: KvHolder, tokens: int) -> None:
        """Hold KV for `tokens` more tokens, or run out of memory as the --oom mode says."""
        if not self._take(holder, tokens):
            self._out_of_memory(tokens * self.profile.kv_bytes_per_token)

    def release(self, holder: KvHolder, tokens: int | None = None) -> None:
        """Free `tokens` of a holder's KV (all of it by default); the blocks no longer needed go
        back, less what fragmentation strands (not in vLLM's paged pool)."""
        tokens = holder.kv_tokens if tokens is None else min(tokens, holder.kv_tokens)
        if tokens <= 0:
            return
        holder.kv_tokens -= tokens
        freed = max(0, holder.kv_blocks - blocks_for(holder.kv_tokens))
        holder.kv_blocks -= freed
        self.kv_blocks -= freed
        if self.profile.kind != "vllm":
            self._fragment(freed * self.profile.block_bytes)
        self._follow_host()

    def move(self, source: KvHolder, target: KvHolder) -> None:
        """Hand a finished sequence's KV to its conversation context (no new allocation)."""
        target.kv_tokens += source.kv_tokens
        target.kv_blocks += source.kv_blocks
        source.kv_tokens = source.kv_blocks = 0

    def _fragment(self, freed_bytes: int) -> None:
        """Strand a share of a freed allocation, at most what VRAM still has room for."""
        share = self.slow_faults.fragmentation
        if share > 0 and freed_bytes > 0:
            room = self.profile.vram_total_bytes - self.vram_used_bytes()
            self.fragmented_bytes += max(0, min(int(freed_bytes * share), room))

    def _leak(self) -> None:
        """A finished request leaves its leak behind (at most what VRAM has room for: the
        allocation after it then fails)."""
        if self._leak_per_request:
            room = self.profile.vram_total_bytes - self.vram_used_bytes()
            self.leaked_bytes += max(0, min(self._leak_per_request, room))
            self._follow_host()

    def _follow_host(self) -> None:
        """--host-memory: hold host RAM in proportion to the simulated memory beyond the weights
        and runtime overhead (KV, activations, leak and fragmentation)."""
        if self.host.ratio:
            p = self.profile
            fixed = int(p.weights_bytes * self.load_fraction()) + p.runtime_overhead_bytes
            self.host.follow(max(0, self.vram_used_bytes() - fixed))

    def oom_message(self) -> str:
        """The CUDA OOM message for an allocation one block larger than the free VRAM."""
        p = self.profile
        free = max(0, p.vram_total_bytes - self.vram_used_bytes())
        return cuda_oom_message(free + p.block_bytes, p.vram_total_bytes, self.vram_used_bytes())

    def fail_running_with_oom(self) -> tuple[str, int]:
        """An injected OOM in error mode: every running sequence fails with the CUDA message."""
        self.metrics.oom.inc()
        message = self.oom_message()
        error = ApiError(500, message, type="server_error", code="cuda_out_of_memory")
        for holder in self._active:
            holder.failure = error
        return message, len(self._active)

    def _out_of_memory(self, tried_bytes: int) -> NoReturn:
        """An allocation that does not fit: die of SIGKILL (--oom kill) or fail this request."""
        self.metrics.oom.inc()
        p = self.profile
        message = cuda_oom_message(tried_bytes, p.vram_total_bytes, self.vram_used_bytes())
        if self.oom_mode == "kill":
            die_of_oom(message)
        raise ApiError(500, message, type="server_error", code="cuda_out_of_memory")

    # -- scheduling --------------------------------------------------------------------------

    def _grant(self, running: Running) -> bool:
        """Give a slot if one is free; vllm: only with blocks for the sequence's tokens so far
        (its prompt, plus what it generated before a preemption), found in the prefix cache or
        taken from the pool."""
        if self.running >= self.profile.max_num_seqs:
            return False
        if self.profile.kind == "vllm":
            plan = running.plan
            tokens = plan.new_prompt_tokens + running.generated
            hit = self._prefix_hit(plan)
            need = blocks_for(tokens) - (hit.blocks if hit is not None else 0)
            if not self._reclaim(need):
                return False
            running.cached_tokens = 0
            if hit is not None and plan.prefix is not None:
                running.prefix = self.prefix_cache.use(plan.prefix[0])
                running.cached_tokens = hit.blocks * BLOCK_TOKENS
            if not running.queried:  # vLLM counts each request's prompt once, in tokens
                running.queried = True
                self.metrics.prefix_cache_queries.inc(plan.new_prompt_tokens)
                self.metrics.prefix_cache_hits.inc(running.cached_tokens)
            self.kv_blocks += need
            running.kv_blocks += need
            running.kv_tokens = tokens - running.cached_tokens  # its own blocks' tokens
            self._follow_host()
        self.running += 1
        self._active[running] = None
        running.admitted = True
        return True

    def _prefix_hit(self, plan: Plan) -> PrefixEntry | None:
        if plan.prefix is None or plan.context is not None:
            return None
        return self.prefix_cache.peek(plan.prefix[0])

    async def _admit(self, running: Running, front: bool = False) -> float:
        """Take a slot in the running batch, waiting in line; 429 (ollama: 503) when the line is
        full. A preempted sequence waits at the front of the line, as vLLM requeues it."""
        if not self._waiting and self._grant(running):
            return 0.0
        p = self.profile
        if not front and len(self._waiting) >= p.max_waiting:
            self.metrics.rejected("queue_full")
            raise _queue_full(p.kind, self.running, len(self._waiting))
        future = asyncio.get_running_loop().create_future()
        item = (future, running)
        if front:
            self._waiting.appendleft(item)
        else:
            self._waiting.append(item)
        start = self._clock()
        try:
            await future
        except asyncio.CancelledError:
            if not future.done() or future.cancelled():
                self._waiting.remove(item)
            raise
        return self._clock() - start

    def _schedule(self) -> None:
        """Admit from the head of the line while the head fits (first come, first served)."""
        while self._waiting:
            future, running = self._waiting[0]
            if future.done():  # cancelled while waiting
                self._waiting.popleft()
                continue
            if not self._grant(running):
                return
            self._waiting.popleft()
            future.set_result(None)

    def _newest_running(self) -> Running:
        return next(reversed(self._active))

    def _preempt(self, victim: Running) -> None:
        """vLLM's recompute preemption: the victim's KV is freed, it waits to run again."""
        self.metrics.preemptions.inc()
        victim.preempted = True
        self._leave(victim)
        self.release(victim)

    def _leave(self, running: Running) -> None:
        """Give up the slot (and the prefix-cache entry), if the sequence had one."""
        if running.admitted:
            running.admitted = False
            del self._active[running]
            self.running -= 1
        if running.prefix is not None:
            self.prefix_cache.done(running.prefix)
            running.prefix = None

    async def _resume(self, running: Running) -> None:
        """A preempted sequence: back in line (at the front), then its prompt and the tokens it
        generated are computed again before it goes on."""
        running.preempted = False
        await self._admit(running, front=True)
        await self._prefill(running, running.kv_tokens, running.kv_tokens + running.cached_tokens)

    async def _grow(self, running: Running, tokens: int) -> bool:
        """Blocks for `tokens` more decoded tokens; vllm: preempt the newest sequence while the
        pool has none (this one, if it is the newest: it then waits and recomputes). True when
        this sequence was preempted and resumed (its timeline starts again)."""
        resumed = False
        while True:
            if running.preempted:
                await self._resume(running)
                resumed = True
            if self._take(running, tokens):
                running.generated += tokens
                return resumed
            self._preempt(self._newest_running())

    def _load_factor(self) -> float:
        p = self.profile
        if p.max_num_seqs <= 1:
            return 1.0
        return 1.0 + p.load_slowdown * (self.running - 1) / (p.max_num_seqs - 1)

    def _attention_factor(self, tokens: int) -> float:
        """Attending to `tokens` of KV reads it for every token, as the weights are read: each
        step slows by the KV bytes over the weight bytes."""
        p = self.profile
        return 1.0 + tokens * p.kv_bytes_per_token / p.weights_bytes

    def _itl_s(self, attended: int) -> float:
        return self.profile.itl_s * self._load_factor() * self._attention_factor(attended)

    async def _prefill(self, running: Running, tokens: int, attended: int) -> None:
        """Prefill `tokens` tokens (attending to `attended`), holding the activations of one
        chunk meanwhile: a prefill that does not fit them is an out-of-memory error (vllm:
        they live in the room reserved at start-up, so they never do)."""
        p = self.profile
        activation = min(tokens, p.prefill_chunk_tokens) * p.activation_bytes_per_token
        if p.kind == "vllm":
            activation = 0
        if activation and not self._fits(activation):
            self._out_of_memory(activation)
        self.activation_bytes += activation
        self._follow_host()
        try:
            cost = tokens * p.prefill_per_token_s * self._load_factor()
            busy = p.prefill_overhead_s + cost * self._attention_factor(attended)
            await self._pause(busy / self.speed + self.faults.extra_latency_s())
        finally:
            self.activation_bytes -= activation
            self._fragment(activation)
            self._follow_host()
        plan = running.plan
        if running.prefix is None and plan.prefix is not None and plan.context is None:
            self._cache_prefix(running, *plan.prefix)

    def _cache_prefix(self, running: Running, key: bytes, tokens: int) -> None:
        """The full blocks of a prefix just computed become cached: the cache owns them now."""
        blocks = min(tokens // BLOCK_TOKENS, running.kv_blocks)
        entry = self.prefix_cache.add(key, blocks)
        if entry is not None:
            running.kv_blocks -= blocks
            running.kv_tokens -= blocks * BLOCK_TOKENS
            running.prefix = entry
            running.cached_tokens = blocks * BLOCK_TOKENS

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await self._pause_until(self._clock() + seconds)

    async def _pause_until(self, deadline: float) -> None:
        if deadline <= self._clock():
            return
        if self._pacer is not None:
            await self._pacer.sleep_until(deadline)
        else:
            await asyncio.sleep(deadline - self._clock())

    def shutdown(self) -> None:
        """Release what the simulator holds outside Python (the pacer's timer)."""
        if self._pacer is not None:
            self._pacer.close()

    # -- ollama: keep_alive, unload and load -------------------------------------------------

    async def _ensure_loaded(self, plan: Plan) -> None:
        """ollama: an unloaded model loads again (model_load_s, VRAM ramping up) first."""
        if self._unload_timer is not None:
            self._unload_timer.cancel()
            self._unload_timer = None
        if plan.keep_alive_s is not None:
            self._keep_alive_s = plan.keep_alive_s
        if self._loaded and self._loading is None:
            return
        start = self._clock()
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load())
        await asyncio.shield(self._loading)
        plan.load_s = self._clock() - start

    async def _load(self) -> None:
        self.metrics.model_loads.inc()
        self._loaded = True
        self._load_started = self._clock()
        self._load_seconds = self.profile.model_load_s / self.speed
        try:
            await self._pause(self._load_seconds)
        finally:
            self._loading = None

    def _idle(self) -> None:
        """ollama: nothing runs or waits; unload once keep_alive passes with nothing new."""
        self._last_active = self._clock()
        if self.profile.kind != "ollama" or self.running or self.waiting or not self._loaded:
            return
        if self._keep_alive_s < 0:
            return
        if self._unload_timer is not None:
            self._unload_timer.cancel()
        delay = self._keep_alive_s / self.speed
        self._unload_timer = asyncio.get_running_loop().call_later(delay, self._unload)

    def _unload(self) -> None:
        """The runner exits: weights, KV, contexts, leaks and fragments leave VRAM together."""
        self._unload_timer = None
        if self.running or self.waiting or self._loading is not None:
            return
        self.contexts.clear()
        self.prefix_cache.clear()
        self.kv_blocks = self.leaked_bytes = self.fragmented_bytes = 0
        self._loaded = False
        self.metrics.model_unloads.inc()
        self._follow_host()

    # -- requests ----------------------------------------------------------------------------

    def plan(self, request: GenerateRequest) -> Plan:
        """Decide a request's answer; without a context also its cost (400 if it cannot fit)."""
        if not self.ready:
            raise ApiError(
                503,
                f"The model is still loading ({self.seconds_to_ready():.1f} s left); "
                "retry when GET /health/ready answers 200.",
                type="server_error",
                code="model_loading",
            )
        messages = request.messages
        seed = request_seed(messages)
        context_id = request.context_id
        if context_id is None and self.contexts.policy.per_job:
            context_id = _job_context_id(messages)
        plan = Plan(
            model=request.model,
            messages=messages,
            answer=respond(messages, seed, request.json_mode),
            seed=seed,
            max_tokens=request.max_tokens,
            context=self.contexts.get(context_id) if context_id else None,
            prefix=shared_prefix(messages) if self.profile.kind == "vllm" else None,
            keep_alive_s=request.keep_alive_s,
        )
        if plan.context is None:
            self._bind(plan)
        return plan

    def _bind(self, plan: Plan) -> None:
        """What the prompt costs now: held context tokens count, a held system prompt is not
        repeated; the context is trimmed first. 400 when prompt + completion pass the limit."""
        context = plan.context
        messages = plan.messages
        plan.new_messages = context.new_messages(messages) if context else messages
        new_tokens = count_chat_tokens(plan.new_messages)
        if context:
            self.contexts.before_request(context, new_tokens)
        held = context.tokens if context else 0
        limit = self.profile.context_limit
        room = limit - held - new_tokens
        wanted = plan.max_tokens
        if room < 1 or (wanted is not None and wanted > room):
            self.metrics.rejected("context_length")
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{held + new_tokens + (wanted or 1)} tokens ({held + new_tokens} in the messages, "
                f"{wanted or 1} in the completion). Please reduce the length of the messages "
                "or completion.",
                param="messages",
                code="context_length_exceeded",
            )
        cap = min(wanted or room, room)
        answer = plan.answer
        tokens = -(-len(answer) // TOKEN_CHARS)
        plan.finish_reason = "length" if tokens > cap else "stop"
        plan.prompt_tokens = held + new_tokens
        plan.new_prompt_tokens = new_tokens
        plan.text = answer[: cap * TOKEN_CHARS]
        plan.output_tokens = min(tokens, cap)

    async def start(self, plan: Plan) -> Running:
        """Admit a request and hold its prompt's KV: 400 (context), 429, 500 (OOM, injected)
        fail here. A request in a context first waits for the requests before it to end."""
        start = self._clock()
        self.faults.check_error_rate()
        if plan.context is not None:
            self._waiting_for_turn += 1
            try:
                await plan.context.turn.acquire()
            finally:
                self._waiting_for_turn -= 1
            plan.has_turn = True
            try:
                self._bind(plan)
            except BaseException:
                self._release_turn(plan)
                raise
        running = Running(plan, start)
        try:
            if self.profile.kind == "ollama":
                await self._ensure_loaded(plan)
            plan.queue_s = await self._admit(running)
            if self.profile.kind != "vllm":
                self.allocate(running, plan.new_prompt_tokens)
            await self._prefill(
                running, plan.new_prompt_tokens - running.cached_tokens, plan.prompt_tokens
            )
        except BaseException:
            self.close(running, finished=False)
            raise
        return running

    async def complete(self, plan: Plan) -> Plan:
        """Run a request to the end (non-streaming); fills the plan's timings."""
        running = await self.start(plan)
        finished = False
        try:
            running.raise_failure()
            plan.ttft_s = self._clock() - running.start
            n = plan.output_tokens
            deadline = self._clock()
            done = 0
            while done < n:
                step = min(BLOCK_TOKENS, n - done)
                if await self._grow(running, step):
                    deadline = self._clock()
                gaps = step - 1 if done == 0 else step  # the first token came with the prefill
                deadline += gaps * self._itl_s(plan.prompt_tokens + done) / self.speed
                done += step
                await self._pause_until(deadline)
                running.raise_failure()
            finished = True
        finally:
            self.close(running, finished)
        return plan

    async def tokens(self, running: Running) -> AsyncIterator[str]:
        """Yield an admitted request's answer token by token at the simulated pace."""
        plan = running.plan
        finished = False
        try:
            jitter = random.Random(plan.seed)
            p = self.profile
            itl_histogram = self.metrics.itl
            deadline = last = self._clock()
            pieces = split_tokens(plan.text)
            for i, piece in enumerate(pieces):
                if i:
                    # Tokens follow a fixed timeline, so event-loop delays do not accumulate.
                    u = jitter.uniform(-1.0, 1.0) * p.itl_jitter
                    deadline += self._itl_s(plan.prompt_tokens + i) * (1.0 + u) / self.speed
                    await self._pause_until(deadline)
                if self.faults.hung:
                    await self.faults.wait_while_hung()
                step = min(BLOCK_TOKENS, len(pieces) - i) if i % BLOCK_TOKENS == 0 else 0
                if (step or running.preempted) and await self._grow(running, step):
                    deadline = self._clock()
                running.raise_failure()
                now = self._clock()
                if i:
                    itl_histogram.observe(now - last)
                else:
                    plan.ttft_s = now - running.start
                last = now
                yield piece
            finished = True
        finally:
            self.close(running, finished)

    def _release_turn(self, plan: Plan) -> None:
        if plan.has_turn and plan.context is not None:
            plan.has_turn = False
            plan.context.turn.release()

    def close(self, running: Running, finished: bool) -> None:
        """Free a request's slot and KV (or hand the KV to its context); idempotent."""
        if running.closed:
            return
        running.closed = True
        self._leave(running)
        plan = running.plan
        m = self.metrics
        if finished and plan.context is not None and self.contexts.holds(plan.context):
            self.move(running, plan.context.kv)
            self.contexts.after_request(
                plan.context, plan.new_messages, plan.text, plan.output_tokens
            )
        else:
            self.release(running)
        self._release_turn(plan)
        if finished:
            self._leak()
        self._schedule()
        self._idle()
        if not finished:
            m.finished["abort"].inc()
            return
        plan.e2e_s = self._clock() - running.start
        n = plan.output_tokens
        m.prompt_tokens.inc(plan.prompt_tokens)
        m.generation_tokens.inc(n)
        m.finished[plan.finish_reason].inc()
        m.ttft.observe(plan.ttft_s)
        m.e2e.observe(plan.e2e_s)
        m.queue_time.observe(plan.queue_s)
        m.request_prompt_tokens.observe(plan.prompt_tokens)
        m.request_generation_tokens.observe(n)
        if n > 1:
            m.tpot.observe((plan.e2e_s - plan.ttft_s) / (n - 1))


class Running(KvHolder):
    """An admitted request: its plan, when it started, its KV and its place in the scheduler."""

    __slots__ = (
        "admitted",
        "cached_tokens",
        "closed",
        "generated",
        "plan",
        "preempted",
        "prefix",
        "queried",
        "start",
    )

    def __init__(self, plan: Plan, start: float) -> None:
        super().__init__()
        self.plan = plan
        self.start = start
        self.closed = False
        self.admitted = False
        self.preempted = False
        self.generated = 0  # decoded tokens with KV (recomputed after a preemption)
        self.prefix: PrefixEntry | None = None
        self.cached_tokens = 0  # prompt tokens found in (or given to) the prefix cache
        self.queried = False  # counted in the prefix-cache queries

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


def _queue_full(kind: str, running: int, waiting: int) -> ApiError:
    if kind == "ollama":
        return ApiError(
            503,
            "server busy, please try again.  maximum pending requests exceeded",
            type="server_error",
            code="server_busy",
        )
    return ApiError(
        429,
        f"The server is at capacity: {running} requests running and {waiting} waiting "
        "(the queue is full). Retry after a short backoff.",
        type="requests",
        code="rate_limit_exceeded",
    )


def _job_context_id(messages: list[tuple[str, str]]) -> str | None:
    """--context-per-job: the running context of the request's job (its first system prompt)."""
    for role, content in messages:
        if role == "system":
            return "job-" + hashlib.blake2b(content.encode(), digest_size=8).hexdigest()
    return None
