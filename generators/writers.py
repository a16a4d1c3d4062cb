"""Streaming dataset writers: chunks rendered in worker processes, written in order, then renamed.

Record i is rendered from (seed, i) alone: the bytes are identical for any worker count or chunking.
Memory stays flat: at most `2 x workers` chunks are in flight whatever N is.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import multiprocessing
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import orjson

from generators._pools import UnknownLocale, check_locale
from generators.candidates import DEFAULT_AS_OF, CandidateBuilder, candidate_id, parse_as_of
from generators.jobs import job
from generators.prompts import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, BatchLineEncoder, model_settings
from generators.schema import SCHEMA_VERSION

FORMATS = ("json", "jsonl", "openai-batch")
EXTENSIONS = {"json": ".json", "jsonl": ".jsonl", "openai-batch": ".openai-batch.jsonl"}
GENERATOR_VERSION = "1.0.0"
CHUNK_SIZE = 1000


class GenerationError(Exception):
    """Bad parameters or an output that cannot be written; the message says how to fix it."""


class DatasetInfo(NamedTuple):
    """What was written: enough for a manifest and for reuse by sha256."""

    path: Path
    format: str
    count: int
    bytes: int
    sha256: str
    seed: int
    locale: str


class _Spec(NamedTuple):
    """Everything a worker needs to render any chunk (picklable, small)."""

    fmt: str
    seed: int
    locale: str
    as_of: str
    model: str
    max_tokens: int


def default_filename(n: int, fmt: str) -> str:
    return f"candidates-batch-{n}{EXTENSIONS[fmt]}"


def batch_header(n: int, seed: int, locale: str, as_of: str, model: str, max_tokens: int) -> dict:
    """The batch document without its candidates (also the jsonl sidecar's content)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "batch_id": f"batch-{seed}-{n}",
        "generated_at": as_of,
        "seed": seed,
        "locale": locale,
        "generator_version": GENERATOR_VERSION,
        "candidate_count": n,
        "job": job(seed, locale),
        "model": model_settings(model, max_tokens),
    }


def check_params(n: int, fmt: str, locale: str, as_of: str = DEFAULT_AS_OF) -> None:
    """Raise GenerationError for parameters no run could use."""
    if n <= 0:
        raise GenerationError(f"--n must be a positive number of candidates, got {n}")
    if fmt not in FORMATS:
        raise GenerationError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    try:
        check_locale(locale)
    except UnknownLocale:
        raise GenerationError(
            f"unknown locale {locale!r}: use a Faker locale such as en_US, en_GB, de_DE, fr_FR"
        ) from None
    try:
        parse_as_of(as_of)
    except ValueError:
        raise GenerationError(
            f"--as-of {as_of!r} is not an ISO 8601 date, e.g. 2026-01-01 or 2026-01-01T00:00:00Z"
        ) from None


class _ChunkRenderer:
    """Renders chunks of records into one reused buffer.

    Reusing the buffer keeps its pages resident: allocating ~8 MB afresh per chunk costs more
    in page faults than rendering the records does.
    """

    def __init__(self, spec: _Spec) -> None:
        builder = CandidateBuilder(spec.seed, spec.locale, spec.as_of)
        self._build = builder.build_json
        self._fmt = spec.fmt
        self._buffer = bytearray(1 << 20)
        if spec.fmt == "openai-batch":
            self._encoder = BatchLineEncoder(
                job(spec.seed, spec.locale), spec.model, spec.max_tokens
            )

    def render(self, start: int, stop: int) -> memoryview:
        """Records start..stop-1, as they appear in the file; valid until the next call."""
        buffer = self._buffer
        build = self._build
        encode = self._encoder.encode if self._fmt == "openai-batch" else None
        lead = b"," if self._fmt == "json" else b""  # before every record but the first
        trail = b"\n" if self._fmt == "jsonl" else b""  # batch lines end in a newline already
        position = 0
        for i in range(start, stop):
            data = build(i) if encode is None else encode(candidate_id(i), build(i))
            end = position + len(lead) + len(data) + len(trail)
            if end > len(buffer):
                buffer.extend(bytes(max(end - len(buffer), len(buffer))))
            if lead and i:
                buffer[position] = lead[0]
                position += 1
            buffer[position : position + len(data)] = data
            position += len(data)
            if trail:
                buffer[position] = trail[0]
                position += 1
        return memoryview(buffer)[:position]


@functools.lru_cache(maxsize=4)
def _renderer(spec: _Spec) -> _ChunkRenderer:
    return _ChunkRenderer(spec)


