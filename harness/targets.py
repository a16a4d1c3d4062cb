"""What a target server is, asked of the server itself: kind, models, health URL, metrics, context.

vLLM answers `/version` and exports `vllm:` metrics; Ollama answers `/api/version` and lists models
at `/api/tags`; llama.cpp's server answers `/props` (C++) or names itself in `/openapi.json`
(llama-cpp-python); the reference server (`harness serve`) exports `harness_` metrics. Each probe
is one bounded GET (or Ollama's POST /api/show) to a loopback URL; a route a server lacks is simply
absent from what is learned.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from harness.errors import UserError

VLLM = "vllm"
OLLAMA = "ollama"
LLAMA_CPP = "llama.cpp"
HARNESS = "harness"
OPENAI = "openai"  # any other OpenAI-compatible server

_MAX_BODY = 4 << 20  # a /metrics page or an OpenAPI document; more is not a server we know
_METRIC_NAME = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)", re.MULTILINE)
_HEALTH_PATHS = ("/health/ready", "/health")


@dataclass(frozen=True)
class Target:
    """What the probe learned of one server; None or empty where the server does not say."""

    url: str
    kind: str
    version: str | None = None
    models: tuple[str, ...] = ()
    health_url: str = ""
    metrics_url: str | None = None
    metric_names: tuple[str, ...] = field(default=(), repr=False)
    max_model_len: int | None = None
    max_model_len_source: str | None = None

    def describe(self) -> str:
        """One line for the console: kind, version, models, context, health and metrics."""
        parts = [self.kind + (f" {self.version}" if self.version else "")]
        parts.append("models: " + (", ".join(self.models) if self.models else "none listed"))
        if self.max_model_len:
            parts.append(f"max_model_len {self.max_model_len} ({self.max_model_len_source})")
        parts.append(f"health {self.health_url}")
        parts.append(f"metrics {self.metrics_url or 'none'}")
        return "; ".join(parts)


def choose_model(target: Target, requested: str | None) -> str:
    """The model to send: `requested` when given, else the only one served; several or none is an
    error that lists what the server has."""
    if requested:
        return requested
    if len(target.models) == 1:
        return target.models[0]
    if not target.models:
        raise UserError(f"{target.url} lists no model; name the one to use with --model NAME")
    listed = ", ".join(target.models)
    raise UserError(
        f"{target.url} serves {len(target.models)} models ({listed}); pick one with --model NAME"
    )


def probe(
    url: str, *, timeout_s: float = 5.0, model: str | None = None, api_key: str | None = None
) -> Target:
    """Ask the server at `url` what it is (with its API key, when it wants one). UserError when it
    does not answer at all."""
    base = url.rstrip("/")
    headers = {"authorization": f"Bearer {api_key}"} if api_key else None
    with httpx.Client(base_url=base, timeout=timeout_s, headers=headers, trust_env=False) as client:
        return _Probe(client, base).run(model)


class _Probe:
    def __init__(self, client: httpx.Client, base: str) -> None:
        self._client = client
        self._base = base

    def run(self, model: str | None) -> Target:
        try:
            metrics = self._get("/metrics")
        except httpx.TransportError as exc:
            raise UserError(f"nothing answers at {self._base}: {type(exc).__name__}") from None
        names = _metric_names(metrics) if metrics is not None else ()
        version = _json(self._get("/version"))
        ollama = _json(self._get("/api/version"))
        props = _json(self._get("/props"))
        models_doc = _json(self._get("/v1/models"))
        kind = self._kind(names, version, ollama, props, models_doc)
        models = self._models(kind, models_doc)
        context, source = self._context(kind, models_doc, props, model or _only(models))
        version_text = None
        for doc in (ollama if kind == OLLAMA else version, props):
            if isinstance(doc, dict) and isinstance(doc.get("version"), str):
                version_text = doc["version"]
                break
        return Target(
            url=self._base,
            kind=kind,
            version=version_text,
            models=models,
            health_url=self._health_url(kind),
            metrics_url=self._base + "/metrics" if names else None,
            metric_names=names,
            max_model_len=context,
            max_model_len_source=source,
        )

    def _get(self, path: str) -> bytes | None:
        """The body of a 200 answer (at most _MAX_BODY bytes), else None."""
        with self._client.stream("GET", path) as response:
            if response.status_code != 200:
                return None
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _MAX_BODY:
                    return None
            return bytes(body)

    def _kind(
        self, names: Sequence[str], version: Any, ollama: Any, props: Any, models_doc: Any
    ) -> str:
        if any(n.startswith("harness_") for n in names):
            return HARNESS
        if any(n.startswith("vllm:") for n in names) or (
            isinstance(version, dict) and "version" in version and ollama is None
        ):
            return VLLM
        if isinstance(props, dict) and (
            "default_generation_settings" in props or "total_slots" in props
        ):
            return LLAMA_CPP
        if any(n.startswith("llamacpp:") for n in names) or _owned_by(models_doc) == "llamacpp":
            return LLAMA_CPP
        if isinstance(ollama, dict) and "version" in ollama:
            return OLLAMA
        openapi = _json(self._get("/openapi.json"))
        title = openapi.get("info", {}).get("title", "") if isinstance(openapi, dict) else ""
        if "llama.cpp" in str(title):  # llama-cpp-python: "🦙 llama.cpp Python API"
            return LLAMA_CPP
        if models_doc is None:
            raise UserError(
                f"{self._base} answers HTTP but not as an LLM server we know "
                "(no /v1/models, /api/version, /version or /props)"
            )
        return OPENAI

    def _models(self, kind: str, models_doc: Any) -> tuple[str, ...]:
        if kind == OLLAMA:
            tags = _json(self._get("/api/tags"))
            if isinstance(tags, dict):
                return tuple(
                    str(m.get("name") or m.get("model"))
                    for m in tags.get("models") or ()
                    if isinstance(m, dict)
                )
        if isinstance(models_doc, dict):
            return tuple(
                str(m["id"])
                for m in models_doc.get("data") or ()
                if isinstance(m, dict) and "id" in m
            )
        return ()

    def _context(
        self, kind: str, models_doc: Any, props: Any, model: str | None
    ) -> tuple[int | None, str | None]:
        """The longest prompt plus completion the server takes, and where it said so."""
        if isinstance(models_doc, dict):
            for entry in models_doc.get("data") or ():
                if not isinstance(entry, dict) or model not in (None, entry.get("id")):
                    continue
                value = entry.get("max_model_len")
                if isinstance(value, int) and value > 0:
                    return value, "/v1/models max_model_len"
        if isinstance(props, dict):
            settings = props.get("default_generation_settings") or {}
            value = props.get("n_ctx") or (
                settings.get("n_ctx") if isinstance(settings, dict) else None
            )
            if isinstance(value, int) and value > 0:
                # llama.cpp splits its context among its slots; each request gets one slot's share
                slots = props.get("total_slots")
                per_slot = value // slots if isinstance(slots, int) and slots > 1 else value
                return per_slot, "/props n_ctx" + (f" / {slots} slots" if per_slot != value else "")
        if kind == OLLAMA and model:
            return self._ollama_context(model)
        return None, None

    def _ollama_context(self, model: str) -> tuple[int | None, str | None]:
        """Ollama cuts prompts at num_ctx (a model parameter) rather than the model's own length."""
        response = self._client.post("/api/show", json={"model": model})
        show = _json(response.content if response.status_code == 200 else None)
        if not isinstance(show, dict):
            return None, None
        match = re.search(r"^num_ctx\s+(\d+)", str(show.get("parameters") or ""), re.MULTILINE)
        if match:
            return int(match.group(1)), "/api/show num_ctx"
        for key, value in (show.get("model_info") or {}).items():
            if key.endswith(".context_length") and isinstance(value, int):
                return value, f"/api/show {key}"
        return None, None

    def _health_url(self, kind: str) -> str:
        if kind == OLLAMA:
            return self._base + "/api/version"
        for path in _HEALTH_PATHS:
            if self._status(path) in (200, 503):  # 503: routed, still loading
                return self._base + path
        return self._base + "/v1/models"

    def _status(self, path: str) -> int | None:
        try:
            return self._client.get(path).status_code
        except httpx.TransportError:
            return None


