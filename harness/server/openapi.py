"""The OpenAPI 3.1 document of the reference server (GET /openapi.json), rendered once.

Written by hand to match what the parsers in protocol.py, files.py, batches.py and faults.py
accept: clients and schema fuzzers (schemathesis) read it, and the tests check that every
route in app.ROUTES is described here.
"""

from __future__ import annotations

from typing import Any

import orjson

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _errors(*statuses: int, ollama: bool = False) -> dict[str, Any]:
    schema = _ref("OllamaError" if ollama else "Error")
    return {str(s): _json(schema, _REASONS[s]) for s in statuses}


_REASONS = {
    400: "Invalid request",
    401: "Missing or wrong API key",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    408: "Request head or body too slow",
    413: "Body too large",
    429: "Injected error-rate fault",
    431: "Request header fields too large",
    500: "Simulated CUDA out-of-memory or injected error",
    503: "Model still loading, connection limit, or injected fault",
}

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {
            "type": "string",
            "enum": sorted(("system", "developer", "user", "assistant", "tool", "function")),
        },
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": _ref("TextPart")},
                {"type": "null"},
            ],
            "description": "Required except on assistant turns; only text parts.",
        },
    },
    "if": {"properties": {"role": {"not": {"const": "assistant"}}}},
    "then": {
        "required": ["content"],
        "properties": {"content": {"type": ["string", "array"]}},
    },
}

_GENERATION_COMMON = {
    "stream": {"type": "boolean"},
    "context_id": {
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "description": "Harness extension: the conversation whose KV cache this extends.",
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "OllamaError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "TextPart": {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    },
    "ChatMessage": _MESSAGE,
    "Usage": {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string"},
            "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
            "stream_options": {
                "type": ["object", "null"],
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "response_format": {
                "type": ["object", "null"],
                "properties": {
                    "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]}
                },
            },
            **_GENERATION_COMMON,
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": _ref("Usage"),
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string"},
            "prompt": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1},
                ]
            },
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "stream_options": {
                "type": ["object", "null"],
                "properties": {"include_usage": {"type": "boolean"}},
            },
            **_GENERATION_COMMON,
        },
    },
    "Completion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "text_completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": _ref("Usage"),
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "max_model_len": {"type": "integer"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Model")},
        },
    },
    "File": {
        "type": "object",
        "required": ["id", "object", "bytes", "created_at", "filename", "purpose"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "file"},
            "bytes": {"type": "integer"},
            "created_at": {"type": "integer"},
            "filename": {"type": "string"},
            "purpose": {"type": "string", "enum": ["batch", "batch_output"]},
            "status": {"type": "string"},
        },
    },
    "FileList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("File")},
            "has_more": {"type": "boolean"},
        },
    },
    "FileUpload": {
        "type": "object",
        "required": ["file", "purpose"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "purpose": {"type": "string", "enum": ["batch"]},
        },
    },
    "DeletedFile": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "file"},
            "deleted": {"type": "boolean"},
        },
    },
    "BatchRequest": {
        "type": "object",
        "required": ["input_file_id", "endpoint", "completion_window"],
        "properties": {
            "input_file_id": {"type": "string"},
            "endpoint": {"type": "string", "enum": ["/v1/chat/completions", "/v1/completions"]},
            "completion_window": {"type": "string", "enum": ["24h"]},
            "metadata": {
                "type": ["object", "null"],
                "maxProperties": 16,
                "additionalProperties": {"type": "string", "maxLength": 512},
            },
        },
    },
    "Batch": {
        "type": "object",
        "required": ["id", "object", "endpoint", "input_file_id", "status", "request_counts"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "batch"},
            "endpoint": {"type": "string"},
            "input_file_id": {"type": "string"},
            "completion_window": {"type": "string"},
            "status": {
                "type": "string",
                "enum": [
                    "validating",
                    "failed",
                    "in_progress",
                    "finalizing",
                    "completed",
                    "expired",
                    "cancelling",
                    "cancelled",
                ],
            },
            "output_file_id": {"type": ["string", "null"]},
            "error_file_id": {"type": ["string", "null"]},
            "request_counts": {
                "type": "object",
                "properties": {
                    "total": {"type": "integer"},
                    "completed": {"type": "integer"},
                    "failed": {"type": "integer"},
                },
            },
        },
    },
    "BatchList": {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Batch")},
            "has_more": {"type": "boolean"},
        },
    },
    "OllamaChatRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string"},
            "messages": {"type": "array", "items": _ref("ChatMessage")},
            "format": {},
            "options": _ref("OllamaOptions"),
            **_GENERATION_COMMON,
        },
    },
    "OllamaGenerateRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": {"type": "string"},
            "prompt": {"type": "string"},
            "system": {"type": ["string", "null"]},
            "format": {},
            "options": _ref("OllamaOptions"),
            **_GENERATION_COMMON,
        },
    },
    "OllamaOptions": {
        "type": ["object", "null"],
        "properties": {
            "num_predict": {
                "anyOf": [{"const": -1}, {"type": "integer", "minimum": 1}, {"type": "null"}],
                "description": "-1 (no limit) or a positive integer.",
            }
        },
    },
    "OllamaModels": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": {"type": "object"}}},
    },
    "Fault": {
        "type": "object",
        "required": ["fault"],
        "properties": {
            "fault": {
                "type": "string",
                "enum": ["oom", "crash", "hang", "error_rate", "latency", "clear"],
            },
            "seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            "rate": {"type": "number", "minimum": 0, "maximum": 1},
            "extra_seconds": {"type": "number", "minimum": 0, "maximum": 3600},
        },
    },
}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {_JSON: {"schema": _ref(schema)}}}


