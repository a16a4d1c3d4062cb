"""Ollama endpoints: /api/chat and /api/generate (NDJSON streaming by default), /api/tags, /api/ps.

Durations are nanoseconds; errors are Ollama's {"error": "..."} (what its clients parse).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request

from harness.server.asgi import Response, Stream, json_response, read_body
from harness.server.protocol import (
    ApiError,
    GenerateRequest,
    parse_json_object,
    parse_ollama_chat,
    parse_ollama_generate,
)

if TYPE_CHECKING:
    from harness.server.app import ServerState
    from harness.server.simulator import Plan, Running

KEEP_ALIVE_FOREVER = 100 * 365 * 86400.0  # a negative keep_alive: /api/ps shows a far future


async def chat(request: Request, state: ServerState) -> Response | Stream:
    return await _generate(request, state, parse_ollama_chat, chat=True)


async def generate(request: Request, state: ServerState) -> Response | Stream:
    return await _generate(request, state, parse_ollama_generate, chat=False)


async def tags(request: Request, state: ServerState) -> Response:
    return json_response({"models": [_model(state)]})


async def ps(request: Request, state: ServerState) -> Response:
    sim = state.simulator
    expires = sim.expires_at()
    left = KEEP_ALIVE_FOREVER if expires is None else max(0.0, expires - time.monotonic())
    loaded = {
        **_model(state),
        "expires_at": _iso(datetime.now(timezone.utc) + timedelta(seconds=left)),
        "size": sim.vram_used_bytes(),
        "size_vram": sim.vram_used_bytes(),
        "context_length": sim.profile.context_limit,
    }
    return json_response({"models": [loaded] if sim.load_fraction() > 0 else []})


async def version(request: Request, state: ServerState) -> Response:
    return json_response({"version": "0.6.0"})


async def _generate(
    request: Request,
    state: ServerState,
    parse: Callable[[dict[str, Any]], GenerateRequest],
    chat: bool,
) -> Response | Stream:
    generate = parse(parse_json_object(await read_body(request, state.config.max_body_bytes)))
    name = _resolve(state, generate.model)
    sim = state.simulator
    plan = sim.plan(generate)
    if not generate.stream:
        await sim.complete(plan)
        return json_response({**_piece(name, plan.text, chat), **_final(plan)})
    running = await sim.start(plan)
    return Stream(
        _ndjson(state, running, name, chat),
        b"application/x-ndjson",
        on_close=lambda: sim.close(running, finished=False),
    )


async def _ndjson(
    state: ServerState, running: Running, name: str, chat: bool
) -> AsyncIterator[bytes]:
    plan = running.plan
    try:
        async for piece in state.simulator.tokens(running):
            yield orjson.dumps(_piece(name, piece, chat)) + b"\n"
    except ApiError as error:
        yield orjson.dumps({"error": error.message}) + b"\n"
        return
    yield orjson.dumps({**_piece(name, "", chat), **_final(plan)}) + b"\n"


def _piece(name: str, text: str, chat: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": name, "created_at": _iso(datetime.now(timezone.utc))}
    if chat:
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    body["done"] = False
    return body


def _final(plan: Plan) -> dict[str, Any]:
    return {
        "done": True,
        "done_reason": plan.finish_reason,
        "total_duration": _ns(plan.e2e_s),
        "load_duration": _ns(plan.load_s),
        "prompt_eval_count": plan.prompt_tokens,
        "prompt_eval_duration": _ns(plan.ttft_s),
        "eval_count": plan.output_tokens,
        "eval_duration": _ns(plan.e2e_s - plan.ttft_s),
    }


def _resolve(state: ServerState, model: str) -> str:
    """The served name for an Ollama model reference (":latest" is implied, as in Ollama)."""
    for candidate in (model, model.removesuffix(":latest")):
        if candidate in state.model_names:
            return candidate
    raise ApiError(404, f'model "{model}" not found, try pulling it first', param="model")


def _model(state: ServerState) -> dict[str, Any]:
    profile = state.simulator.profile
    name = state.model_names[0]
    return {
        "name": name,
        "model": name,
        "modified_at": _iso(datetime.fromtimestamp(state.started_at, timezone.utc)),
        "size": profile.weights_bytes,
        "digest": hashlib.sha256(profile.name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": profile.family,
            "families": [profile.family],
            "parameter_size": profile.parameter_size,
            "quantization_level": profile.quantization,
        },
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))