def _json(body: bytes | None) -> Any:
    if body is None:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _metric_names(body: bytes) -> tuple[str, ...]:
    """Sample names of a Prometheus text page, in order, each once."""
    names = dict.fromkeys(m.decode() for m in _METRIC_NAME.findall(body))
    return tuple(names)


def _owned_by(models_doc: Any) -> str | None:
    if isinstance(models_doc, dict):
        for entry in models_doc.get("data") or ():
            if isinstance(entry, dict):
                return entry.get("owned_by")
    return None


def _only(models: tuple[str, ...]) -> str | None:
    return models[0] if len(models) == 1 else None


# Servers `harness scale --serve` knows how to start: its name, the words that name it on its
# command line, its default port, its health path (where it answers 200 only once it can serve),
# the options that set its context length and the length it has without them.
@dataclass(frozen=True)
class _Server:
    name: str
    words: tuple[str, ...]
    port: int
    health_path: str
    context_options: tuple[str, ...] = ()
    default_context: int | None = None


_SERVERS = (
    _Server("vllm", ("vllm",), 8000, "/health", ("--max-model-len",)),
    _Server("vllm", ("vllm.entrypoints.openai.api_server",), 8000, "/health", ("--max-model-len",)),
    # llama-cpp-python loads the model before it listens, and says nothing of its context
    _Server("llama_cpp.server", ("llama_cpp.server",), 8000, "/v1/models", ("--n_ctx",), 2048),
    _Server("llama-server", ("llama-server",), 8080, "/health", ("--ctx-size", "-c")),
    _Server("ollama", ("ollama",), 11434, "/api/version"),  # loads a model on first request
    _Server("harness serve", ("harness", "serve"), 8000, "/health/ready"),
)


