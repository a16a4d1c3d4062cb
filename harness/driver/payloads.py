"""The requests a run sends, as the bytes that go on the wire: (custom_id, encoded body).

An OpenAI Batch line as `harness gen` writes it (compact, `body` last) already holds the body's
bytes: they are sliced out, never parsed and encoded again (that halves the driver's reading
cost). The first such line a reader meets is also parsed, to check that the slice is its body (a
writer that puts keys after `body` sends its whole file the slow way). Any other line or format,
and any override of model or max_tokens, goes through the readers and orjson, so every dataset
the readers accept can be sent.

Driver processes (`harness scale --processes N`) each send a Share of the requests. A plain
file of such lines is cut into BLOCK-byte blocks dealt round-robin, so each process reads only
its own blocks (one pass over the file in all, however many processes) and the requests a resume
still has to send are spread evenly over them; any other dataset is split by a stable hash of
the custom_id, each process reading it whole. Either way each custom_id belongs to one process.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import zlib
from collections.abc import Container, Iterator
from dataclasses import dataclass

import orjson

Payload = tuple[str, bytes]
BLOCK = 1 << 20  # bytes of a plain file dealt to one process at a time (~75 generated requests)

# {"custom_id":"…","method":"POST","url":"…","body":{…}}: the layout our writers produce.
_COMPACT = re.compile(
    rb'\{"custom_id":"((?:[^"\\]|\\.)*)","method":"POST","url":"[^"\\]*","body":(?=\{)'
)
_NEVER = re.compile(rb"(?!)")  # matches nothing: every line parsed


@dataclass(frozen=True)
class Share:
    """The part of a run that driver process `index` of `count` sends."""

    index: int
    count: int
    end: int | None = None  # a plain file: where its first n requests end (see request_end)


def shard_of(custom_id: str, shards: int) -> int:
    """The process (0..shards-1) a custom_id of a dataset split by hash belongs to: stable in
    every process and run."""
    return zlib.crc32(custom_id.encode()) % shards


def request_end(path: str | os.PathLike[str], n: int) -> int | None:
    """The byte offset where the first n requests of a plain file of compact lines end (found
    once, by the parent of the driver processes); None for any other dataset."""
    if not _plain_compact(path):
        return None
    offset = requests = 0
    with open(path, "rb", buffering=1 << 20) as handle:
        for line in handle:
            if requests == n:
                break
            offset += len(line)
            requests += bool(line.strip())  # blank lines are no requests, as the readers say
    return offset


def iter_payloads(
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    limit: int | None = None,
    share: Share | None = None,
) -> Iterator[Payload]:
    """(custom_id, JSON body bytes) of the first `limit` requests of a dataset (in file order,
    streamed), or of one process's share of them."""
    as_written = model is None and max_tokens is None
    if as_written and _plain_compact(path):  # the common case: the readers are not even loaded
        if share is None:
            return _sliced(path, _plain_lines(path), limit)
        end = share.end if share.end is not None or limit is None else request_end(path, limit)
        return _sliced(path, _block_lines(path, share, end), None)
    import generators

    if as_written and generators.detect_format(path) == "openai-batch":  # gzipped, archived...
        requests = _sliced(path, _reader_lines(path), limit)
    else:
        requests = (
            (custom_id, orjson.dumps(body))
            for custom_id, body in itertools.islice(
                generators.iter_requests(path, model=model, max_tokens=max_tokens), limit
            )
        )
    if share is None or share.count == 1:
        return requests
    k, count = share.index, share.count
    return ((custom_id, body) for custom_id, body in requests if shard_of(custom_id, count) == k)


def dataset_ids(path: str | os.PathLike[str]) -> Iterator[str]:
    """Every custom_id of a dataset in order, read as the driver reads its requests (a plain
    file of compact lines: sliced, not parsed), so a file whose ids all read is one whose
    requests all send: a line the driver could not send is a DatasetError here, before a run."""
    if _plain_compact(path):
        return (custom_id for custom_id, _ in _sliced(path, _plain_lines(path), None))
    import generators

    return (custom_id for custom_id, _ in generators.iter_requests(path))


