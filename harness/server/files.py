"""OpenAI Files API (/v1/files): uploads stream straight to the data directory.

A multipart upload is parsed as it arrives and its file part written to disk chunk by chunk, so
a 1.4 GB batch file costs no more memory than a small one. Ids are checked against a strict
pattern before any path is built from them (no traversal).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse

from harness.rundir import write_json_atomic
from harness.server.asgi import Response, json_response, too_large
from harness.server.protocol import ApiError, invalid_value, missing

if TYPE_CHECKING:
    from harness.server.app import ServerState

FILE_ID = re.compile(r"file-[A-Za-z0-9]{1,64}")
UPLOAD_PURPOSES = ("batch",)
_MAX_FIELD_BYTES = 4096  # a form field's value (purpose, ...)
_MAX_PARTS = 16  # parts of one upload: the file, purpose and a few a client may add
_MAX_PART_HEAD_BYTES = 8192  # a part's headers, all together


class FileStore:
    """Files and their metadata under <data dir>/files: <id> (content) and <id>.json."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(".*.part"):  # an upload cut short by a restart
            leftover.unlink(missing_ok=True)

    @staticmethod
    def new_id() -> str:
        return "file-" + secrets.token_hex(12)

    def content_path(self, file_id: str) -> Path:
        """Where a file's bytes live; 404 for anything that is not a well-formed file id."""
        if not FILE_ID.fullmatch(file_id):
            raise _no_such_file(file_id)
        return self.root / file_id

    def get(self, file_id: str) -> dict[str, Any]:
        meta = self.content_path(file_id).with_suffix(".json")
        try:
            return orjson.loads(meta.read_bytes())
        except FileNotFoundError:
            raise _no_such_file(file_id) from None

    def register(self, file_id: str, filename: str, purpose: str) -> dict[str, Any]:
        """Publish a file whose content is in place: write its metadata atomically."""
        document = {
            "id": file_id,
            "object": "file",
            "bytes": self.content_path(file_id).stat().st_size,
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        write_json_atomic(self.root / f"{file_id}.json", document)
        return document

    def list(self, purpose: str | None = None) -> list[dict[str, Any]]:
        files = (orjson.loads(p.read_bytes()) for p in self.root.glob("file-*.json"))
        chosen = [f for f in files if purpose is None or f["purpose"] == purpose]
        return sorted(chosen, key=lambda f: (f["created_at"], f["id"]), reverse=True)

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        (self.root / f"{file_id}.json").unlink(missing_ok=True)
        self.content_path(file_id).unlink(missing_ok=True)


async def upload(request: Request, state: ServerState) -> Response:
    """POST /v1/files: multipart with a `file` part and purpose=batch."""
    limit = state.config.max_file_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise too_large(limit)
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(
            400,
            "Upload files as multipart/form-data with a 'file' part and a 'purpose' field.",
            code="invalid_content_type",
        )
    store = state.files
    file_id = store.new_id()
    partial = store.root / f".{file_id}.part"
    form = _StreamingForm(params[b"boundary"], partial)
    try:
        async for chunk in request.stream():
            form.feed(chunk)
            if form.file_bytes > limit:
                raise too_large(limit)
        form.finish()
        purpose = form.fields.get("purpose")
        if purpose is None:
            raise missing("purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise invalid_value("purpose", f"'{purpose}' is not supported here; use 'batch'.")
        if form.filename is None:
            raise missing("file")
        os.replace(partial, store.content_path(file_id))
    except ClientDisconnect:
        raise ApiError(400, "The client disconnected during the upload.") from None
    finally:
        form.close()
        partial.unlink(missing_ok=True)
    return json_response(store.register(file_id, form.filename, purpose))


async def retrieve(request: Request, state: ServerState, file_id: str) -> Response:
    return json_response(state.files.get(file_id))


async def content(request: Request, state: ServerState, file_id: str) -> FileResponse:
    meta = state.files.get(file_id)
    return FileResponse(
        state.files.content_path(file_id),
        media_type="application/jsonl",
        filename=meta["filename"],
    )


async def list_files(request: Request, state: ServerState) -> Response:
    data = state.files.list(request.query_params.get("purpose"))
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }
    )


async def delete(request: Request, state: ServerState, file_id: str) -> Response:
    user = state.batches.active_user_of(file_id)
    if user:
        raise ApiError(
            400,
            f"File {file_id} is in use by batch {user}; cancel the batch or wait for it to end.",
            param="file_id",
            code="file_in_use",
        )
    state.files.delete(file_id)
    return json_response({"id": file_id, "object": "file", "deleted": True})


def _no_such_file(file_id: str) -> ApiError:
    return ApiError(
        404, f"No such File object: {file_id[:80]}", param="file_id", code="file_not_found"
    )


class _StreamingForm:
    """multipart/form-data parsed as it arrives: the file part goes to disk, fields to memory."""

    def __init__(self, boundary: bytes, file_path: Path) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_bytes = 0
        self._file_path = file_path
        self._out: BinaryIO | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._value = bytearray()
        self._name: str | None = None
        self._writing = False
        self._parts = 0
        self._head_bytes = 0
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except ApiError:
            raise
        except Exception as exc:  # the parser's own errors: a malformed body
            raise ApiError(
                400, f"Malformed multipart body: {str(exc)[:200]}", code="invalid_multipart"
            ) from None

    def finish(self) -> None:
        """The body has ended: it must have ended with the closing boundary."""
        self._parser.finalize()
        self.close()
        if not self._ended:
            raise ApiError(
                400,
                "Truncated multipart body: it ended before the closing boundary. "
                "Send the whole upload.",
                code="invalid_multipart",
            )

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > _MAX_PARTS:
            raise ApiError(
                400,
                f"Too many form fields: an upload has at most {_MAX_PARTS} parts.",
                code="invalid_multipart",
            )
        self._head_bytes = 0
        self._headers = {}
        self._value = bytearray()
        self._name = None
        self._writing = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_head(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_head(end - start)
        self._header_value += data[start:end]

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > _MAX_PART_HEAD_BYTES:
            raise ApiError(
                400,
                f"A form part's headers pass {_MAX_PART_HEAD_BYTES} bytes.",
                code="invalid_multipart",
            )

    def _end(self) -> None:
        self._ended = True

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name = bytearray()
        self._header_value = bytearray()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self._name == "file" and filename is not None:
            if self.filename is not None:
                raise ApiError(400, "Send exactly one 'file' part.", param="file")
            self.filename = os.path.basename(filename.decode("utf-8", "replace")) or "upload.jsonl"
            self._out = open(self._file_path, "wb")  # noqa: SIM115 - closed in _part_end/close
            self._writing = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writing and self._out is not None:
            self._out.write(memoryview(data)[start:end])
            self.file_bytes += end - start
            return
        self._value += data[start:end]
        if len(self._value) > _MAX_FIELD_BYTES:
            raise ApiError(400, f"Form field '{self._name}' is too long.", param=self._name)

    def _part_end(self) -> None:
        if self._writing:
            self.close()
            self._writing = False
        elif self._name:
            self.fields[self._name] = self._value.decode("utf-8", "replace")