def serve_url(command: Sequence[str]) -> str | None:
    """The URL the server `command` starts will listen on: its --port (and loopback --host),
    else its program's default port; None for a program not known."""
    port = _option(command, "--port")
    host = _option(command, "--host")
    if host in (None, "0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    server = _known(command)
    if port is None and server is not None and server.name == "ollama":
        address = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").removeprefix("http://")
        host, _, port = address.rpartition(":")
        host = host or "127.0.0.1"
    if port is None and server is not None:
        port = str(server.port)
    if port is None:
        return None
    return f"http://{host}:{port}"


def serve_health_path(command: Sequence[str]) -> str:
    """Where the server `command` starts says it is ready: its own health route when known."""
    server = _known(command)
    return server.health_path if server is not None else "/v1/models"


def serve_context(command: Sequence[str]) -> tuple[int, str] | None:
    """The context length the server `command` starts is given (or has by default), for servers
    that do not say it over HTTP (llama-cpp-python); None when its command line does not tell."""
    server = _known(command)
    if server is None:
        return None
    for name in server.context_options:
        value = _option(command, name)
        if value is not None and value.isdigit() and int(value) > 0:
            return int(value), f"{name} of the --serve command"
    if server.default_context is not None:
        return server.default_context, f"{server.name}'s default n_ctx"
    return None


def past_env(command: Sequence[str]) -> list[str]:
    """The command a line runs, past a leading `env`, its options and NAME=value assignments
    (`env VLLM_CPU_KVCACHE_SPACE=4 python -m vllm...` runs `python -m vllm...`)."""
    words = list(command)
    if words and os.path.basename(words[0]) == "env":
        words = words[1:]
        while words and (words[0].startswith("-") or "=" in words[0]):
            takes_value = words[0] in ("-u", "--unset", "-C", "--chdir")
            words = words[2:] if takes_value else words[1:]
    return words


def _known(command: Sequence[str]) -> _Server | None:
    words = [part.rsplit("/", 1)[-1] for part in past_env(command)[:4]]
    for server in _SERVERS:
        if all(word in words for word in server.words):
            return server
    return None


def _option(command: Sequence[str], name: str) -> str | None:
    for i, part in enumerate(command):
        if part == name and i + 1 < len(command):
            return command[i + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return None
