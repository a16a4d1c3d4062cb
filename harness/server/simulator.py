"""The simulated GPU and model: profiles, KV-cache accounting, scheduling and the latency model.

Memory: VRAM = weights + runtime overhead + KV cache, where each token held costs
2 (K and V) x layers x kv_heads x head_dim x dtype bytes. Unlike vLLM (which preempts), this
server admits up to max_num_seqs sequences and runs out of memory when their KV cache does
not fit, as the team's server did. Time: TTFT = prefill overhead + new prompt tokens x prefill
cost; tokens then follow at the inter-token latency with jitter; both grow with the running
batch. `speed` divides every simulated delay (infinity: no delay at all).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from harness.server.context import Context, ContextPolicy, ContextStore, KvHolder
from harness.server.faults import Faults, cuda_oom_message, die_of_oom
from harness.server.generation import (
    TOKEN_CHARS,
    count_chat_tokens,
    request_seed,
    respond,
    split_tokens,
)
from harness.server.metrics import ServerMetrics
from harness.server.protocol import ApiError, GenerateRequest

GiB = 1024**3
MiB = 1024**2
DECODE_BLOCK_TOKENS = 16  # KV is allocated in blocks while decoding, like vLLM's paged cache


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

    @property
    def kv_bytes_per_token(self) -> int:
        """2 (K and V) x layers x kv_heads x head_dim x dtype bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_dtype_bytes

    @property
    def kv_capacity_bytes(self) -> int:
        """VRAM left for the KV cache once weights and runtime overhead are loaded."""
        return self.vram_total_bytes - self.weights_bytes - self.runtime_overhead_bytes

    @property
    def kv_capacity_tokens(self) -> int:
        return self.kv_capacity_bytes // self.kv_bytes_per_token

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
        if self.kv_capacity_bytes < self.kv_bytes_per_token:
            fixed = (self.weights_bytes + self.runtime_overhead_bytes) / GiB
            raise ValueError(
                f"profile {self.name}: weights + runtime overhead "
                f"({fixed:.2f} GiB) leave no room "
                f"for a KV cache in {self.vram_total_bytes / GiB:.2f} GiB of VRAM"
            )
        positive = ("layers", "kv_heads", "head_dim", "kv_dtype_bytes", "context_limit")
        for key in (*positive, "max_num_seqs"):
            if getattr(self, key) < 1:
                raise ValueError(f"profile {self.name}: {key} must be at least 1")
        for key in ("max_waiting", "prefill_overhead_s", "prefill_per_token_s", "itl_s"):
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
        ),
    )
}
DEFAULT_PROFILE = "llama3.1-8b-16gb"


