"""The recording reverse proxy: every request passes to the upstream unchanged (streaming too);
inference requests (OpenAI, Ollama, Batch input files) are written as OpenAI Batch-like lines.

A line: {"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": <chat request>,
"capture": {"api", "path", "at", "anonymized"}, "response"?}; Ollama bodies are translated to
the OpenAI chat shape (the original stays under capture.original), so `harness learn` and the
dataset readers take a capture as they take any batch file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from generators.learn.sample import MAX_DEPTH, nests_deeper
from harness.capture.anonymize import Pseudonymizer

MAX_BODY_BYTES = 512 << 20  # a request body the proxy buffers (a Batch input file at most)
MAX_RECORDED_RESPONSE = 8 << 20  # response bytes kept for --responses; the rest only passes
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_INFERENCE = {
    "/v1/chat/completions": "openai",
    "/v1/completions": "openai",
    "/v1/embeddings": "openai",
    "/api/chat": "ollama",
    "/api/generate": "ollama",
    "/api/embed": "ollama",
    "/api/embeddings": "ollama",
}


class CaptureWriter:
    """Appends whole lines to the capture (one write each; a torn last line is cut on open)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(self._fd).st_size
        if size:
            data = path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < size:
                os.ftruncate(self._fd, keep)
            self.lines = data[:keep].count(b"\n")
        else:
            self.lines = 0

    def write(self, record: dict) -> None:
        os.write(self._fd, orjson.dumps(record) + b"\n")
        self.lines += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self._fd)
        os.close(self._fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_chat(path: str, body: dict) -> dict:
    """An Ollama request as the OpenAI request a replay sends; OpenAI ones stay as they are."""
    if path == "/api/chat":
        options = body.get("options") or {}
        chat = {"model": body.get("model"), "messages": body.get("messages") or []}
        if "num_predict" in options:
            chat["max_tokens"] = options["num_predict"]
        if "temperature" in options:
            chat["temperature"] = options["temperature"]
        return chat
    if path == "/api/generate":
        messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
        messages.append({"role": "user", "content": body.get("prompt", "")})
        chat = {"model": body.get("model"), "messages": messages}
        options = body.get("options") or {}
        if "num_predict" in options:
            chat["max_tokens"] = options["num_predict"]
        return chat
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


def _replay_url(path: str) -> str:
    return {
        "/api/chat": "/v1/chat/completions",
        "/api/generate": "/v1/chat/completions",
        "/api/embed": "/v1/embeddings",
        "/api/embeddings": "/v1/embeddings",
    }.get(path, path)


def _decoded(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompress(data)
    return data


def _response_summary(status: int, data: bytes, content_type: str) -> dict[str, Any]:
    """A response as recorded: its JSON, or the text assembled from a stream's chunks."""
    if "json" in content_type and "ndjson" not in content_type:
        try:
            return {"status": status, "body": orjson.loads(data)}
        except orjson.JSONDecodeError:
            pass
    parts: list[str] = []
    for raw in data.splitlines():
        line = raw.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line or line == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(chunk, dict):
            continue
        for choice in chunk.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") or choice.get("text")
            if isinstance(piece, str):
                parts.append(piece)
        message = chunk.get("message") or {}
        if isinstance(message.get("content"), str):
            parts.append(message["content"])
        if isinstance(chunk.get("response"), str):
            parts.append(chunk["response"])
    return {"status": status, "stream": True, "content": "".join(parts)}


class CaptureProxy:
    """The proxy's state: upstream client, writer, pseudonymizer (None with --raw), counters."""

    def __init__(
        self,
        upstream: str,
        writer: CaptureWriter,
        pseudonymizer: Pseudonymizer | None,
        responses: bool = False,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.writer = writer
        self.pseudonymizer = pseudonymizer
        self.responses = responses
        self.client = httpx.AsyncClient(
            base_url=self.upstream, timeout=httpx.Timeout(600, connect=10), follow_redirects=False
        )
        self.passed = 0
        self.recorded = 0
        self._lock = asyncio.Lock()

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self.client.aclose()

        return Starlette(
            routes=[Route("/{path:path}", self.handle, methods=methods)], lifespan=lifespan
        )

    def _clean(self, body: Any) -> Any:
        return body if self.pseudonymizer is None else self.pseudonymizer.json(body)

    def _line(self, api: str, path: str, custom_id: str, body: dict, original: dict | None) -> dict:
        capture: dict[str, Any] = {
            "api": api,
            "path": path,
            "at": _now(),
            "anonymized": self.pseudonymizer is not None,
        }
        if original is not None:
            capture["original"] = original
        chat = self._clean(_as_chat(path, body))
        return {
            "custom_id": custom_id,
            "method": "POST",
            "url": _replay_url(path),
            "body": chat,
            "capture": capture,
        }

    def _next_id(self) -> str:
        return f"cap-{self.writer.lines + 1:07d}"

    def _batch_lines(self, body: bytes, headers: httpx.Headers) -> list[dict]:
        """The request lines of a Batch input file upload (multipart), each its own line."""
        content_type = headers.get("content-type", "")
        if "multipart/form-data" not in content_type:
            return []
        message = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        import email.parser
        import email.policy

        parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(message)
        lines = []
        for part in parsed.iter_parts():
            if part.get_param("name", header="content-disposition") != "file":
                continue
            payload = part.get_payload(decode=True) or b""
            for raw in payload.splitlines():
                try:
                    request = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(request, dict) and isinstance(request.get("body"), dict):
                    _check_depth(request)
                    lines.append(request)
        return lines

    async def handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        body = b""
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_BODY_BYTES:
                return JSONResponse(_error("request body over the capture limit", 413), 413)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        upstream_request = self.client.build_request(
            request.method,
            path,
            params=request.query_params.multi_items(),
            headers=headers,
            content=body,
        )
        pending: list[dict] = []
        if request.method == "POST":
            try:
                pending = self._pending(path, body, upstream_request.headers)
            except _Unrecordable as exc:  # refused, not passed on unrecorded
                return JSONResponse(_error(str(exc), 400), 400)
        try:
            upstream = await self.client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            return JSONResponse(
                _error(f"upstream {self.upstream} unreachable: {type(exc).__name__}", 502), 502
            )
        self.passed += 1
        if not self.responses:
            await self._record(pending, None)
        response_headers = [
            (k, v)
            for k, v in upstream.headers.items()
            if k.lower() not in _HOP_BY_HOP - {"content-length"}
        ]
        return StreamingResponse(
            self._relay(upstream, pending),
            status_code=upstream.status_code,
            headers=dict(response_headers),
        )

    def _pending(self, path: str, body: bytes, headers: httpx.Headers) -> list[dict]:
        api = _INFERENCE.get(path)
        try:
            if api is not None:
                parsed = orjson.loads(body)
                if isinstance(parsed, dict):
                    _check_depth(parsed)
                    original = self._clean(parsed) if api == "ollama" else None
                    return [self._line(api, path, "", parsed, original)]
            elif path == "/v1/files":
                return [
                    self._line(
                        "batch",
                        str(line.get("url", "/v1/chat/completions")),
                        str(self._clean(line.get("custom_id", ""))),
                        line["body"],
                        None,
                    )
                    for line in self._batch_lines(body, headers)
                ]
        except (orjson.JSONDecodeError, ValueError):
            return []
        return []

    async def _record(self, pending: list[dict], response: dict | None) -> None:
        async with self._lock:
            for line in pending:
                if not line["custom_id"]:
                    line["custom_id"] = self._next_id()
                if response is not None:
                    line["response"] = self._clean(response)
                self.writer.write(line)
                self.recorded += 1

    async def _relay(self, upstream: httpx.Response, pending: list[dict]) -> AsyncIterator[bytes]:
        kept = bytearray()
        try:
            async for chunk in upstream.aiter_raw():
                if self.responses and len(kept) < MAX_RECORDED_RESPONSE:
                    kept += chunk
                yield chunk
        finally:
            await upstream.aclose()
            if self.responses and pending:
                try:
                    data = _decoded(bytes(kept), upstream.headers.get("content-encoding", ""))
                except zlib.error:
                    data = b""
                summary = _response_summary(
                    upstream.status_code, data, upstream.headers.get("content-type", "")
                )
                await self._record(pending, summary)


class _Unrecordable(Exception):
    """A request the capture cannot record (so it is refused, with this message)."""


def _check_depth(body: Any) -> None:
    if nests_deeper(body):
        raise _Unrecordable(
            f"request body nests lists and objects more than {MAX_DEPTH} deep: "
            "the capture cannot anonymize or record it"
        )


def _error(message: str, status: int) -> dict:
    return {"error": {"message": message, "type": "capture_proxy_error", "code": status}}


def started_banner(listen: str, upstream: str, out: Path, raw: bool) -> str:
    mode = "RAW (real personal data is written!)" if raw else "anonymized (pseudonyms)"
    return f"capture: http://{listen} -> {upstream}, recording to {out}, {mode}; Ctrl-C to stop"


__all__ = ["CaptureProxy", "CaptureWriter", "started_banner"]