def write_dataset(
    path: str | os.PathLike[str],
    n: int,
    *,
    fmt: str = "json",
    seed: int = 0,
    locale: str = "en_US",
    workers: int = 1,
    as_of: str = DEFAULT_AS_OF,
    model: str = DEFAULT_MODEL,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
) -> DatasetInfo:
    """Write n candidates to path atomically; progress(k) is called with each chunk's count."""
    check_params(n, fmt, locale, as_of)
    if workers < 1:
        raise GenerationError(f"--workers must be at least 1, got {workers}")
    path = Path(path)
    spec = _Spec(fmt, seed, locale, as_of, model, max_tokens)
    header = batch_header(n, seed, locale, as_of, model, max_tokens)
    render = _renderer(spec).render  # build the tables before forking, so workers inherit them
    head = orjson.dumps(header)[:-1] + b',"candidates":[' if fmt == "json" else b""
    tail = b"]}\n" if fmt == "json" else b""
    bounds = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
    digest = hashlib.sha256(head)
    with _AtomicFile(path, size_hint=len(head) + n * _BYTES_HINT[fmt]) as out:
        out.pwrite(head, 0)
        offset = len(head)
        if workers == 1 or len(bounds) == 1:
            for start, stop in bounds:
                data = render(start, stop)
                out.pwrite(data, offset)
                digest.update(data)
                offset += len(data)
                if progress is not None:
                    progress(stop - start)
        else:
            for (start, stop), chunk_offset, size in _write_in_workers(
                spec, bounds, workers, out, offset
            ):
                digest.update(os.pread(out.fd, size, chunk_offset))
                offset = chunk_offset + size
                if progress is not None:
                    progress(stop - start)
        out.pwrite(tail, offset)
        digest.update(tail)
        out.size = offset + len(tail)
    if fmt == "jsonl":
        _write_sidecar(path, header)
    return DatasetInfo(path, fmt, n, out.size, digest.hexdigest(), seed, locale)


# Generous bytes per record, to preallocate (ext4 writes ~10x cheaper into allocated extents).
_BYTES_HINT = {"json": 9_500, "jsonl": 9_500, "openai-batch": 15_000}


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where a candidates .jsonl keeps its batch header (job, model, seed)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")


def _write_sidecar(path: Path, header: dict) -> None:
    data = orjson.dumps(header, option=orjson.OPT_INDENT_2) + b"\n"
    with _AtomicFile(sidecar_path(path)) as out:
        out.pwrite(data, 0)
        out.size = len(data)


def _write_in_workers(spec: _Spec, bounds: list[tuple[int, int]], workers: int, out, offset: int):
    """Workers render chunks and pwrite them themselves; yields (bounds, offset, size) in order.

    Worker k owns chunks k, k+W, ...; it reports a chunk's size, gets its offset (assigned in
    chunk order here), writes, and acknowledges. Only sizes cross the pipes, never the data.
    """
    context = multiprocessing.get_context("fork")
    links = []
    for index in range(workers):
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_worker, args=(spec, bounds[index::workers], out.fd, theirs), daemon=True
        )
        process.start()
        theirs.close()
        links.append((process, ours))
    try:
        for number, chunk in enumerate(bounds):
            process, link = links[number % workers]
            size = _expect(link, "size", out.path)
            link.send(offset)
            _expect(link, "written", out.path)
            yield chunk, offset, size
            offset += size
    finally:
        for process, link in links:
            link.close()
            if process.is_alive():
                process.terminate()
            process.join()


def _worker(spec: _Spec, bounds: list[tuple[int, int]], fd: int, link) -> None:
    try:
        render = _renderer(spec).render
        for start, stop in bounds:
            data = render(start, stop)
            link.send(("size", len(data)))
            offset = link.recv()
            _pwrite_all(fd, data, offset)
            link.send(("written", None))
    except OSError as exc:
        link.send(("oserror", (exc.errno, exc.strerror)))
    except (EOFError, BrokenPipeError):
        pass  # the parent stopped early; it cleans up
    except BaseException as exc:
        link.send(("error", repr(exc)))


def _expect(link, kind: str, path: Path) -> int:
    try:
        got, value = link.recv()
    except EOFError:
        raise GenerationError(f"a generator worker died while writing {path}") from None
    if got == kind:
        return value
    if got == "oserror":
        error = OSError(*value)
        raise GenerationError(_describe_os_error(error, path))
    raise GenerationError(f"a generator worker failed while writing {path}: {value}")


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class _AtomicFile:
    """A temp file beside the target, renamed over it only when everything was written.

    Writes are positional (pwrite), so worker processes can share the descriptor; `size` set by
    the writer is the final length (the preallocated excess is truncated away).
    """

    def __init__(self, path: Path, size_hint: int = 0) -> None:
        self.path = path
        self.size_hint = size_hint
        self.size = 0

    def __enter__(self) -> _AtomicFile:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd, self._tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent
            )
        except OSError as exc:
            raise GenerationError(_describe_os_error(exc, self.path)) from None
        os.fchmod(self.fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the dataset from others
        if self.size_hint and hasattr(os, "posix_fallocate"):
            # unsupported here, or not that much room: plain writes still work
            with contextlib.suppress(OSError):
                os.posix_fallocate(self.fd, 0, self.size_hint)
        return self

    def pwrite(self, data: bytes, offset: int) -> None:
        try:
            _pwrite_all(self.fd, data, offset)
        except OSError as exc:
            raise GenerationError(_describe_os_error(exc, self.path)) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        ok = exc_type is None
        try:
            if ok:
                os.ftruncate(self.fd, self.size)
                os.fsync(self.fd)
            os.close(self.fd)
            if ok:
                os.replace(self._tmp, self.path)
        except OSError as error:
            ok = False
            raise GenerationError(_describe_os_error(error, self.path)) from None
        finally:
            if not ok:
                Path(self._tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe_os_error(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return (
            f"no space left on the device while writing {path}: free space or use --out elsewhere"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: permission denied; choose a writable --out path"
    if exc.errno == errno.ENOTDIR:
        return f"cannot write {path}: a parent of it is a file, not a directory"
    return f"cannot write {path}: {exc.strerror or exc}; choose a writable --out path"
