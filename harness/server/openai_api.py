"""OpenAI endpoints: /v1/models, /v1/chat/completions and /v1/completions (JSON or SSE)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from harness.server.asgi import Response, Stream, json_response, read_body
from harness.server.protocol import (
    ApiError,
    ChunkEncoder,
    GenerateRequest,
    chat_completion,
    model_not_found,
    parse_chat,
    parse_completion,
    parse_json_object,
    text_completion,
    usage,
)

if TYPE_CHECKING:
    from harness.server.app import ServerState
    from harness.server.simulator import Plan

_ids = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex()


def request_id(kind: str) -> str:
    """A unique response id, e.g. chatcmpl-1a2b3c4d00000001."""
    return f"{kind}-{_ID_PREFIX}{next(_ids):08x}"


async def list_models(request: Request, state: ServerState) -> Response:
    return json_response({"object": "list", "data": [_model(state, n) for n in state.model_names]})


async def retrieve_model(request: Request, state: ServerState, model: str) -> Response:
    if model not in state.model_names:
        raise model_not_found(model)
    return json_response(_model(state, model))


async def chat_completions(request: Request, state: ServerState) -> Response | Stream:
    return await _generate(request, state, parse_chat, chat=True)


async def completions(request: Request, state: ServerState) -> Response | Stream:
    return await _generate(request, state, parse_completion, chat=False)


async def run_batch_request(state: ServerState, url: str, body: Any) -> dict[str, Any]:
    """One Batch API line, non-streaming: the response body, or ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "The 'body' of a batch request line must be a JSON object.")
    parse = parse_chat if url == "/v1/chat/completions" else parse_completion
    request = parse(body)
    request.stream = False
    return await _complete(state, request, chat=parse is parse_chat)


async def _generate(
    request: Request,
    state: ServerState,
    parse: Callable[[dict[str, Any]], GenerateRequest],
    chat: bool,
) -> Response | Stream:
    body = await read_body(request, state.config.max_body_bytes)
    generate = parse(parse_json_object(body))
    if not generate.stream:
        return json_response(await _complete(state, generate, chat))
    check_model(state, generate.model)
    simulator = state.simulator
    plan = simulator.plan(generate)
    running = await simulator.start(plan)
    encoder = ChunkEncoder(
        request_id("chatcmpl" if chat else "cmpl"), int(time.time()), plan.model, chat
    )
    return Stream(
        _sse(state, running, encoder, generate.include_usage, chat),
        b"text/event-stream",
        on_close=lambda: simulator.close(running, finished=False),
    )


async def _complete(state: ServerState, request: GenerateRequest, chat: bool) -> dict[str, Any]:
    check_model(state, request.model)
    plan = await state.simulator.complete(state.simulator.plan(request))
    build = chat_completion if chat else text_completion
    return build(
        request_id("chatcmpl" if chat else "cmpl"),
        int(time.time()),
        plan.model,
        plan.text,
        plan.finish_reason,
        usage(plan.prompt_tokens, plan.output_tokens),
    )


async def _sse(
    state: ServerState, running: Any, encoder: ChunkEncoder, include_usage: bool, chat: bool
) -> AsyncIterator[bytes]:
    plan: Plan = running.plan
    if chat:
        yield encoder.role()
    try:
        async for piece in state.simulator.tokens(running):
            yield encoder.token(piece)
    except ApiError as error:  # an OOM or injected failure after the stream began
        yield encoder.error(error)
        yield encoder.done()
        return
    yield encoder.finish(plan.finish_reason)
    if include_usage:
        yield encoder.usage(usage(plan.prompt_tokens, plan.output_tokens))
    yield encoder.done()


def check_model(state: ServerState, model: str) -> None:
    if model not in state.model_names:
        raise model_not_found(model)


def _model(state: ServerState, name: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": int(state.started_at),
        "owned_by": "harness",
        "root": name,
        "parent": None,
        "max_model_len": state.simulator.profile.context_limit,
    }
