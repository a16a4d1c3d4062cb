"""Streaming readers for every dataset format: candidates, batch headers and chat requests.

Files are never loaded whole: a batch document (or a top-level JSON array) is parsed incrementally
by ijson's C backend, JSON Lines line by line. Any of them may be gzip-compressed (found by its
magic bytes, whatever the name) or a member of a tar archive, named `ARCHIVE.tar.gz:MEMBER`.
Format detection reads a bounded prefix, never the whole first line of a one-line document.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import ijson
import orjson

from generators.jobs import job as default_job
from generators.prompts import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, chat_messages
from generators.schema import validator
from generators.writers import sidecar_path

FORMATS_READ = ("json", "json-array", "jsonl", "openai-batch")
PREFIX_BYTES = 1 << 16  # what detection reads: enough for any record's first line we write
_BUF = 1 << 16
_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class DatasetError(Exception):
    """The file is not a dataset this harness can read; the message says why."""


def split_member(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """(file, member) for `ARCHIVE.tar.gz:MEMBER`; (path, None) for any other path."""
    text = os.fspath(path)
    for suffix in _ARCHIVE_SUFFIXES:
        head, sep, member = text.rpartition(suffix + ":")
        if sep and member:
            return Path(head + suffix), member
    return Path(text), None


@contextlib.contextmanager
def open_dataset(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """The dataset's bytes as a binary stream: decompressed, archive member extracted, BOM gone.

    Every read error inside the block (a corrupt gzip, a torn archive) becomes a DatasetError.
    """
    file, member = split_member(path)
    with contextlib.ExitStack() as stack:
        try:
            if member is None:
                raw: IO[bytes] = stack.enter_context(open(file, "rb"))
            else:
                raw = _archive_member(stack, file, member)
            magic = _peek(raw, 2)
            if magic == _GZIP_MAGIC:
                raw = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
            stream = _Prefixed(raw)
            yield stream
        except FileNotFoundError:
            raise DatasetError(f"{file} does not exist") from None
        except IsADirectoryError:
            raise DatasetError(f"{file} is a directory, not a dataset file") from None
        except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
            raise DatasetError(f"{path} is a corrupt or truncated gzip file ({exc})") from None
        except tarfile.TarError as exc:
            raise DatasetError(f"{file} is not a readable tar archive ({exc})") from None
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None


def _archive_member(stack: contextlib.ExitStack, file: Path, member: str) -> IO[bytes]:
    archive = stack.enter_context(tarfile.open(file, "r:*"))  # noqa: SIM115 - the stack closes it
    try:
        info = archive.getmember(member)
    except KeyError:
        names = ", ".join(n for n in archive.getnames() if not n.endswith("manifest.json"))
        raise DatasetError(f"{file} has no member {member!r}; it holds: {names}") from None
    extracted = archive.extractfile(info) if info.isfile() else None
    if extracted is None:
        raise DatasetError(f"{file}:{member} is not a regular file")
    return extracted


def _peek(raw: IO[bytes], size: int) -> bytes:
    """The first bytes of a stream, which is then read from the start again."""
    if raw.seekable():
        position = raw.tell()
        data = raw.read(size)
        raw.seek(position)
        return data
    raise DatasetError("the dataset stream cannot be re-read")  # pragma: no cover


class _Prefixed(io.RawIOBase):
    """A stream whose first PREFIX_BYTES are kept (for detection) and whose BOM is dropped."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        prefix = raw.read(PREFIX_BYTES)
        self.prefix = prefix.removeprefix(_BOM)
        self._pending = memoryview(self.prefix)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._pending:
            count = min(len(buffer), len(self._pending))
            buffer[:count] = self._pending[:count]
            self._pending = self._pending[count:]
            return count
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return bytes(self._pending) + self._raw.read()
        return super().read(size) or b""


def detect_format(path: str | os.PathLike[str]) -> str:
    """One of FORMATS_READ, from the first PREFIX_BYTES of the (decompressed) data:
    "json" (batch document), "json-array" (records in a top-level array), "jsonl" (candidate
    lines) or "openai-batch" (request lines)."""
    with open_dataset(path) as stream:
        return _format_of(path, stream.prefix)


def _format_of(path: str | os.PathLike[str], prefix: bytes) -> str:
    head = prefix.lstrip()
    if not head:
        raise DatasetError(f"{path} is empty")
    if head.startswith(b"["):
        return "json-array"
    if not head.startswith(b"{"):
        raise DatasetError(f"{path} does not start with a JSON object or array: not a dataset")
    line, newline, _ = head.partition(b"\n")
    if not newline:  # one line longer than the prefix: a compact batch document
        return "json"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "json"  # a multi-line (indented) document
    if not isinstance(record, dict) or "candidates" in record:
        return "json"
    if "custom_id" in record and "body" in record:
        return "openai-batch"
    return "jsonl"


def _json_error(path: str | os.PathLike[str], exc: Exception) -> DatasetError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DatasetError(f"{path} is truncated or not valid JSON: {text[:200]}")


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    with open_dataset(path) as stream:
        for number, line in enumerate(io.BufferedReader(stream, _BUF), 1):
            if line.strip():
                yield number, line