def pending(
    path: str | os.PathLike[str],
    n: int,
    completed: Container[str] = (),
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    share: Share | None = None,
) -> Iterator[Payload]:
    """The first n requests of a dataset that have no result yet (a resume skips the others)."""
    requests = iter_payloads(path, model=model, max_tokens=max_tokens, limit=n, share=share)
    if not completed:
        return requests
    return ((custom_id, body) for custom_id, body in requests if custom_id not in completed)


def _plain_compact(path: str | os.PathLike[str]) -> bool:
    """A plain file (not gzipped, no BOM) whose first line is a compact OpenAI Batch request."""
    try:
        with open(path, "rb") as handle:
            return _COMPACT.match(handle.read(4096)) is not None
    except OSError:  # a missing file, an archive member: the readers say what is wrong
        return False


def _plain_lines(path: str | os.PathLike[str]) -> Iterator[tuple[str, bytes]]:
    with open(path, "rb", buffering=1 << 16) as handle:
        for number, line in enumerate(handle, 1):
            yield f"line {number}", line


def _reader_lines(path: str | os.PathLike[str]) -> Iterator[tuple[str, bytes]]:
    import generators

    with generators.open_dataset(path) as stream:
        for number, line in enumerate(io.BufferedReader(stream, 1 << 16), 1):
            yield f"line {number}", line


def _block_lines(
    path: str | os.PathLike[str], share: Share, end: int | None
) -> Iterator[tuple[str, bytes]]:
    """The lines that start in this share's blocks (index, index + count, ...) before `end`."""
    with open(path, "rb", buffering=1 << 16) as handle:
        end = os.fstat(handle.fileno()).st_size if end is None else end
        start = share.index * BLOCK
        while start < end:
            stop = min(start + BLOCK, end)
            position = max(0, start - 1)
            handle.seek(position)
            if start > 0:  # the line that starts before the block is the previous block's
                position += len(handle.readline())
            while position < stop:
                line = handle.readline()
                if not line:
                    return
                yield f"byte {position}", line
                position += len(line)
            start += share.count * BLOCK


def _sliced(
    path: str | os.PathLike[str], lines: Iterator[tuple[str, bytes]], limit: int | None
) -> Iterator[Payload]:
    match = _COMPACT.match
    slow = _parsed
    checked = False
    requests = 0
    for where, line in lines:
        if requests == limit:
            return
        head = match(line)
        # the body's `}` then the line's: nothing follows the body
        end = -2 if line.endswith(b"}}\n") else -1 if line.endswith(b"}}") else 0
        if head is None or not end:
            if line.strip():
                requests += 1
                yield slow(path, where, line)
            continue
        requests += 1
        body = line[head.end() : end]
        if not checked:  # the first sliced line: is the slice its body?
            checked = True
            custom_id, encoded = slow(path, where, line)
            if not _same_json(body, encoded):
                match = _NEVER.match  # a layout with keys after the body: parse every line
                yield custom_id, encoded
                continue
        quoted = head.group(1)
        yield orjson.loads(b'"%b"' % quoted) if b"\\" in quoted else quoted.decode(), body


def _same_json(data: bytes, encoded: bytes) -> bool:
    try:
        return orjson.loads(data) == orjson.loads(encoded)
    except orjson.JSONDecodeError:
        return False


def _parsed(path: str | os.PathLike[str], where: str, line: bytes) -> Payload:
    """A line of any other layout: parsed, its body encoded again."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = None
    custom_id = record.get("custom_id") if isinstance(record, dict) else None
    body = record.get("body") if isinstance(record, dict) else None
    if not isinstance(custom_id, str) or not isinstance(body, dict):
        from generators import DatasetError

        raise DatasetError(
            f"{path}: {where}: not an OpenAI Batch request (a string custom_id and an object body)"
        )
    return custom_id, orjson.dumps(body)
