"""Simulated GPU memory: KV blocks, the prefix cache, slow faults and the host RAM that mirrors it.

KV cache is counted in blocks of BLOCK_TOKENS tokens, as vLLM's paged cache counts it: a holder
of n tokens holds ceil(n / 16) blocks, and a block is 16 x the KV bytes of one token. The prefix
cache keeps the blocks of a shared system prompt (the job) for every later request that starts
with it. Slow faults are what makes memory climb with no single culprit: a leak per finished
request and allocator fragmentation (a share of every freed allocation stranded). HostMemory
really holds RAM (anonymous mappings, touched) in proportion to the simulated bytes, so RSS
samplers and cgroup limits see what the simulated GPU does.
"""

from __future__ import annotations

import hashlib
import mmap
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.server.generation import MESSAGE_OVERHEAD_TOKENS, count_tokens

if TYPE_CHECKING:
    from harness.server.protocol import ApiError

BLOCK_TOKENS = 16
MB = 1_000_000  # the leak is given in decimal MB per 1K requests, as reports measure it
_HOST_CHUNK = 1024**2
_FILL = b"\x5a" * _HOST_CHUNK


def blocks_for(tokens: int) -> int:
    """KV blocks that hold `tokens` tokens: ceil(tokens / 16)."""
    return -(-tokens // BLOCK_TOKENS)


class KvHolder:
    """Something that holds simulated KV cache: one running sequence or one context."""

    __slots__ = ("failure", "kv_blocks", "kv_tokens")

    def __init__(self) -> None:
        self.kv_tokens = 0
        self.kv_blocks = 0
        self.failure: ApiError | None = None  # set when an injected OOM fails the sequence


@dataclass(frozen=True)
class SlowFaults:
    """Memory that goes missing slowly: what turns a steady run into an OOM hours later."""

    leak_mb_per_1k_requests: float = 0.0  # VRAM (and host RAM) never freed, per finished request
    fragmentation: float = 0.0  # share of every freed allocation the allocator cannot reuse

    @property
    def leak_bytes_per_request(self) -> int:
        return int(self.leak_mb_per_1k_requests * MB / 1000)


@dataclass(slots=True)
class PrefixEntry:
    """The cached blocks of one shared prefix and how many running sequences use them."""

    blocks: int
    users: int = 0


def shared_prefix(messages: Sequence[tuple[str, str]]) -> tuple[bytes, int] | None:
    """The leading system messages (the instructions and the job) as a cache key and their tokens,
    or None when the prompt has no system message or nothing after it."""
    end = 0
    while end < len(messages) - 1 and messages[end][0] == "system":
        end += 1
    if end == 0:
        return None
    digest = hashlib.blake2b(digest_size=16)
    tokens = 0
    for _, content in messages[:end]:
        digest.update(content.encode())
        digest.update(b"\0")
        tokens += count_tokens(content) + MESSAGE_OVERHEAD_TOKENS
    return digest.digest(), tokens


class PrefixCache:
    """vLLM's automatic prefix caching, for whole blocks of the shared system prompt.

    A hit covers the prefix's full blocks (a block that also holds the candidate's tokens is not
    shared). Entries nobody uses stay cached until their blocks are needed (least recently used
    first), as vLLM keeps freed blocks cached until it reallocates them.
    """

    def __init__(self) -> None:
        self._entries: OrderedDict[bytes, PrefixEntry] = OrderedDict()
        self.blocks = 0  # all cached blocks
        self.idle_blocks = 0  # cached blocks no running sequence uses (free to evict)

    def peek(self, key: bytes) -> PrefixEntry | None:
        return self._entries.get(key)

    def use(self, key: bytes) -> PrefixEntry | None:
        """The cached entry for this prefix, now used by one more sequence; None on a miss."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        if entry.users == 0:
            self.idle_blocks -= entry.blocks
        entry.users += 1
        return entry

    def add(self, key: bytes, blocks: int) -> PrefixEntry | None:
        """Cache a prefix a sequence just computed (its first user); None if cached already."""
        if key in self._entries or blocks <= 0:
            return None
        entry = self._entries[key] = PrefixEntry(blocks, users=1)
        self.blocks += blocks
        return entry

    def done(self, entry: PrefixEntry) -> None:
        """One sequence stopped using the entry."""
        entry.users -= 1
        if entry.users == 0:
            self.idle_blocks += entry.blocks

    def evict(self, wanted: int) -> int:
        """Drop idle entries, least recently used first, until `wanted` blocks are free; the
        blocks freed."""
        freed = 0
        for key in [k for k, e in self._entries.items() if e.users == 0]:
            if freed >= wanted:
                break
            entry = self._entries.pop(key)
            freed += entry.blocks
        self.blocks -= freed
        self.idle_blocks -= freed
        return freed

    def clear(self) -> None:
        self._entries.clear()
        self.blocks = self.idle_blocks = 0


class HostMemory:
    """Host RAM really held in 1 MiB anonymous mappings (touched, so resident), `ratio` bytes per
    simulated byte; unmapped again when the simulated memory shrinks."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self._chunks: list[mmap.mmap] = []

    @property
    def held_bytes(self) -> int:
        return len(self._chunks) * _HOST_CHUNK

    def follow(self, simulated_bytes: int) -> None:
        if self.ratio <= 0:
            return
        wanted = -(-int(simulated_bytes * self.ratio) // _HOST_CHUNK)
        chunks = self._chunks
        while len(chunks) < wanted:
            chunk = mmap.mmap(-1, _HOST_CHUNK)
            chunk.write(_FILL)
            chunks.append(chunk)
        while len(chunks) > wanted:
            chunks.pop().close()
