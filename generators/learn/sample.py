"""Sample records from any file a user has: a JSON document, an array, JSON Lines, a batch
document with a list inside, OpenAI Batch request lines or a capture (`.gz` too).

A sample is small and bounded (MAX_RECORDS), so a document is parsed whole; JSON Lines are read
line by line. This reader is the learn room's own: the dataset readers stream candidates only.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

MAX_RECORDS = 200_000  # a sample beyond this is cut here: learning needs far fewer
MAX_DOCUMENT_BYTES = 1 << 30
# Lists and objects in lists and objects, at most: a profile nests two levels for each, JSON
# writers stop at a few hundred (orjson at 255), and real records rarely pass 10
MAX_DEPTH = 64


class SampleError(Exception):
    """The sample cannot be learned from; the message says why in one line."""


class Sample(NamedTuple):
    records: list[dict[str, Any]]
    job: dict[str, Any] | None  # a batch document's job block, when it has one
    system_prompt: str | None  # the system message of request lines, when they carry one
    locale: str | None  # a batch document's locale, when it says


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise SampleError(f"{path} is over {MAX_DOCUMENT_BYTES >> 20} MB: use a smaller sample")
        data = path.read_bytes()
    except FileNotFoundError:
        raise SampleError(f"sample {path} does not exist") from None
    except IsADirectoryError:
        raise SampleError(f"sample {path} is a directory, not a file") from None
    except OSError as exc:
        raise SampleError(f"cannot read sample {path}: {exc.strerror}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SampleError(f"{path} is not a readable .gz file: {exc}") from None
    return data


def resolve_pointer(document: Any, pointer: str, path: Path) -> Any:
    """RFC 6901 JSON pointer ("/data/items"); a leading "/" is optional."""
    node = document
    for token in [t for t in pointer.strip("/").split("/") if t] if pointer.strip("/") else []:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise SampleError(f"{path}: --records {pointer!r} does not exist in the document")
    return node


def _find_records(document: Any, path: Path) -> list[Any]:
    """The list of records inside a document: "candidates"/"records"/"data"/"items", else the
    longest list of objects one or two levels down, else the document itself as one record."""
    if isinstance(document, list):
        return document
    if not isinstance(document, dict):
        raise SampleError(f"{path} holds a JSON {type(document).__name__}, not records")
    for key in ("candidates", "records", "data", "items", "results", "rows"):
        value = document.get(key)
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return value
    best: list[Any] = []
    for value in document.values():
        lists = [value] if isinstance(value, list) else []
        if isinstance(value, dict):
            lists += [v for v in value.values() if isinstance(v, list)]
        for candidate in lists:
            if (
                len(candidate) > len(best)
                and candidate
                and all(isinstance(v, dict) for v in candidate)
            ):
                best = candidate
    return best if len(best) >= 2 else [document]


def _request_record(line: dict[str, Any]) -> tuple[Any, str | None]:
    """(record, system prompt) of an OpenAI Batch or capture line: the user message's JSON."""
    body = line.get("body") or {}
    messages = body.get("messages") or []
    system = next((m.get("content") for m in messages if m.get("role") == "system"), None)
    user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    if not isinstance(user, str):
        return body, system if isinstance(system, str) else None
    try:
        record = orjson.loads(user)
    except orjson.JSONDecodeError:
        record = {"prompt": user}  # free text prompts are learned as a text field
    return record, system if isinstance(system, str) else None


def _lines(data: bytes, path: Path) -> Iterator[Any]:
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SampleError(f"{path}:{number}: invalid JSON: {exc}") from None


def read_sample(
    paths: Sequence[str | os.PathLike[str]], pointer: str | None = None, limit: int = MAX_RECORDS
) -> Sample:
    """All records of the sample files, in order; one-line SampleErrors for what cannot be used."""
    records: list[Any] = []
    job = system = locale = None
    for raw in paths:
        path = Path(raw)
        data = _read(path)
        if not data.strip():
            raise SampleError(f"sample {path} is empty")
        try:
            document = orjson.loads(data)
            items = (
                resolve_pointer(document, pointer, path)
                if pointer
                else _find_records(document, path)
            )
            if isinstance(document, dict):
                job = job or (
                    document.get("job") if isinstance(document.get("job"), dict) else None
                )
                locale = locale or (
                    document.get("locale") if isinstance(document.get("locale"), str) else None
                )
            if not isinstance(items, list):
                items = [items]
        except orjson.JSONDecodeError:
            items = list(_lines(data, path))  # JSON Lines
            if pointer:
                items = [resolve_pointer(item, pointer, path) for item in items]
        for item in items:
            if (
                isinstance(item, dict)
                and "custom_id" in item
                and isinstance(item.get("body"), dict)
            ):
                item, prompt = _request_record(item)
                system = system or prompt
            records.append(item)
            if len(records) >= limit:
                break
    if not records:
        raise SampleError("the sample holds no records: give a file with at least one JSON record")
    kinds = {type(r).__name__ for r in records}
    if kinds != {"dict"}:
        first = next(i for i, r in enumerate(records) if not isinstance(r, dict))
        names = ", ".join(sorted(_json_type(r) for r in {type(r): r for r in records}.values()))
        raise SampleError(
            f"records of mixed types ({names}): record {first} is not a JSON object; "
            "point --records at the list of objects"
        )
    return Sample(records, job, system, locale)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def nests_deeper(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when value nests lists and objects more than `limit` deep (walked without
    recursion: the value may be anything a client sent)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        if children and depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
