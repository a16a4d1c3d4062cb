"""Hypothesis strategies of hostile requests to the reference server (test and benchmark).

Each request is a valid body with its fields mutated into arbitrary JSON, an arbitrary JSON
document, or arbitrary bytes, sent to one of the server's POST or GET routes.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

MODEL = "llama3.1:8b"
SCORING = "Score the candidate.\n- skills (weight {w})\n- culture (weight 1)"

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

_VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SCORING.format(w=2)},
            {"role": "user", "content": '{"id": "c", "skills": [{"name": "Go", "years": 2}]}'},
        ],
        "max_tokens": 8,
        "stream": False,
        "stream_options": {"include_usage": True},
        "response_format": {"type": "json_object"},
        "context_id": "ctx",
    },
    "/v1/completions": {"model": MODEL, "prompt": "hello", "max_tokens": 8, "stream": False},
    "/api/chat": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"num_predict": 8},
    },
    "/api/generate": {"model": MODEL, "prompt": "hi", "system": "s", "stream": False},
    "/v1/batches": {
        "input_file_id": "file-abc",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"k": "v"},
    },
}
GET_PATHS = (
    "/v1/models",
    "/v1/models/{x}",
    "/v1/files",
    "/v1/files/{x}",
    "/v1/files/{x}/content",
    "/v1/batches",
    "/v1/batches?limit={x}",
    "/v1/batches/{x}",
    "/api/tags",
    "/api/ps",
    "/nothing/{x}",
)


@st.composite
def _mutated(draw: st.DrawFn, path: str) -> bytes:
    body = orjson.loads(orjson.dumps(_VALID[path]))
    for _ in range(draw(st.integers(1, 3))):
        target = body
        messages = body.get("messages")
        if isinstance(messages, list) and messages and draw(st.booleans()):
            message = messages[draw(st.integers(0, len(messages) - 1))]
            target = message if isinstance(message, dict) else body
        key = draw(st.sampled_from(sorted(target) or ["x"]))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            target[key] = draw(_JSON)
        elif choice == 1:
            target.pop(key, None)
        elif choice == 2 and key == "content":
            weight = draw(st.text(alphabet="0123456789.e-", min_size=1, max_size=420))
            target[key] = SCORING.format(w=weight)
        else:
            target[draw(st.text(max_size=8))] = draw(_JSON)
    return orjson.dumps(body)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(method, path, body) of one hostile request."""
    kind = draw(st.integers(0, 9))
    if kind < 6:
        path = draw(st.sampled_from(sorted(_VALID)))
        return "POST", path, draw(_mutated(path))
    if kind < 8:
        path = draw(st.sampled_from(sorted(_VALID)))
        raw = draw(st.one_of(_JSON.map(orjson.dumps), st.binary(max_size=200)))
        return "POST", path, raw
    template = draw(st.sampled_from(GET_PATHS))
    printable = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%")
    value = draw(st.text(alphabet=printable, max_size=30))
    return "GET", template.replace("{x}", value), b""