def _path_param(name: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}]


_GENERATION_ERRORS = (400, 404, 413, 429, 500, 503)
_SSE = {"text/event-stream": {"schema": {"type": "string"}}}
_NDJSON = {"application/x-ndjson": {"schema": {"type": "string"}}}

_PATHS: dict[str, Any] = {
    "/health": {
        "get": {
            "summary": "Liveness: 200 while the process serves",
            "responses": {"200": _json({"type": "object", "properties": {"status": {}}})},
        }
    },
    "/health/ready": {
        "get": {
            "summary": "Readiness: 503 until the simulated model load ends",
            "responses": {
                "200": _json({"type": "object"}),
                "503": _json({"type": "object"}, "Loading"),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus exposition (vLLM's metric names)",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": _json({"type": "object"})},
        }
    },
    "/admin/faults": {
        "get": {
            "summary": "Faults in effect (loopback clients with the admin token)",
            "security": [{"adminToken": []}],
            "responses": {"200": _json({"type": "object"}), **_errors(401, 403)},
        },
        "post": {
            "summary": "Inject a fault: oom, crash, hang, error_rate, latency, clear",
            "security": [{"adminToken": []}],
            "requestBody": _body("Fault"),
            "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 413)},
        },
    },
    "/v1/models": {
        "get": {
            "summary": "The served model names",
            "security": [{"apiKey": []}],
            "responses": {"200": _json(_ref("ModelList")), **_errors(401)},
        }
    },
    "/v1/models/{model}": {
        "get": {
            "summary": "One served model",
            "security": [{"apiKey": []}],
            "parameters": _path_param("model"),
            "responses": {"200": _json(_ref("Model")), **_errors(401, 404)},
        }
    },
    "/v1/chat/completions": {
        "post": {
            "summary": "OpenAI chat completion (JSON, or SSE with stream: true)",
            "security": [{"apiKey": []}],
            "requestBody": _body("ChatCompletionRequest"),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {_JSON: {"schema": _ref("ChatCompletion")}, **_SSE},
                },
                **_errors(401, *_GENERATION_ERRORS),
            },
        }
    },
    "/v1/completions": {
        "post": {
            "summary": "OpenAI legacy completion (one prompt per request)",
            "security": [{"apiKey": []}],
            "requestBody": _body("CompletionRequest"),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {_JSON: {"schema": _ref("Completion")}, **_SSE},
                },
                **_errors(401, *_GENERATION_ERRORS),
            },
        }
    },
    "/v1/files": {
        "post": {
            "summary": "Upload a batch input file (multipart, streamed to disk)",
            "security": [{"apiKey": []}],
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": _ref("FileUpload")}},
            },
            "responses": {"200": _json(_ref("File")), **_errors(400, 401, 408, 413)},
        },
        "get": {
            "summary": "List files",
            "security": [{"apiKey": []}],
            "parameters": [
                {"name": "purpose", "in": "query", "required": False, "schema": {"type": "string"}}
            ],
            "responses": {"200": _json(_ref("FileList")), **_errors(401)},
        },
    },
    "/v1/files/{file_id}": {
        "get": {
            "summary": "One file's metadata",
            "security": [{"apiKey": []}],
            "parameters": _path_param("file_id"),
            "responses": {"200": _json(_ref("File")), **_errors(401, 404)},
        },
        "delete": {
            "summary": "Delete a file (400 while a batch uses it)",
            "security": [{"apiKey": []}],
            "parameters": _path_param("file_id"),
            "responses": {"200": _json(_ref("DeletedFile")), **_errors(400, 401, 404)},
        },
    },
    "/v1/files/{file_id}/content": {
        "get": {
            "summary": "A file's bytes (JSONL)",
            "security": [{"apiKey": []}],
            "parameters": _path_param("file_id"),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/jsonl": {"schema": {"type": "string"}}},
                },
                **_errors(401, 404),
            },
        }
    },
    "/v1/batches": {
        "post": {
            "summary": "Create a batch over an uploaded file",
            "security": [{"apiKey": []}],
            "requestBody": _body("BatchRequest"),
            "responses": {"200": _json(_ref("Batch")), **_errors(400, 401, 404, 413)},
        },
        "get": {
            "summary": "List batches, newest first",
            "security": [{"apiKey": []}],
            "parameters": [
                {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                },
            ],
            "responses": {"200": _json(_ref("BatchList")), **_errors(400, 401)},
        },
    },
    "/v1/batches/{batch_id}": {
        "get": {
            "summary": "One batch",
            "security": [{"apiKey": []}],
            "parameters": _path_param("batch_id"),
            "responses": {"200": _json(_ref("Batch")), **_errors(401, 404)},
        }
    },
    "/v1/batches/{batch_id}/cancel": {
        "post": {
            "summary": "Cancel a batch",
            "security": [{"apiKey": []}],
            "parameters": _path_param("batch_id"),
            "responses": {"200": _json(_ref("Batch")), **_errors(400, 401, 404)},
        }
    },
    "/api/chat": {
        "post": {
            "summary": "Ollama chat (NDJSON stream unless stream: false)",
            "security": [{"apiKey": []}],
            "requestBody": _body("OllamaChatRequest"),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {_JSON: {"schema": {"type": "object"}}, **_NDJSON},
                },
                **_errors(401, *_GENERATION_ERRORS, ollama=True),
            },
        }
    },
    "/api/generate": {
        "post": {
            "summary": "Ollama generate (NDJSON stream unless stream: false)",
            "security": [{"apiKey": []}],
            "requestBody": _body("OllamaGenerateRequest"),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {_JSON: {"schema": {"type": "object"}}, **_NDJSON},
                },
                **_errors(401, *_GENERATION_ERRORS, ollama=True),
            },
        }
    },
    "/api/tags": {
        "get": {
            "summary": "Ollama: the local model",
            "security": [{"apiKey": []}],
            "responses": {"200": _json(_ref("OllamaModels")), **_errors(401, ollama=True)},
        }
    },
    "/api/ps": {
        "get": {
            "summary": "Ollama: the loaded model and its memory",
            "security": [{"apiKey": []}],
            "responses": {"200": _json(_ref("OllamaModels")), **_errors(401, ollama=True)},
        }
    },
    "/api/version": {
        "get": {
            "summary": "Ollama: version",
            "security": [{"apiKey": []}],
            "responses": {
                "200": _json({"type": "object", "properties": {"version": {"type": "string"}}}),
                **_errors(401, ollama=True),
            },
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "harness reference server",
        "version": "1",
        "description": (
            "OpenAI- and Ollama-compatible endpoints of `harness serve` on a simulated GPU. "
            "With --api-key every route but /health*, /metrics, /openapi.json and /admin/* "
            "needs 'Authorization: Bearer <key>' (checked before routing)."
        ),
    },
    "servers": [{"url": "/"}],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "--api-key"},
            "adminToken": {"type": "http", "scheme": "bearer", "description": "--admin-token"},
        },
    },
}

BODY: bytes = orjson.dumps(DOCUMENT)
