"""Wire formats of the OpenAI and Ollama APIs: validated requests and response bodies.

Requests are validated by hand into slotted dataclasses (no pydantic on the hot path); every
problem is an ApiError, which the app renders as an OpenAI-style error body with a 4xx status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class ApiError(Exception):
    """An error answered to the client: HTTP status plus OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


# A 500's body says nothing of the exception: the traceback goes to the server's log.
INTERNAL_ERROR = ApiError(
    500, "The server had an error while processing your request.", type="server_error"
)


def missing(param: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def invalid_type(param: str, expected: str, value: Any) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, message: str) -> ApiError:
    return ApiError(
        400, f"Invalid value for '{param}': {message}", param=param, code="invalid_value"
    )


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"We could not parse the JSON body of your request ({exc}). "
            "Send one JSON object with Content-Type: application/json.",
            code="invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise ApiError(
            400,
            f"The request body must be a JSON object, but got {_json_type(value)}.",
            code="invalid_json",
        )
    return value


@dataclass(slots=True)
class GenerateRequest:
    """One generation, whichever API asked for it: the messages and how to answer."""

    model: str
    messages: list[tuple[str, str]]
    max_tokens: int | None
    stream: bool
    include_usage: bool = False
    json_mode: bool = False
    context_id: str | None = None
    keep_alive_s: float | None = None  # Ollama: how long the model stays loaded after this one


def parse_chat(data: dict[str, Any]) -> GenerateRequest:
    """POST /v1/chat/completions body."""
    model = _required_str(data, "model")
    raw = data.get("messages")
    if raw is None:
        raise missing("messages")
    if not isinstance(raw, list):
        raise invalid_type("messages", "an array", raw)
    if not raw:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    messages = [_chat_message(m, i) for i, m in enumerate(raw)]
    return GenerateRequest(
        model=model,
        messages=messages,
        max_tokens=_max_tokens(data, "max_completion_tokens") or _max_tokens(data, "max_tokens"),
        stream=_bool(data, "stream", False),
        include_usage=_include_usage(data),
        json_mode=_json_mode(data.get("response_format")),
        context_id=_context_id(data),
    )


def parse_completion(data: dict[str, Any]) -> GenerateRequest:
    """POST /v1/completions body (one prompt per request)."""
    model = _required_str(data, "model")
    prompt = data.get("prompt")
    if prompt is None:
        raise missing("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise invalid_value(
                "prompt",
                "this server takes one prompt per request: a string or an array of one string.",
            )
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise invalid_type("prompt", "a string", prompt)
    return GenerateRequest(
        model=model,
        messages=[("user", prompt)],
        max_tokens=_max_tokens(data, "max_tokens") or 16,  # OpenAI's default for completions
        stream=_bool(data, "stream", False),
        include_usage=_include_usage(data),
        context_id=_context_id(data),
    )


def parse_ollama_chat(data: dict[str, Any]) -> GenerateRequest:
    """POST /api/chat body (streams by default, as Ollama does)."""
    model = _required_str(data, "model")
    raw = data.get("messages")
    if raw is None:
        raise missing("messages")
    if not isinstance(raw, list):
        raise invalid_type("messages", "an array", raw)
    return GenerateRequest(
        model=model,
        messages=[_chat_message(m, i) for i, m in enumerate(raw)],
        max_tokens=_ollama_num_predict(data),
        stream=_bool(data, "stream", True),
        json_mode=data.get("format") is not None,
        context_id=_context_id(data),
        keep_alive_s=_keep_alive(data),
    )


def parse_ollama_generate(data: dict[str, Any]) -> GenerateRequest:
    """POST /api/generate body: `system` and `prompt` become a two-message chat."""
    model = _required_str(data, "model")
    prompt = data.get("prompt", "")
    system = data.get("system")
    if not isinstance(prompt, str):
        raise invalid_type("prompt", "a string", prompt)
    if system is not None and not isinstance(system, str):
        raise invalid_type("system", "a string", system)
    messages = ([("system", system)] if system else []) + [("user", prompt)]
    return GenerateRequest(
        model=model,
        messages=messages,
        max_tokens=_ollama_num_predict(data),
        stream=_bool(data, "stream", True),
        json_mode=data.get("format") is not None,
        context_id=_context_id(data),
        keep_alive_s=_keep_alive(data),
    )


