"""Running conversation contexts, as the team's batch server keeps them, and how they are trimmed.

A request that names a `context_id` is answered after everything earlier in that context: its
prompt counts the held tokens, and its messages and answer stay in the KV cache afterwards
(a repeated system prompt is held once). Trims drop messages, and so free simulated VRAM and
--host-memory RAM: every `trim_every` requests (periodic), when the context passes `threshold`
of the context limit (threshold), and with the aggressive strategy whenever simulated VRAM is
past `vram_warning` (vram_pressure). Requests of one context run one after the other, in order.
With `per_job`, requests that name no context share one per job (their system prompt), as the
team's batch server keeps one running context per batch. The simulator tracks sizes, not texts.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from harness.server.generation import MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMING_TOKENS, count_tokens
from harness.server.memory import KvHolder

if TYPE_CHECKING:
    from harness.server.simulator import Simulator

STRATEGIES = ("sliding_window", "importance", "hybrid", "aggressive")


@dataclass(frozen=True)
class ContextPolicy:
    """When and how contexts are trimmed."""

    strategy: str = "hybrid"
    trim_every: int = 50  # requests; 0 disables periodic trims
    threshold: float = 0.875  # share of the context limit that triggers a trim
    vram_warning: float = 0.90  # share of simulated VRAM that triggers an aggressive trim
    keep_fraction: float = 0.5  # a trim keeps at most this share of the context limit
    recent_messages: int = 4  # hybrid: the newest messages are kept before anything else
    max_contexts: int = 64  # least recently used contexts beyond this are dropped
    per_job: bool = False  # requests without a context_id share one context per system prompt


@dataclass(slots=True)
class Entry:
    """One held message: its size and how much it matters when trimming."""

    role: str
    tokens: int
    importance: float


def select_kept(
    entries: Sequence[Entry], budget: int, strategy: str, recent: int = 4
) -> list[Entry]:
    """The entries a trim keeps, in their original order; system messages are always kept.

    sliding_window keeps the newest that fit; importance keeps the most important (newest first
    on ties); hybrid keeps the newest `recent` then the most important; aggressive keeps the
    newest exchange only.
    """
    pinned = [i for i, e in enumerate(entries) if e.role == "system"]
    others = [i for i, e in enumerate(entries) if e.role != "system"]
    used = sum(entries[i].tokens for i in pinned)

    def by_importance(indices: list[int]) -> list[int]:
        return sorted(indices, key=lambda i: (entries[i].importance, i), reverse=True)

    contiguous = strategy in ("sliding_window", "aggressive")
    if strategy == "sliding_window":
        order = others[::-1]
    elif strategy == "importance":
        order = by_importance(others)
    elif strategy == "hybrid":
        split = max(0, len(others) - recent)
        order = others[split:][::-1] + by_importance(others[:split])
    elif strategy == "aggressive":
        order = others[-2:][::-1]
    else:
        raise ValueError(f"unknown trim strategy {strategy!r}; choose one of {STRATEGIES}")
    kept = set(pinned)
    for i in order:
        if used + entries[i].tokens > budget:
            if contiguous:
                break
            continue
        kept.add(i)
        used += entries[i].tokens
    return [entries[i] for i in sorted(kept)]


class Context:
    """One running conversation held in the simulated KV cache."""

    def __init__(self, context_id: str) -> None:
        self.id = context_id
        self.kv = KvHolder()
        self.entries: list[Entry] = []
        self.requests = 0
        self.turn = asyncio.Lock()  # held by the request being answered in this context
        self._system_keys: set[bytes] = set()

    @property
    def tokens(self) -> int:
        return self.kv.kv_tokens

    def new_messages(self, messages: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The messages not held yet: a system prompt already in the context is not repeated."""
        return [m for m in messages if m[0] != "system" or _key(m[1]) not in self._system_keys]

    def append(self, messages: Sequence[tuple[str, str]], answer: str, answer_tokens: int) -> None:
        for role, content in messages:
            if role == "system":
                self._system_keys.add(_key(content))
            importance = math.inf if role == "system" else 0.5
            self.entries.append(
                Entry(role, count_tokens(content) + MESSAGE_OVERHEAD_TOKENS, importance)
            )
        self.entries.append(
            Entry("assistant", answer_tokens + REPLY_PRIMING_TOKENS, _answer_importance(answer))
        )
        self.requests += 1


class ContextStore:
    """The contexts of one server, least recently used first, and the trim policy."""

    def __init__(self, policy: ContextPolicy, context_limit: int, simulator: Simulator) -> None:
        if policy.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown trim strategy {policy.strategy!r}; choose one of {STRATEGIES}"
            )
        self.policy = policy
        self.context_limit = context_limit
        self._sim = simulator
        self._contexts: OrderedDict[str, Context] = OrderedDict()

    @property
    def total_tokens(self) -> int:
        return sum(c.tokens for c in self._contexts.values())

    def __len__(self) -> int:
        return len(self._contexts)

    def holds(self, context: Context) -> bool:
        """Whether the context is still live (not dropped as least recently used)."""
        return self._contexts.get(context.id) is context

    def get(self, context_id: str) -> Context:
        """The context with this id, created on first use; the least recently used is dropped."""
        context = self._contexts.get(context_id)
        if context is None:
            context = self._contexts[context_id] = Context(context_id)
            while len(self._contexts) > self.policy.max_contexts:
                self.drop_oldest()
        self._contexts.move_to_end(context_id)
        return context

    def drop_oldest(self) -> bool:
        """Drop the least recently used context and free its KV; False when there is none."""
        if not self._contexts:
            return False
        _, dropped = self._contexts.popitem(last=False)
        self._sim.release(dropped.kv)
        return True

    def clear(self) -> None:
        while self.drop_oldest():
            pass

    def before_request(self, context: Context, new_tokens: int) -> None:
        """Trim before a request: aggressively under VRAM pressure, else past the threshold."""
        policy = self.policy
        if self._sim.vram_fraction() >= policy.vram_warning:
            self.trim(context, "aggressive", "vram_pressure")
        elif context.tokens + new_tokens >= policy.threshold * self.context_limit:
            self.trim(context, policy.strategy, "threshold")

    def after_request(
        self, context: Context, messages: Sequence[tuple[str, str]], answer: str, answer_tokens: int
    ) -> None:
        """Record a finished exchange (its KV was moved in already); trim every N requests."""
        context.append(messages, answer, answer_tokens)
        every = self.policy.trim_every
        if every and context.requests % every == 0:
            self.trim(context, self.policy.strategy, "periodic")

    def trim(self, context: Context, strategy: str, reason: str) -> int:
        """Drop messages down to the strategy's budget; returns the tokens freed."""
        budget = int(self.policy.keep_fraction * self.context_limit)
        if strategy == "aggressive":
            budget //= 2
        kept = select_kept(context.entries, budget, strategy, self.policy.recent_messages)
        freed = context.tokens - sum(e.tokens for e in kept)
        if freed <= 0:
            return 0
        context.entries = kept
        self._sim.release(context.kv, freed)
        self._sim.metrics.trim(strategy, reason, freed)
        return freed


def _key(content: str) -> bytes:
    return hashlib.blake2b(content.encode(), digest_size=16).digest()


def _answer_importance(answer: str) -> float:
    """An evaluation with a high score is worth keeping as a reference point; prose less so."""
    try:
        score = orjson.loads(answer).get("score")
    except (orjson.JSONDecodeError, AttributeError):
        return 1.5
    return 1.0 + score / 100 if isinstance(score, (int, float)) else 1.5