def _items(path: str | os.PathLike[str], prefix: str) -> Iterator[Any]:
    """The values at an ijson prefix, streamed ("candidates.item" or "item")."""
    with open_dataset(path) as stream:
        try:
            yield from ijson.items(stream, prefix, use_float=True, buf_size=_BUF)
        except ijson.JSONError as exc:
            raise _json_error(path, exc) from None


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The batch header (job, model, seed, ...) of a batch document or a jsonl's sidecar.

    Keys before `candidates` cost nothing; keys after it mean one pass over the candidates.
    """
    fmt = detect_format(path)
    if fmt == "jsonl":
        file, member = split_member(path)
        meta = sidecar_path(file.with_name(file.name.removesuffix(".gz")))
        if member is None and meta.exists():
            return orjson.loads(meta.read_bytes())
        return {}
    if fmt != "json":
        return {}
    header: dict[str, Any] = {}
    with open_dataset(path) as stream:
        events = ijson.parse(stream, use_float=True, buf_size=_BUF)
        try:
            for prefix, event, value in events:
                if prefix != "" or event != "map_key":
                    continue
                if value == "candidates":
                    if "job" in header and "model" in header:
                        break
                    _skip_value(events)
                    continue
                header[value] = _build_value(events)
        except ijson.JSONError as exc:
            raise _json_error(path, exc) from None
    return header


def _build_value(events: Iterator[tuple[str, str, Any]]) -> Any:
    builder = ijson.ObjectBuilder()
    depth = 0
    for _, event, value in events:
        builder.event(event, value)
        depth += event in ("start_map", "start_array")
        depth -= event in ("end_map", "end_array")
        if depth == 0:
            return builder.value
    raise ijson.IncompleteJSONError("the document ends inside a value")


def _skip_value(events: Iterator[tuple[str, str, Any]]) -> None:
    depth = 0
    for _, event, _value in events:
        depth += event in ("start_map", "start_array")
        depth -= event in ("end_map", "end_array")
        if depth == 0:
            return


def iter_candidates(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every candidate of a batch document, array or candidates .jsonl file, in order."""
    fmt = detect_format(path)
    if fmt in ("json", "json-array"):
        for record in _items(path, "candidates.item" if fmt == "json" else "item"):
            if isinstance(record, dict) and "custom_id" in record and "body" in record:
                yield _candidate_of(record["custom_id"], record["body"])
            else:
                yield record
        return
    if fmt == "openai-batch":
        for custom_id, body in iter_requests(path):
            yield _candidate_of(custom_id, body)
        return
    for number, line in _lines(path):
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: invalid JSON: {exc}") from None


def _candidate_of(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") if isinstance(body, dict) else None
    user = next(
        (
            m.get("content")
            for m in (messages if isinstance(messages, list) else ())
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "{}",
    )
    try:
        return orjson.loads(user)
    except (orjson.JSONDecodeError, TypeError):
        raise DatasetError(f"request {custom_id} does not carry a candidate JSON") from None


def iter_records(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Every record as the file holds it (candidates, or whole request lines), streamed."""
    fmt = detect_format(path)
    if fmt == "json":
        yield from _items(path, "candidates.item")
    elif fmt == "json-array":
        yield from _items(path, "item")
    else:
        for number, line in _lines(path):
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: invalid JSON: {exc}") from None


def _header_part(path: str | os.PathLike[str], header: dict[str, Any], key: str) -> Any:
    """The header's job or model, as the schema defines it (prompts are built from it)."""
    value = header.get(key)
    if value:
        error = next(iter(validator(key).iter_errors(value)), None)
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "itself"
            raise DatasetError(
                f"{path}: the batch header's {key} does not match the schema ({where}: "
                f"{error.message[:200]})"
            )
    return value


def _is_request(record: Any) -> bool:
    """An OpenAI Batch request: a string custom_id and an object body (what is sent)."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("custom_id"), str)
        and isinstance(record.get("body"), dict)
    )


def _holds_requests(path: str | os.PathLike[str]) -> bool:
    """Whether a top-level array holds OpenAI Batch requests (else candidates)."""
    first = next(_items(path, "item"), None)
    return isinstance(first, dict) and "custom_id" in first and "body" in first


def iter_requests(
    path: str | os.PathLike[str],
    model: str | None = None,
    max_tokens: int | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(custom_id, chat completion body) for every candidate of any dataset format.

    model and max_tokens override what the file says (e.g. to target another server's model).
    """
    fmt = detect_format(path)
    if fmt == "openai-batch" or (fmt == "json-array" and _holds_requests(path)):
        for number, request in enumerate(iter_records(path), 1):
            if not _is_request(request):
                raise DatasetError(
                    f"{path}: request {number} is not an OpenAI Batch request (a string "
                    "custom_id and an object body)"
                )
            custom_id, body = request["custom_id"], request["body"]
            if model is not None:
                body["model"] = model
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            yield custom_id, body
        return
    header = read_header(path)
    job = _header_part(path, header, "job") or default_job()
    settings = _header_part(path, header, "model") or {}
    body_model = model or settings.get("name") or DEFAULT_MODEL
    body_max_tokens = max_tokens or settings.get("max_tokens") or DEFAULT_MAX_TOKENS
    for index, candidate in enumerate(iter_candidates(path)):
        if not isinstance(candidate, dict):
            raise DatasetError(f"{path}: record {index} is not a JSON object")
        yield (
            str(candidate.get("id") or f"cand-{index:07d}"),
            {
                "model": body_model,
                "messages": chat_messages(job, candidate),
                "max_tokens": body_max_tokens,
                "temperature": 0.0,
            },
        )
