"""Streaming readers for every dataset format: candidates, batch headers and chat requests.

Files are never loaded whole: a batch document is parsed incrementally (ijson), JSON Lines
line by line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson
import orjson

from generators.jobs import job as default_job
from generators.prompts import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, chat_messages
from generators.writers import sidecar_path


class DatasetError(Exception):
    """The file is not a dataset this harness can read; the message says why."""


def detect_format(path: str | os.PathLike[str]) -> str:
    """ "json" (batch document), "jsonl" (candidates) or "openai-batch" (request lines)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).lstrip()
            if head.startswith(b"{") and b"\n" not in head.rstrip(b"\n"):
                handle.seek(0)
                first_line = handle.readline()
            else:
                first_line = head.split(b"\n", 1)[0] if head else b""
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a directory, not a dataset file") from None
    if not head:
        raise DatasetError(f"{path} is empty")
    if not head.startswith(b"{"):
        raise DatasetError(f"{path} does not start with a JSON object: not a dataset file")
    try:
        record = orjson.loads(first_line)
    except orjson.JSONDecodeError:
        return "json"  # a multi-line (indented) batch document
    if "candidates" in record:
        return "json"
    if "custom_id" in record and "body" in record:
        return "openai-batch"
    return "jsonl"


def _open(path: Path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with _open(path) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The batch header (job, model, seed, ...) of a batch document or a jsonl's sidecar."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "json":
        header: dict[str, Any] = {}
        with _open(path) as handle:
            builder = None
            key = None
            for prefix, event, value in ijson.parse(handle, use_float=True):
                if prefix == "" and event == "map_key":
                    if value == "candidates":
                        break
                    key = value
                    builder = ijson.ObjectBuilder()
                elif builder is not None and key is not None:
                    builder.event(event, value)
                    if prefix == key and event not in ("start_map", "start_array", "map_key"):
                        header[key] = builder.value
                        builder = key = None
        return header
    if fmt == "jsonl":
        meta = sidecar_path(path)
        if meta.exists():
            return orjson.loads(meta.read_bytes())
        return {}
    return {}


def iter_candidates(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every candidate of a batch document or a candidates .jsonl file, in order."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "json":
        with _open(path) as handle:
            try:
                yield from ijson.items(handle, "candidates.item", use_float=True)
            except ijson.JSONError as exc:
                raise DatasetError(f"{path} is not valid JSON: {exc}") from None
        return
    if fmt == "openai-batch":
        for custom_id, body in iter_requests(path):
            user = next((m["content"] for m in body["messages"] if m["role"] == "user"), "{}")
            try:
                yield orjson.loads(user)
            except orjson.JSONDecodeError:
                raise DatasetError(f"request {custom_id} does not carry a candidate JSON") from None
        return
    for number, line in _lines(path):
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: invalid JSON: {exc}") from None


def iter_requests(
    path: str | os.PathLike[str],
    model: str | None = None,
    max_tokens: int | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(custom_id, chat completion body) for every candidate of any dataset format.

    model and max_tokens override what the file says (e.g. to target another server's model).
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "openai-batch":
        for number, line in _lines(path):
            try:
                request = orjson.loads(line)
                custom_id, body = request["custom_id"], request["body"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise DatasetError(f"{path}:{number}: not an OpenAI Batch request line") from None
            if model is not None:
                body["model"] = model
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            yield custom_id, body
        return
    header = read_header(path)
    job = header.get("job") or default_job()
    settings = header.get("model") or {}
    body_model = model or settings.get("name") or DEFAULT_MODEL
    body_max_tokens = max_tokens or settings.get("max_tokens") or DEFAULT_MAX_TOKENS
    for index, candidate in enumerate(iter_candidates(path)):
        yield (
            str(candidate.get("id") or f"cand-{index:07d}"),
            {
                "model": body_model,
                "messages": chat_messages(job, candidate),
                "max_tokens": body_max_tokens,
                "temperature": 0.0,
            },
        )
