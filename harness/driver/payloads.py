"""The requests a run sends, as the bytes that go on the wire: (custom_id, encoded body).

An OpenAI Batch line as `harness gen` writes it (compact, `body` last) already holds the body's
bytes: they are sliced out, never parsed and encoded again (that halves the driver's reading
cost). The first such line of a file is also parsed, to check that the slice is its body (a
writer that puts keys after `body` sends its whole file the slow way). Any other line or format,
and any override of model or max_tokens, goes through the readers and orjson, so every dataset
the readers accept can be sent.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import zlib
from collections.abc import Container, Iterator

import orjson

import generators

Payload = tuple[str, bytes]

# {"custom_id":"…","method":"POST","url":"…","body":{…}}: the layout our writers produce.
_COMPACT = re.compile(
    rb'\{"custom_id":"((?:[^"\\]|\\.)*)","method":"POST","url":"[^"\\]*","body":(?=\{)'
)


def shard_of(custom_id: str, shards: int) -> int:
    """The driver process (0..shards-1) a custom_id belongs to: a stable hash, the same in every
    process and run, so a resume with another process count still splits the ids cleanly."""
    return zlib.crc32(custom_id.encode()) % shards


def iter_payloads(
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[Payload]:
    """(custom_id, JSON body bytes) of the first `limit` requests of a dataset, in file order,
    streamed; with shard (k, shards), only those of driver process k (others are not sliced)."""
    if model is None and max_tokens is None and generators.detect_format(path) == "openai-batch":
        return _sliced(path, limit, shard)
    requests = (
        (custom_id, orjson.dumps(body))
        for custom_id, body in itertools.islice(
            generators.iter_requests(path, model=model, max_tokens=max_tokens), limit
        )
    )
    if shard is None:
        return requests
    k, shards = shard
    return ((custom_id, body) for custom_id, body in requests if shard_of(custom_id, shards) == k)


def pending(
    path: str | os.PathLike[str],
    n: int,
    completed: Container[str] = (),
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[Payload]:
    """The first n requests of a dataset that have no result yet (a resume skips the others)."""
    requests = iter_payloads(path, model=model, max_tokens=max_tokens, limit=n, shard=shard)
    if not completed:
        return requests
    return ((custom_id, body) for custom_id, body in requests if custom_id not in completed)


def _sliced(
    path: str | os.PathLike[str], limit: int | None, shard: tuple[int, int] | None
) -> Iterator[Payload]:
    match = _COMPACT.match
    slow = _parsed
    mine, shards = shard or (0, 1)
    crc32 = zlib.crc32
    checked, fast = False, True
    with generators.open_dataset(path) as stream:
        lines = enumerate(io.BufferedReader(stream, 1 << 16), 1)
        requests = 0
        for number, line in lines:
            if requests == limit:
                return
            head = match(line) if fast else None
            # the body's `}` then the line's: nothing follows the body
            end = -2 if line.endswith(b"}}\n") else -1 if line.endswith(b"}}") else 0
            if head is None or not end:
                if line.strip():
                    requests += 1
                    custom_id, body = slow(path, number, line)
                    if shards == 1 or shard_of(custom_id, shards) == mine:
                        yield custom_id, body
                continue
            requests += 1
            quoted = head.group(1)
            escaped = b"\\" in quoted
            if shards > 1 and not escaped and crc32(quoted) % shards != mine:
                continue  # another process's: not even sliced
            custom_id = orjson.loads(b'"%b"' % quoted) if escaped else quoted.decode()
            if escaped and shards > 1 and shard_of(custom_id, shards) != mine:
                continue
            body = line[head.end() : end]
            if not checked:  # the first sliced line: is the slice its body?
                checked = True
                custom_id, encoded = slow(path, number, line)
                if not _same_json(body, encoded):
                    fast = False
                    body = encoded
            yield custom_id, body


def _same_json(data: bytes, encoded: bytes) -> bool:
    try:
        return orjson.loads(data) == orjson.loads(encoded)
    except orjson.JSONDecodeError:
        return False


def _parsed(path: str | os.PathLike[str], number: int, line: bytes) -> Payload:
    """A line of any other layout: parsed, its body encoded again."""
    try:
        record = orjson.loads(line)
        return record["custom_id"], orjson.dumps(record["body"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise generators.DatasetError(
            f"{path}:{number}: not an OpenAI Batch request line"
        ) from None
