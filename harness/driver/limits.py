"""Known before sending: how many requests would not fit the model's context (max_model_len).

A request fits when its prompt tokens plus its max_tokens are at most max_model_len. One that does
not is refused or cut short: vLLM (0.32) answers 400 when the prompt or max_tokens alone passes
max_model_len, and otherwise ends the answer early (finish_reason "length"); llama.cpp cuts or
refuses it. Counting every prompt with the server's
tokenizer would cost one HTTP call per request, so the server tokenizes a sample (vLLM's
/tokenize, llama.cpp's /tokenize or /extras/tokenize), the largest tokens-per-character ratio seen
is applied to every prompt's length in one streamed pass, and a server without a tokenizer
route gets a cautious 1 token per 3 characters.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from harness.targets import LLAMA_CPP, VLLM, Target

Request = tuple[str, dict[str, Any]]
FALLBACK_TOKENS_PER_CHAR = 1 / 3  # JSON and names tokenize denser than prose (about 1/4)
_SAMPLE = 16  # prompts the server tokenizes
_TEMPLATE_TOKENS = 18  # role markers per message: the real-server tier's template adds 18 on vLLM


@dataclass(frozen=True)
class ContextCheck:
    """What the pass found; `exceeding` requests would be refused or cut by the server."""

    max_model_len: int
    source: str
    requests: int
    exceeding: int
    longest_prompt_tokens: int
    max_tokens: int
    tokens_per_char: float
    measured: bool  # the ratio came from the server's tokenizer

    @property
    def fitting_max_tokens(self) -> int:
        """The largest max_tokens with which every request fits (0: a prompt alone is too long)."""
        return max(0, self.max_model_len - self.longest_prompt_tokens)

    def line(self) -> str:
        how = "the server's tokenizer" if self.measured else "1 token per 3 characters"
        head = (
            f"max_model_len {self.max_model_len} ({self.source}); longest prompt about "
            f"{self.longest_prompt_tokens} tokens ({how}) + max_tokens {self.max_tokens}"
        )
        if not self.exceeding:
            return f"{head}: all {self.requests:,} requests fit"
        fix = (
            f"lower --max-tokens to {self.fitting_max_tokens} or less"
            if self.fitting_max_tokens > 0
            else "shorten the prompts"
        )
        return (
            f"{head}: {self.exceeding:,} of {self.requests:,} requests would exceed it; "
            f"{fix}, or serve the model with a longer context (vLLM --max-model-len, "
            "llama.cpp --n_ctx / -c, Ollama num_ctx)"
        )


def check_context(
    target: Target,
    model: str,
    requests: Iterable[Request],
    *,
    api_key: str | None = None,
    timeout_s: float = 10.0,
) -> ContextCheck | None:
    """Count the requests whose prompt plus max_tokens pass the target's max_model_len; None
    when the target does not say its max_model_len."""
    if target.max_model_len is None:
        return None
    stream = iter(requests)
    sample = list(itertools.islice(stream, _SAMPLE))
    ratio = _measured_ratio(target, model, sample, api_key, timeout_s)
    measured = ratio is not None
    ratio = ratio or FALLBACK_TOKENS_PER_CHAR
    exceeding = count = longest = widest_max_tokens = 0
    for _, body in itertools.chain(sample, stream):
        count += 1
        tokens = math.ceil(_prompt_chars(body) * ratio) + _overhead(body)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        longest = max(longest, tokens)
        widest_max_tokens = max(widest_max_tokens, max_tokens)
        if tokens + max_tokens > target.max_model_len:
            exceeding += 1
    return ContextCheck(
        max_model_len=target.max_model_len,
        source=target.max_model_len_source or "the server",
        requests=count,
        exceeding=exceeding,
        longest_prompt_tokens=longest,
        max_tokens=widest_max_tokens,
        tokens_per_char=ratio,
        measured=measured,
    )


def _measured_ratio(
    target: Target, model: str, sample: list[Request], api_key: str | None, timeout_s: float
) -> float | None:
    """The largest tokens-per-character ratio of the sample by the server's own tokenizer."""
    ratios = []
    headers = {"authorization": f"Bearer {api_key}"} if api_key else None
    client = httpx.Client(base_url=target.url, timeout=timeout_s, headers=headers, trust_env=False)
    with client:
        for _, body in sample:
            chars = _prompt_chars(body)
            if chars == 0:
                continue
            try:
                tokens = _tokenize(client, target.kind, model, body)
            except (httpx.HTTPError, ValueError):
                return None
            if tokens is None:
                return None
            ratios.append(tokens / chars)
    return max(ratios) if ratios else None


def _tokenize(client: httpx.Client, kind: str, model: str, body: dict[str, Any]) -> int | None:
    text = "\n".join(_texts(body))
    if kind == VLLM:
        response = client.post("/tokenize", json={"model": model, "prompt": text})
        return int(response.json()["count"]) if response.status_code == 200 else None
    if kind == LLAMA_CPP:  # the C++ server, then llama-cpp-python
        response = client.post("/tokenize", json={"content": text})
        if response.status_code == 404:
            response = client.post("/extras/tokenize", json={"input": text, "model": model})
        return len(response.json()["tokens"]) if response.status_code == 200 else None
    return None


def _texts(body: dict[str, Any]) -> Iterator[str]:
    if isinstance(body.get("prompt"), str):
        yield body["prompt"]
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            content = message.get("content")
            yield content if isinstance(content, str) else str(content or "")


def _prompt_chars(body: dict[str, Any]) -> int:
    return sum(len(text) for text in _texts(body))


def _overhead(body: dict[str, Any]) -> int:
    """Tokens a chat template adds around the messages (none for a plain completion)."""
    return _TEMPLATE_TOKENS * len(body.get("messages") or ())
