"""Streaming dataset writers: chunks rendered in worker processes, written in order, then renamed.

Record i is rendered from (seed, i) alone: the bytes are identical for any worker count or chunking.
Memory stays flat whatever N is: WORKER_BUFFERS parts per worker and WRITE_BUFFERS parts on their
way to the disk, PART_BYTES each, are all that is ever in flight.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import hashlib
import mmap
import multiprocessing
import multiprocessing.connection
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

import orjson

from generators._pools import UnknownLocale, check_locale
from generators.candidates import DEFAULT_AS_OF, CandidateBuilder, candidate_id, parse_as_of
from generators.jobs import job
from generators.prompts import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, BatchLineEncoder, model_settings
from generators.schema import SCHEMA_VERSION

FORMATS = ("json", "jsonl", "openai-batch")
EXTENSIONS = {"json": ".json", "jsonl": ".jsonl", "openai-batch": ".openai-batch.jsonl"}
GENERATOR_VERSION = "1.1.0"  # bumped whenever the bytes of a dataset change
CHUNK_SIZE = 200  # records a worker takes at a time: ~1.6 MB, one part


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
    source: RecordSource | None = None  # records of another shape (gen --like), else candidates


class RecordSource(Protocol):
    """Records other than candidates: record i as JSON bytes, and what the header says of them."""

    def build_json(self, i: int) -> bytes: ...

    def header(self, n: int) -> dict: ...

    def system_prompt(self) -> str: ...


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


# Records are rendered into reused part buffers (their pages stay resident: allocating ~8 MB afresh
# per chunk costs more in page faults than rendering the records does), hashed, and written with
# O_DIRECT where the filesystem allows: the 1.4 GB then never pass through the page cache, whose
# fresh pages cost more to fault in than the records cost to render (~10 us per 4 KB page on this
# project's VM, whose free memory goes back to the host).
_ALIGN = max(4096, mmap.PAGESIZE)  # O_DIRECT offsets, lengths and memory; page-cache pages
PART_BYTES = 2 << 20  # at most this much is rendered before it is hashed and written
WORKER_BUFFERS = 5  # per worker: it renders on while the parts before wait for a slower worker
WRITE_BUFFERS = 4  # hashed parts waiting for the disk


def _part_buffer() -> mmap.mmap:
    """A part buffer: page-aligned, and shared with the parent after a fork."""
    return mmap.mmap(-1, PART_BYTES)


class _ChunkRenderer:
    """Renders records into a part buffer, as they appear in the file."""

    def __init__(self, spec: _Spec) -> None:
        source = spec.source
        if source is None:
            self._build = CandidateBuilder(spec.seed, spec.locale, spec.as_of).build_json
        else:
            self._build = source.build_json
        self._fmt = spec.fmt
        if spec.fmt == "openai-batch":
            self._encoder = BatchLineEncoder(
                job(spec.seed, spec.locale),
                spec.model,
                spec.max_tokens,
                system=None if source is None else source.system_prompt(),
            )

    def render(self, buffer: mmap.mmap, start: int, stop: int) -> tuple[int, int]:
        """Records start.. into the buffer, up to stop or until it is full: (bytes, next record)."""
        build = self._build
        encode = self._encoder.encode if self._fmt == "openai-batch" else None
        lead = self._fmt == "json"  # a comma before every record but the first
        trail = self._fmt == "jsonl"  # a newline after (batch lines end in one already)
        position = 0
        limit = len(buffer)
        i = start
        while i < stop:
            data = build(i) if encode is None else encode(candidate_id(i), build(i))
            end = position + (lead and i > 0) + len(data) + trail
            if end > limit and i > start:
                break
            if lead and i:
                buffer[position] = 44  # ","
                position += 1
            buffer[position : position + len(data)] = data
            position += len(data)
            if trail:
                buffer[position] = 10  # "\n"
                position += 1
            i += 1
        return position, i


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
    source: RecordSource | None = None,
) -> DatasetInfo:
    """Write n candidates (or source's records) to path atomically; progress(k) is called with
    each chunk's count."""
    check_params(n, fmt, locale, as_of)
    if workers < 1:
        raise GenerationError(f"--workers must be at least 1, got {workers}")
    path = Path(path)
    spec = _Spec(fmt, seed, locale, as_of, model, max_tokens, source)
    header = batch_header(n, seed, locale, as_of, model, max_tokens)
    if source is not None:
        header = {**header, **source.header(n)}
    renderer = _renderer(spec)  # build the tables before forking, so workers inherit them
    head = orjson.dumps(header)[:-1] + b',"candidates":[' if fmt == "json" else b""
    tail = b"]}\n" if fmt == "json" else b""
    bounds = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
    digest = hashlib.sha256(head)
    size_hint = len(head) + n * _BYTES_HINT[fmt]
    if workers == 1 or len(bounds) == 1:
        parts = _render_here(renderer, bounds)
    else:
        parts = _render_in_workers(spec, bounds, workers, path)
    with (
        _AtomicFile(path, size_hint=size_hint, direct=True) as out,
        _PartWriter(out) as writer,
        contextlib.closing(parts),  # on an error, too, the workers are stopped here
    ):
        out.pwrite(head, 0)
        offset = len(head)
        for part in parts:  # in file order
            data = memoryview(part.buffer)[: part.size]
            digest.update(data)
            writer.write(data, offset)  # a copy: the part's buffer can take the next one now
            if part.release is not None:
                part.release()
            offset += part.size
            if part.finished and progress is not None:
                progress(part.finished)
        writer.close()
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


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a small file atomically (temp file beside it, then renamed)."""
    with _AtomicFile(Path(path)) as out:
        out.pwrite(data, 0)
        out.size = len(data)


def _write_sidecar(path: Path, header: dict) -> None:
    data = orjson.dumps(header, option=orjson.OPT_INDENT_2) + b"\n"
    with _AtomicFile(sidecar_path(path)) as out:
        out.pwrite(data, 0)
        out.size = len(data)


class _Part(NamedTuple):
    """A rendered part, buffer[:size]; release() hands the buffer back to its worker."""

    buffer: mmap.mmap
    size: int
    finished: int  # records of a chunk completed with this part (0 while the chunk goes on)
    release: Callable[[], None] | None


def _render_here(renderer: _ChunkRenderer, bounds: list[tuple[int, int]]) -> Iterator[_Part]:
    """Parts rendered in this process, into one buffer (each is copied before the next)."""
    buffer = _part_buffer()
    for start, stop in bounds:
        i = start
        while i < stop:
            size, i = renderer.render(buffer, i, stop)
            yield _Part(buffer, size, stop - start if i == stop else 0, None)


def _render_in_workers(
    spec: _Spec, bounds: list[tuple[int, int]], workers: int, path: Path
) -> Iterator[_Part]:
    """Parts rendered by worker processes, in file order.

    Each worker takes the next chunk whenever it is ready (a faster one does more), renders its
    parts into buffers shared with this process in turn, and reports each part's chunk and size.
    Only sizes cross the pipes, never the data; parts that come early wait here in their
    buffers, and a worker waits only when all its buffers hold parts not taken yet.
    """
    context = multiprocessing.get_context("fork")
    next_chunk = context.Value("q", 0)
    links = {}
    for _ in range(workers):
        buffers = tuple(_part_buffer() for _ in range(WORKER_BUFFERS))
        sizes, sizes_in = context.Pipe(duplex=False)
        frees_out, frees = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker,
            args=(spec, bounds, next_chunk, buffers, sizes_in, frees_out),
            daemon=True,
        )
        process.start()
        sizes_in.close()
        frees_out.close()
        links[sizes] = _Link(process, frees, buffers)
    running = set(links)  # the workers still rendering
    early: dict[int, collections.deque[_Part]] = collections.defaultdict(collections.deque)
    try:
        for chunk in range(len(bounds)):
            while True:
                while not early[chunk]:
                    if not running:
                        raise GenerationError(f"generator workers left chunk {chunk} of {path}")
                    for sizes in multiprocessing.connection.wait(list(running)):
                        _receive(sizes, links[sizes], running, early, path)
                part = early[chunk].popleft()
                yield part
                if part.finished:
                    break
            del early[chunk]
    finally:
        for sizes, link in links.items():
            sizes.close()
            link.frees.close()
            if link.process.is_alive():
                link.process.terminate()
            link.process.join()


class _Link:
    """A worker as the parent sees it: the process, where to free buffers, and the buffers."""

    def __init__(self, process, frees, buffers: tuple[mmap.mmap, ...]) -> None:
        self.process = process
        self.frees = frees
        self.buffers = buffers
        self.received = 0  # parts so far: the next one is in buffers[received % len(buffers)]


def _receive(
    sizes, link: _Link, running: set, early: dict[int, collections.deque[_Part]], path: Path
) -> None:
    """Take one message from a worker: a part (kept in `early` under its chunk), or its end."""
    try:
        kind, value = sizes.recv()
    except EOFError:
        raise GenerationError(f"a generator worker died while writing {path}") from None
    if kind == "error":
        raise GenerationError(f"a generator worker failed while writing {path}: {value}")
    if kind == "done":
        running.discard(sizes)  # it has rendered its last chunk
        return
    chunk, size, finished = value
    buffer = link.buffers[link.received % len(link.buffers)]
    link.received += 1
    early[chunk].append(_Part(buffer, size, finished, functools.partial(_free, link.frees)))


def _free(frees) -> None:
    """Tell a worker that the oldest part it rendered is taken: it may reuse that buffer."""
    with contextlib.suppress(OSError):  # it has exited, or is being stopped
        frees.send(None)


def _worker(
    spec: _Spec,
    bounds: list[tuple[int, int]],
    next_chunk,
    buffers: tuple[mmap.mmap, ...],
    sizes,
    frees,
) -> None:
    try:
        renderer = _renderer(spec)
        parts = 0
        while True:
            with next_chunk.get_lock():
                chunk = next_chunk.value
                next_chunk.value += 1
            if chunk >= len(bounds):
                break
            start, stop = bounds[chunk]
            i = start
            while i < stop:
                if parts >= len(buffers):
                    frees.recv()  # the oldest part was taken: reuse its buffer
                size, i = renderer.render(buffers[parts % len(buffers)], i, stop)
                sizes.send(("part", (chunk, size, stop - start if i == stop else 0)))
                parts += 1
        sizes.send(("done", None))
    except (EOFError, BrokenPipeError):
        pass  # the parent stopped early; it cleans up
    except BaseException as exc:
        sizes.send(("error", repr(exc)))


class _PartWriter:
    """Copies each part into a buffer of its own, aligned for O_DIRECT, and writes it in a
    thread: the disk works while this process hashes the next part (hashing and writing both
    release the GIL), and a worker gets its buffer back without waiting for the disk.
    """

    def __init__(self, out: _AtomicFile) -> None:
        self._out = out
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(WRITE_BUFFERS):
            self._free.put(mmap.mmap(-1, _ALIGN + PART_BYTES))
        self._queued: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="part-writer", daemon=True)

    def __enter__(self) -> _PartWriter:
        return self

    def write(self, data: memoryview, offset: int) -> None:
        """Queue data for writing at offset; raises an earlier failure."""
        if self._error is not None:
            raise self._error
        if self._thread.ident is None:
            self._thread.start()  # only now: the workers are forked before the first part
        buffer = self._free.get()  # waits while every buffer is still being written
        position = offset % _ALIGN  # the address of a whole block is then aligned, too
        buffer[position : position + len(data)] = data
        self._queued.put((buffer, position, len(data), offset))

    def close(self) -> None:
        """Wait until everything queued is written; raises what failed."""
        if self._thread.is_alive():
            self._queued.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(BaseException):  # the first error is the one to report
                self.close()

    def _run(self) -> None:
        while (job := self._queued.get()) is not None:
            buffer, position, size, offset = job
            if self._error is None:
                try:
                    self._out.write_part(buffer, position, size, offset)
                except BaseException as exc:
                    self._error = exc
            self._free.put(buffer)  # even after a failure, so that write() never waits forever


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class _AtomicFile:
    """A temp file beside the target, renamed over it only when everything was written.

    Writes are positional (pwrite); `size` set by the writer is the final length (the
    preallocated excess is truncated away). With `direct`, write_part uses O_DIRECT if it can.
    """

    def __init__(self, path: Path, size_hint: int = 0, direct: bool = False) -> None:
        self.path = path
        self.size_hint = size_hint
        self.direct = direct
        self.direct_fd: int | None = None
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
        if self.direct:
            self.direct_fd = _open_direct(self._tmp)
        return self

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        try:
            _pwrite_all(self.fd, data, offset)
        except OSError as exc:
            raise GenerationError(_describe_os_error(exc, self.path)) from None

    def write_part(self, buffer: mmap.mmap, position: int, size: int, offset: int) -> None:
        """Write buffer[position:position + size] at offset: its whole blocks with O_DIRECT, the
        partial blocks at either end (shared with the neighbouring parts) through the page cache.

        O_DIRECT wants the memory aligned like the file offset: position = offset % _ALIGN.
        """
        view = memoryview(buffer)[position : position + size]
        skip = -offset % _ALIGN  # bytes before the first whole block
        blocks = (size - skip) // _ALIGN * _ALIGN if size > skip else 0
        if self.direct_fd is None or not blocks:
            self.pwrite(view, offset)
            return
        middle = view[skip : skip + blocks]
        try:
            _pwrite_all(self.direct_fd, middle, offset + skip)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise GenerationError(_describe_os_error(exc, self.path)) from None
            self.direct_fd = None  # it opened, but refuses writes: use the page cache from now on
            self.pwrite(middle, offset + skip)
        self.pwrite(view[:skip], offset)
        self.pwrite(view[skip + blocks :], offset + skip + blocks)

    def __exit__(self, exc_type, exc, tb) -> None:
        ok = exc_type is None
        try:
            if self.direct_fd is not None:
                os.close(self.direct_fd)
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


def _open_direct(path: str) -> int | None:
    """A second, O_DIRECT descriptor on path, or None where the OS or filesystem has none."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:
        return None


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