def _chat_message(message: Any, index: int) -> tuple[str, str]:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid_type(param, "an object", message)
    role = message.get("role")
    if role is None:
        raise missing(f"{param}.role")
    if not isinstance(role, str):
        raise invalid_type(f"{param}.role", "a string", role)
    if role not in ROLES:
        raise invalid_value(f"{param}.role", f"'{role[:40]}' is not one of {sorted(ROLES)}.")
    content = message.get("content")
    if isinstance(content, str):
        return role, content
    if content is None:
        if role == "assistant":
            return role, ""  # an assistant turn that only called tools
        raise missing(f"{param}.content")
    if isinstance(content, list):
        return role, "".join(
            _text_part(part, f"{param}.content[{i}]") for i, part in enumerate(content)
        )
    raise invalid_type(f"{param}.content", "a string or an array of content parts", content)


def _text_part(part: Any, param: str) -> str:
    if not isinstance(part, dict):
        raise invalid_type(param, "an object", part)
    if part.get("type") != "text" or not isinstance(part.get("text"), str):
        raise invalid_value(param, "only text content parts are supported by this server.")
    return part["text"]


def _required_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        raise missing(key)
    if not isinstance(value, str):
        raise invalid_type(key, "a string", value)
    return value


def _bool(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_type(key, "a boolean", value)
    return value


def _max_tokens(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_type(key, "an integer", value)
    if value < 1:
        raise invalid_value(key, f"{value} is less than the minimum of 1.")
    return value


def _include_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise invalid_type("stream_options", "an object", options)
    return _bool(options, "include_usage", False)


def _json_mode(response_format: Any) -> bool:
    if response_format is None:
        return False
    if not isinstance(response_format, dict):
        raise invalid_type("response_format", "an object", response_format)
    return response_format.get("type") in ("json_object", "json_schema")


def _context_id(data: dict[str, Any]) -> str | None:
    value = data.get("context_id")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise invalid_value("context_id", "expected a string of 1 to 128 characters.")
    return value


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _keep_alive(data: dict[str, Any]) -> float | None:
    """Ollama's keep_alive: seconds as a number, or a duration such as "5m", "90s", "1h"; negative
    keeps the model loaded for good, 0 unloads it as soon as the request ends."""
    value = data.get("keep_alive")
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        for unit in ("ms", "s", "m", "h"):
            number = text.removesuffix(unit)
            if number != text:
                try:
                    return float(number) * _DURATION_UNITS[unit]
                except ValueError:
                    break
        try:
            return float(text)
        except ValueError:
            pass
    raise invalid_value("keep_alive", 'expected seconds or a duration such as "5m" or "-1".')


def _ollama_num_predict(data: dict[str, Any]) -> int | None:
    options = data.get("options")
    if options is None:
        return None
    if not isinstance(options, dict):
        raise invalid_type("options", "an object", options)
    value = options.get("num_predict")
    if value is None or value == -1:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise invalid_value("options.num_predict", "expected -1 or a positive integer.")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    request_id: str, created: int, model: str, text: str, finish_reason: str, usage_: dict
) -> dict[str, Any]:
    """A chat.completion object."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_,
    }


def text_completion(
    request_id: str, created: int, model: str, text: str, finish_reason: str, usage_: dict
) -> dict[str, Any]:
    """A text_completion object (legacy completions API)."""
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage_,
    }


class ChunkEncoder:
    """SSE frames of one streamed response; the JSON around each token is rendered once."""

    def __init__(self, request_id: str, created: int, model: str, chat: bool) -> None:
        self._chat = chat
        self._head = {
            "id": request_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }
        before, after = orjson.dumps({**self._head, "choices": [self._choice("\x00", None)]}).split(
            b'"\\u0000"'
        )
        self._before = b"data: " + before
        self._after = after + b"\n\n"

    def _choice(self, text: str | None, finish_reason: str | None) -> dict[str, Any]:
        if self._chat:
            delta = {} if text is None else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def token(self, piece: str) -> bytes:
        return self._before + orjson.dumps(piece) + self._after

    def role(self) -> bytes:
        """The first chat chunk: the assistant role with empty content, as OpenAI sends it."""
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
        return self._frame({**self._head, "choices": [{**choice, "finish_reason": None}]})

    def finish(self, finish_reason: str) -> bytes:
        return self._frame({**self._head, "choices": [self._choice(None, finish_reason)]})

    def usage(self, usage_: dict) -> bytes:
        return self._frame({**self._head, "choices": [], "usage": usage_})

    def error(self, error: ApiError) -> bytes:
        return self._frame(error.body())

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"

    @staticmethod
    def _frame(document: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(document) + b"\n\n"
