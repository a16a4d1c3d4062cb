"""Streaming dataset writers: chunks rendered in worker processes, written in order, then renamed.

Record i is rendered from (seed, i) alone: the bytes are identical for any worker count or chunking.
Memory stays flat: at most `2 x workers` chunks are in flight whatever N is.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import multiprocessing
import os
import tempfile
from collections import deque
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


@functools.lru_cache(maxsize=4)
def _renderer(spec: _Spec) -> Callable[[int, int], bytes]:
    builder = CandidateBuilder(spec.seed, spec.locale, spec.as_of)
    build = builder.build_json
    if spec.fmt == "json":

        def render(start: int, stop: int) -> bytes:
            body = b",".join([build(i) for i in range(start, stop)])
            return body if start == 0 else b"," + body

        return render
    if spec.fmt == "jsonl":

        def render(start: int, stop: int) -> bytes:
            return b"\n".join([build(i) for i in range(start, stop)]) + b"\n"

        return render
    encoder = BatchLineEncoder(job(spec.seed, spec.locale), spec.model, spec.max_tokens)

    def render(start: int, stop: int) -> bytes:
        return b"".join(
            [encoder.encode(candidate_id(i), build(i)) + b"\n" for i in range(start, stop)]
        )

    return render


def _render_chunk(spec: _Spec, start: int, stop: int) -> bytes:
    return _renderer(spec)(start, stop)


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
    _renderer(spec)  # build the pools before forking, so workers inherit them
    digest = hashlib.sha256()
    written = 0
    with _AtomicFile(path) as out:

        def emit(data: bytes) -> None:
            nonlocal written
            out.write(data)
            digest.update(data)
            written += len(data)

        if fmt == "json":
            emit(orjson.dumps(header)[:-1] + b',"candidates":[')
        for count, data in _chunks(spec, n, workers, chunk_size):
            emit(data)
            if progress is not None:
                progress(count)
        if fmt == "json":
            emit(b"]}\n")
    if fmt == "jsonl":
        _write_sidecar(path, header)
    return DatasetInfo(path, fmt, n, written, digest.hexdigest(), seed, locale)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where a candidates .jsonl keeps its batch header (job, model, seed)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")


def _write_sidecar(path: Path, header: dict) -> None:
    with _AtomicFile(sidecar_path(path)) as out:
        out.write(orjson.dumps(header, option=orjson.OPT_INDENT_2) + b"\n")


def _chunks(spec: _Spec, n: int, workers: int, chunk_size: int):
    """(count, bytes) of each chunk in order; rendered by a bounded window of worker tasks."""
    bounds = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
    if workers == 1 or len(bounds) == 1:
        for start, stop in bounds:
            yield stop - start, _render_chunk(spec, start, stop)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(workers) as pool:
        pending: deque = deque()
        upcoming = iter(bounds)
        for start, stop in upcoming:
            pending.append((stop - start, pool.apply_async(_render_chunk, (spec, start, stop))))
            if len(pending) >= 2 * workers:
                break
        while pending:
            count, result = pending.popleft()
            data = result.get()
            for start, stop in upcoming:
                pending.append((stop - start, pool.apply_async(_render_chunk, (spec, start, stop))))
                break
            yield count, data


class _AtomicFile:
    """A temp file beside the target, renamed over it only when everything was written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _AtomicFile:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent
            )
        except OSError as exc:
            raise GenerationError(_describe_os_error(exc, self.path)) from None
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the dataset from others
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        return self

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise GenerationError(_describe_os_error(exc, self.path)) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        ok = exc_type is None
        try:
            if ok:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
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