@dataclass(slots=True)
class Plan:
    """One request, decided before it runs: what it will say and what it costs."""

    model: str
    prompt_tokens: int
    new_prompt_tokens: int
    text: str
    output_tokens: int
    finish_reason: str
    seed: int
    context: Context | None
    new_messages: list[tuple[str, str]]
    queue_s: float = 0.0
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.metrics = metrics
        self.faults = faults
        self.speed = speed
        self.oom_mode = oom_mode
        self.host_memory_ratio = host_memory_ratio
        self.load_time_s = load_time_s
        self.contexts = ContextStore(context_policy, profile.context_limit, self)
        self.running = 0
        self.kv_tokens = 0
        self.host_bytes = 0
        self._clock = clock
        self._started = clock()
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._active: set[KvHolder] = set()
        metrics.bind_gauges(
            {
                "running": lambda: self.running,
                "waiting": lambda: len(self._waiting),
                "kv_usage": self.kv_usage,
                "vram_used": self.vram_used_bytes,
                "vram_total": lambda: profile.vram_total_bytes,
                "kv_bytes": lambda: self.kv_tokens * profile.kv_bytes_per_token,
                "host_memory": lambda: self.host_bytes,
                "context_tokens": lambda: self.contexts.total_tokens,
                "ready": lambda: 1.0 if self.ready else 0.0,
            }
        )

    # -- state -------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def load_fraction(self) -> float:
        """Share of the weights loaded: the simulated model load ramps VRAM up over load_time."""
        if self.load_time_s <= 0:
            return 1.0
        return min(1.0, (self._clock() - self._started) / self.load_time_s)

    @property
    def ready(self) -> bool:
        return self.load_fraction() >= 1.0

    def seconds_to_ready(self) -> float:
        return max(0.0, self.load_time_s - (self._clock() - self._started))

    def vram_used_bytes(self) -> int:
        p = self.profile
        loaded = self.load_fraction()
        if loaded <= 0:
            return 0
        weights = int(p.weights_bytes * loaded)
        return weights + p.runtime_overhead_bytes + self.kv_tokens * p.kv_bytes_per_token

    def vram_fraction(self) -> float:
        return self.vram_used_bytes() / self.profile.vram_total_bytes

    def kv_usage(self) -> float:
        return self.kv_tokens / max(1, self.profile.kv_capacity_tokens)

    # -- memory ------------------------------------------------------------------------------

    def allocate(self, holder: KvHolder, tokens: int) -> None:
        """Hold KV for `tokens` more tokens, or run out of memory as the --oom mode says."""
        if tokens <= 0:
            return
        p = self.profile
        if self.kv_tokens + tokens > p.kv_capacity_tokens:
            self._out_of_memory(tokens * p.kv_bytes_per_token)
        self.kv_tokens += tokens
        holder.kv_tokens += tokens
        if self.host_memory_ratio > 0:
            size = int(tokens * p.kv_bytes_per_token * self.host_memory_ratio)
            holder.host_chunks.append(b"\x5a" * size)  # filled, so the pages are really resident
            self.host_bytes += size

    def release(self, holder: KvHolder, tokens: int | None = None) -> None:
        """Free `tokens` of a holder's KV (all of it by default), with its host memory."""
        tokens = holder.kv_tokens if tokens is None else min(tokens, holder.kv_tokens)
        if tokens <= 0:
            return
        keep = holder.kv_tokens - tokens
        self.kv_tokens -= tokens
        holder.kv_tokens = keep
        if holder.host_chunks:
            self.host_bytes -= sum(map(len, holder.host_chunks))
            holder.host_chunks.clear()
            if keep:
                size = int(keep * self.profile.kv_bytes_per_token * self.host_memory_ratio)
                holder.host_chunks.append(b"\x5a" * size)
                self.host_bytes += size

    def move(self, source: KvHolder, target: KvHolder) -> None:
        """Hand a finished sequence's KV to its conversation context (no new allocation)."""
        target.kv_tokens += source.kv_tokens
        target.host_chunks.extend(source.host_chunks)
        source.kv_tokens = 0
        source.host_chunks = []

    def oom_message(self) -> str:
        """The CUDA OOM message for an allocation one block larger than the free KV cache."""
        p = self.profile
        free = p.kv_capacity_bytes - self.kv_tokens * p.kv_bytes_per_token
        tried = free + DECODE_BLOCK_TOKENS * p.kv_bytes_per_token
        return cuda_oom_message(tried, p.vram_total_bytes, self.vram_used_bytes())

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

    async def _admit(self) -> float:
        """Take a slot in the running batch, waiting in line; 429 when the line is full."""
        p = self.profile
        if self.running < p.max_num_seqs and not self._waiting:
            self.running += 1
            return 0.0
        if len(self._waiting) >= p.max_waiting:
            self.metrics.rejected("queue_full")
            raise ApiError(
                429,
                f"The server is at capacity: {self.running} requests running and "
                f"{len(self._waiting)} waiting (the queue is full). Retry after a short backoff.",
                type="requests",
                code="rate_limit_exceeded",
            )
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        start = self._clock()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._leave()  # the slot was already ours: pass it on
            else:
                self._waiting.remove(future)
            raise
        return self._clock() - start

    def _leave(self) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes straight to the next in line
                return
        self.running -= 1

    def _load_factor(self) -> float:
        p = self.profile
        if p.max_num_seqs <= 1:
            return 1.0
        return 1.0 + p.load_slowdown * (self.running - 1) / (p.max_num_seqs - 1)

    def _prefill_s(self, new_tokens: int) -> float:
        p = self.profile
        busy = p.prefill_overhead_s + new_tokens * p.prefill_per_token_s * self._load_factor()
        return busy / self.speed

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    # -- requests ----------------------------------------------------------------------------

    def plan(self, request: GenerateRequest) -> Plan:
        """Decide a request's answer and cost; trims its context first; 400 if it cannot fit."""
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
        answer = respond(messages, seed, request.json_mode)
        context = self.contexts.get(request.context_id) if request.context_id else None
        new_messages = context.new_messages(messages) if context else messages
        new_tokens = count_chat_tokens(new_messages)
        if context:
            self.contexts.before_request(context, new_tokens)
        held = context.tokens if context else 0
        limit = self.profile.context_limit
        room = limit - held - new_tokens
        wanted = request.max_tokens
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
        tokens = -(-len(answer) // TOKEN_CHARS)
        finish = "length" if tokens > cap else "stop"
        return Plan(
            model=request.model,
            prompt_tokens=held + new_tokens,
            new_prompt_tokens=new_tokens,
            text=answer[: cap * TOKEN_CHARS],
            output_tokens=min(tokens, cap),
            finish_reason=finish,
            seed=seed,
            context=context,
            new_messages=new_messages,
        )

    async def start(self, plan: Plan) -> Running:
        """Admit a request and hold its prompt's KV: 429, 500 (OOM, injected) fail here."""
        start = self._clock()
        self.faults.check_error_rate()
        plan.queue_s = await self._admit()
        running = Running(plan, start)
        self._active.add(running)
        try:
            self.allocate(running, plan.new_prompt_tokens)
        except BaseException:
            self.close(running, finished=False)
            raise
        return running

    async def complete(self, plan: Plan) -> Plan:
        """Run a request to the end (non-streaming); fills the plan's timings."""
        running = await self.start(plan)
        finished = False
        try:
            await self._pause(
                self._prefill_s(plan.new_prompt_tokens) + self.faults.extra_latency_s()
            )
            running.raise_failure()
            plan.ttft_s = self._clock() - running.start
            n = plan.output_tokens
            self.allocate(running, n)
            await self._pause(max(0, n - 1) * self.profile.itl_s * self._load_factor() / self.speed)
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
            await self._pause(
                self._prefill_s(plan.new_prompt_tokens) + self.faults.extra_latency_s()
            )
            jitter = random.Random(plan.seed)
            p = self.profile
            itl_histogram = self.metrics.itl
            deadline = last = self._clock()
            pieces = split_tokens(plan.text)
            for i, piece in enumerate(pieces):
                if i:
                    # Tokens follow a fixed timeline, so event-loop delays do not accumulate.
                    u = jitter.uniform(-1.0, 1.0) * p.itl_jitter
                    deadline += p.itl_s * self._load_factor() * (1.0 + u) / self.speed
                    await self._pause(deadline - self._clock())
                if self.faults.hung:
                    await self.faults.wait_while_hung()
                if i % DECODE_BLOCK_TOKENS == 0:
                    self.allocate(running, min(DECODE_BLOCK_TOKENS, len(pieces) - i))
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

    def close(self, running: Running, finished: bool) -> None:
        """Free a request's slot and KV (or hand the KV to its context); idempotent."""
        if running.closed:
            return
        running.closed = True
        self._active.discard(running)
        self._leave()
        plan = running.plan
        m = self.metrics
        if finished and plan.context is not None and self.contexts.holds(plan.context):
            self.move(running, plan.context.kv)
            self.contexts.after_request(
                plan.context, plan.new_messages, plan.text, plan.output_tokens
            )
        else:
            self.release(running)
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
    """An admitted request: its plan, when it started, and its KV."""

    __slots__ = ("closed", "plan", "start")

    def __init__(self, plan: Plan, start: float) -> None:
        super().__init__()
        self.plan = plan
        self.start = start
        self.closed = False

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure
