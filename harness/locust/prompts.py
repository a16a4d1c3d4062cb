"""Chat requests for the users of one Locust process: candidate evaluations, read or generated.

Every request is handed out once per pass by one cursor per process, and processes take disjoint
slices (item i goes to process i mod P), so no two users send the same candidate at once while the
dataset has more candidates than there are users. Datasets are streamed, never loaded whole;
generated candidates are built once, before the load starts, so generating them never delays a
request being timed.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import generators
from harness.locust.protocol import encode_chat

logger = logging.getLogger(__name__)


class Prompt:
    """One chat request: its custom_id, its OpenAI body, and its wire encodings, each built once
    (pre-built prompts come round again and again; the bytes are reused)."""

    __slots__ = ("_encoded", "body", "custom_id")

    def __init__(self, custom_id: str, body: dict[str, Any]) -> None:
        self.custom_id = custom_id
        self.body = body
        self._encoded: dict[tuple[str, bool], bytes] = {}

    def encoded(self, api: str, stream: bool) -> bytes:
        """The request bytes for `api` (see protocol.encode_chat)."""
        key = (api, stream)
        data = self._encoded.get(key)
        if data is None:
            data = self._encoded[key] = encode_chat(api, self.body, stream)
        return data


class PromptSource:
    """An endless cursor over this process's slice of the requests, restarting after each pass."""

    def __init__(self, passes: Callable[[], Iterator[Prompt]], description: str) -> None:
        if next(passes(), None) is None:
            raise LookupError(f"{description} has no request for this process")
        self._passes = passes
        self._current = passes()
        self.description = description

    def next(self) -> Prompt:
        """The next prompt of the slice (shared: copy its body before changing it)."""
        try:
            return next(self._current)
        except StopIteration:
            self._current = self._passes()
            return next(self._current)


def dataset_source(
    path: str, *, model: str | None, max_tokens: int | None, part: int = 0, parts: int = 1
) -> PromptSource:
    """Requests streamed from any dataset `harness gen` writes (item i to part i mod parts)."""

    def one_pass() -> Iterator[Prompt]:
        requests = generators.iter_requests(path, model=model, max_tokens=max_tokens)
        return itertools.starmap(Prompt, itertools.islice(requests, part, None, parts))

    return PromptSource(one_pass, f"dataset {path} (part {part + 1} of {parts})")


def generated_source(
    n: int,
    *,
    seed: int,
    model: str | None,
    max_tokens: int | None,
    part: int = 0,
    parts: int = 1,
) -> PromptSource:
    """Candidates 0..n-1 of `seed` against the seed's job; this part's share is built up front."""
    job = generators.job(seed)
    body_model = model or generators.DEFAULT_MODEL
    body_max_tokens = max_tokens or generators.DEFAULT_MAX_TOKENS
    prompts: list[Prompt] = []
    for i in range(part, n, parts):
        candidate = generators.candidate(i, seed=seed)
        body = {
            "model": body_model,
            "messages": generators.chat_messages(job, candidate),
            "max_tokens": body_max_tokens,
            "temperature": 0.0,
        }
        prompts.append(Prompt(str(candidate["id"]), body))
    return PromptSource(lambda: iter(prompts), f"{n} generated candidates (seed {seed})")
