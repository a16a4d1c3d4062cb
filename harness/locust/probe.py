"""What a target answers before any load is sent: whether anything listens, which chat APIs it
speaks, and the models it lists. A user pointed at the wrong server or port gets one line
saying what the server looks like, instead of thousands of failed requests.

OpenAI-compatible servers (vLLM, llama.cpp, Ollama's /v1, ours) list models at GET /v1/models;
Ollama's own API answers GET /api/version and /api/tags. Plain HTTP, never through a proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.errors import UserError

PROBE_TIMEOUT_S = 5.0
API_NAMES = {"openai": "the OpenAI API", "ollama": "Ollama's API"}


@dataclass(frozen=True)
class Answer:
    """One probe: the path, its HTTP status (None without one) and its JSON (None if not JSON)."""

    path: str
    status: int | None
    body: Any = None

    def describe(self) -> str:
        return f"GET {self.path}: {self.status if self.status is not None else 'no answer'}"


@dataclass(frozen=True)
class ServerView:
    """The target as its API endpoints describe it."""

    url: str
    answers: list[Answer] = field(default_factory=list)

    def _answer(self, path: str) -> Answer | None:
        return next((a for a in self.answers if a.path == path), None)

    def _json(self, path: str, key: str) -> Any:
        answer = self._answer(path)
        if answer is None or answer.status != 200 or not isinstance(answer.body, dict):
            return None
        return answer.body.get(key)

    def speaks(self, api: str) -> bool:
        """Whether the API's discovery endpoint answered as that API does."""
        if api == "openai":
            return isinstance(self._json("/v1/models", "data"), list)
        return self._json("/api/version", "version") is not None or isinstance(
            self._json("/api/tags", "models"), list
        )

    @property
    def models(self) -> list[str] | None:
        """The models the server lists (/v1/models, else /api/tags); None when it lists none."""
        listed = self._json("/v1/models", "data")
        if isinstance(listed, list):
            return [m["id"] for m in listed if isinstance(m, dict) and "id" in m]
        tags = self._json("/api/tags", "models")
        if isinstance(tags, list):
            return [m["name"] for m in tags if isinstance(m, dict) and "name" in m]
        return None

    def looks_like(self) -> str:
        """The server in a few words, from what answered."""
        ollama = self._json("/api/version", "version")
        if ollama is not None:
            also = " with the OpenAI API too" if self.speaks("openai") else ""
            return f"Ollama {ollama}{also} (GET /api/version)"
        if self.speaks("openai"):
            listed = self._json("/v1/models", "data") or [{}]
            owner = listed[0].get("owned_by") if isinstance(listed[0], dict) else None
            by = f", models owned by {owner}" if owner else ""
            return f"an OpenAI-compatible server (GET /v1/models: 200{by})"
        if self.speaks("ollama"):
            return "Ollama (GET /api/tags)"
        seen = ", ".join(a.describe() for a in self.answers)
        return f"an HTTP server that speaks neither API ({seen})"


def probe(url: str) -> ServerView:
    """GET the discovery endpoints of both APIs; UserError when nothing answers at url."""
    base = url.rstrip("/")
    answers = []
    with httpx.Client(timeout=PROBE_TIMEOUT_S, trust_env=False) as client:
        for path in ("/v1/models", "/api/version", "/api/tags"):
            try:
                response = client.get(base + path)
            except httpx.TransportError:
                if not answers:
                    raise UserError(
                        f"nothing answers at {url}; start the server or fix --host"
                    ) from None
                answers.append(Answer(path, None))
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            answers.append(Answer(path, response.status_code, body))
    return ServerView(url, answers)


_FIXES = {  # by the API the server does speak
    "openai": "use --api openai with ChatUser StreamingChatUser",
    "ollama": "use --api ollama, or OllamaChatUser",
}


def check_apis(view: ServerView, needs: dict[str, list[str]]) -> None:
    """UserError when a user class needs an API the server does not speak.

    needs: API -> the user classes that send it, e.g. {"ollama": ["OllamaChatUser"]}.
    """
    locked = next((a for a in view.answers if a.status in (401, 403)), None)
    for api, users in sorted(needs.items()):
        if view.speaks(api):
            continue
        if locked is not None:
            raise UserError(
                f"{view.url} answers {locked.describe()}: it wants credentials, which these "
                "scenarios do not send"
            )
        other = next((a for a in API_NAMES if a != api and view.speaks(a)), None)
        fix = _FIXES[other] if other else "check --host"
        raise UserError(
            f"{view.url} does not speak {API_NAMES[api]}, which {', '.join(sorted(users))} "
            f"send{'s' if len(users) == 1 else ''}; it looks like {view.looks_like()}: {fix}"
        )
