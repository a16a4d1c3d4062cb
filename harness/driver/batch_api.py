"""Batch API driver: the dataset through /v1/files and /v1/batches, chunk by chunk, exactly once.

Each chunk is a byte range of the OpenAI Batch file, streamed into a multipart upload (never held
in memory). A chunk is polled to a final state and its output and error files are checkpointed;
any custom_id the server lost (killed mid-batch, state gone) or failed with a retryable error
(a CUDA OOM) is sent again in a new batch of the same chunk. A per-chunk record of written ids
keeps a result from being written twice, whatever the server does. Deaths while uploading or
polling are waited out with the same readiness poller the client driver uses.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from harness.driver.checkpoint import Checkpoint, IdSet
from harness.driver.client import DriverStats
from harness.driver.degrade import Degrader
from harness.driver.errors import CONNECTION, OOM_ERROR, classify_exception, classify_response
from harness.driver.ready import Readiness, detect_health_url, httpx_probe
from harness.errors import UserError
from harness.rundir import REQUESTS, EventKind, RunDir, request_record

# a compact request line's custom_id, read without parsing its body
_CUSTOM_ID = re.compile(rb'^\{"custom_id":("(?:[^"\\]|\\.)*")')
_FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_BLOCK = 1 << 20
_CALL_TRIES = 30  # 5xx answers to one API call before the run stops (deaths wait for readiness)


@dataclass
class BatchConfig:
    """Where the Batch API lives and how the dataset is cut into batches."""

    url: str
    chunk_size: int = 5_000
    window: int = 2  # batches queued on the server at once, so it never waits for an upload
    health_url: str | None = None
    api_key: str | None = None
    ready_timeout_s: float = 300.0
    poll_initial_s: float = 0.05
    poll_max_s: float = 1.0
    max_rounds: int = 10  # batches per chunk before its still-missing ids are recorded as failed
    model: str | None = None
    max_tokens: int | None = None
    endpoint: str = "/v1/chat/completions"
    completion_window: str = "24h"


@dataclass
class _Chunk:
    """Lines [first, first+lines) of the file at bytes [start, end); `written` holds hashes of ids
    already checkpointed, so no id is written twice."""

    index: int
    start: int
    end: int
    pending: int
    written: set[int] = field(default_factory=set)
    server_completed: int = 0
    submitted_t: float = 0.0
    submitted_mono: float = 0.0


class BatchApiDriver:
    """Submits chunks as batches, `window` at a time, until every custom_id has a result."""

    def __init__(
        self,
        config: BatchConfig,
        run_dir: RunDir,
        checkpoint: Checkpoint,
        *,
        on_progress: Callable[[bool, float], None] | None = None,
        on_result: Callable[[str, bool], None] | None = None,
        on_running: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.stats = DriverStats()
        self.degrader = Degrader(
            config.window,
            chunk_size=config.chunk_size,
            min_chunk_size=min(config.chunk_size, 250),
            restore_after=2,
            restore_step=1,
            event=run_dir.event,
        )
        self._on_progress = on_progress
        self._on_result = on_result
        self._on_running = on_running
        self._requests_log = run_dir.writer(REQUESTS)
        self._chunks: list[_Chunk] = []

    @property
    def concurrency(self) -> int:
        """Batches queued on the server at once (halved after an OOM)."""
        return self.degrader.concurrency

    async def run(self, path: str | os.PathLike[str], n: int, completed: IdSet) -> DriverStats:
        """Send the first n requests of the OpenAI Batch file at path, skipping completed ids."""
        config = self.config
        headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        timeout = httpx.Timeout(60.0, connect=10.0, pool=None)
        started = time.monotonic()
        self._path = Path(path)
        self._completed = completed
        async with (
            httpx.AsyncClient(
                base_url=config.url, headers=headers, timeout=timeout, trust_env=False
            ) as client,
            httpx.AsyncClient(
                headers=headers, limits=httpx.Limits(max_connections=2), trust_env=False
            ) as probe,
        ):
            status = httpx_probe(probe)
            health_url = config.health_url or await detect_health_url(status, config.url)
            if health_url is None:
                raise UserError(
                    f"nothing answers at {config.url}; start the server or fix --target"
                )
            self._client = client
            self._ready = Readiness(
                status,
                health_url,
                deadline_s=config.ready_timeout_s,
                event=self.run_dir.event,
                on_outage=lambda cause, sent: self.degrader.overloaded(sent, cause),
            )
            try:
                await self._run_all(n)
            finally:
                await self._ready.close()
                self.stats.outages = self._ready.outages
                self.stats.seconds = time.monotonic() - started
        return self.stats

    async def _run_all(self, n: int) -> None:
        chunks = _Chunker(self._path, n, self._completed)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                while len(running) >= self.degrader.concurrency:
                    finished, running = await asyncio.wait(
                        running, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in finished:
                        task.result()  # a chunk that cannot finish stops the run
                chunk = chunks.next(self.degrader.chunk_size or self.config.chunk_size)
                if chunk is None:
                    break
                self._chunks.append(chunk)
                running.add(asyncio.create_task(self._run_chunk(chunk)))
            for task in asyncio.as_completed(running):
                await task
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _run_chunk(self, chunk: _Chunk) -> None:
        """Batches of one chunk until every id in it has a result."""
        for round_ in range(1, self.config.max_rounds + 1):
            last = round_ == self.config.max_rounds
            batch = await self._submit(chunk, round_)
            final = await self._poll(batch["id"], chunk)
            if final is not None:
                await self._collect(final, chunk, round_, final_round=last)
            chunk.server_completed = 0
            self._report_running()
            missing = chunk.pending - len(chunk.written)
            if missing == 0:
                self.degrader.succeeded()
                self._chunks.remove(chunk)
                return
            self.run_dir.event(
                EventKind.BATCH_RESUBMIT, chunk=chunk.index, missing=missing, round=round_ + 1
            )
        await self._fail_missing(chunk)
        self._chunks.remove(chunk)

    # -- the HTTP steps, each surviving a death of the target ----------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        *,
        body: Callable[[], AsyncIterator[bytes]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One API call, repeated after a death or a 5xx until it gets a non-5xx answer."""
        tries = 0
        while True:
            await self._ready.wait()
            if body is not None:
                kwargs["content"] = body()  # a fresh stream for each try
            sent = time.monotonic()
            try:
                response = await self._client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                self._transport_failed(exc, sent)
                tries += 1
                if not self._ready.is_up:
                    continue
                await asyncio.sleep(min(self.config.poll_max_s, 0.1 * 2**tries))
                continue
            if response.status_code >= 500 or response.status_code == 429:
                failure = classify_response(
                    response.status_code, response.content, response.headers
                )
                assert failure is not None
                self.stats.failures[failure.cause] += 1
                tries += 1
                if tries >= _CALL_TRIES:
                    raise UserError(
                        f"{method} {url} failed {tries} times, last with "
                        f"{response.status_code}: {failure.message}"
                    )
                await asyncio.sleep(
                    failure.retry_after_s or min(self.config.poll_max_s, 0.1 * 2**tries)
                )
                continue
            return response

    def _transport_failed(self, exc: httpx.TransportError, sent_mono: float) -> None:
        failure = classify_exception(exc)
        self.stats.failures[failure.cause] += 1
        if failure.cause == CONNECTION:
            self._died(sent_mono, failure.cause)

    def _died(self, sent_mono: float, cause: str) -> None:
        self._ready.down(cause, sent_mono)
        if self._on_progress is not None:
            self._on_progress(False, time.time())

    async def _submit(self, chunk: _Chunk, round_: int) -> dict[str, Any]:
        boundary = uuid.uuid4().hex
        name = f"chunk-{chunk.index:05d}-round-{round_}.jsonl"
        response = await self._call(
            "POST",
            "/v1/files",
            body=lambda: self._multipart(chunk, boundary, name),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        file_id = self._json(response, "upload")["id"]
        response = await self._call(
            "POST",
            "/v1/batches",
            json={
                "input_file_id": file_id,
                "endpoint": self.config.endpoint,
                "completion_window": self.config.completion_window,
                "metadata": {"harness_chunk": str(chunk.index), "round": str(round_)},
            },
        )
        batch = self._json(response, "batch creation")
        chunk.submitted_t, chunk.submitted_mono = time.time(), time.monotonic()
        self.run_dir.event(
            EventKind.BATCH_SUBMITTED,
            batch_id=batch["id"],
            file_id=file_id,
            chunk=chunk.index,
            round=round_,
            requests=chunk.pending - len(chunk.written),
        )
        return batch

    async def _poll(self, batch_id: str, chunk: _Chunk) -> dict[str, Any] | None:
        """The batch in a final state, or None when the server no longer knows it."""
        delay = self.config.poll_initial_s
        while True:
            response = await self._call("GET", f"/v1/batches/{batch_id}")
            if response.status_code == 404:
                self.run_dir.event(EventKind.BATCH_LOST, batch_id=batch_id, chunk=chunk.index)
                return None
            batch = self._json(response, "batch status")
            counts = batch.get("request_counts") or {}
            done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
            if done > chunk.server_completed:
                chunk.server_completed = done
                self._report_running()
                if self._on_progress is not None:
                    self._on_progress(True, time.time())
                delay = self.config.poll_initial_s
            if batch.get("status") in _FINAL:
                self.run_dir.event(
                    EventKind.BATCH_FINISHED,
                    batch_id=batch_id,
                    chunk=chunk.index,
                    status=batch.get("status"),
                    request_counts=counts,
                )
                return batch
            await asyncio.sleep(delay)
            delay = min(self.config.poll_max_s, delay * 1.5)

    async def _collect(
        self, batch: dict[str, Any], chunk: _Chunk, round_: int, *, final_round: bool
    ) -> None:
        """Checkpoint every new result of the batch's output and error files, streamed.

        A download cut by a death is simply read again: ids already written are skipped.
        """
        finished = time.time()
        for key in ("output_file_id", "error_file_id"):
            file_id = batch.get(key)
            while file_id:
                await self._ready.wait()
                sent = time.monotonic()
                try:
                    async with self._client.stream("GET", f"/v1/files/{file_id}/content") as r:
                        if r.status_code == 404:
                            break  # lost with a restart: its ids are sent again
                        if r.status_code >= 400:
                            await r.aread()
                            self._json(r, "download")
                        async for line in r.aiter_lines():
                            if line.strip():
                                record = orjson.loads(line)
                                self._take(record, chunk, round_, finished, final_round)
                    if self._on_progress is not None:  # results served: the target is serving
                        self._on_progress(True, time.time())
                    break
                except httpx.TransportError as exc:
                    self._transport_failed(exc, sent)
                    if self._ready.is_up:
                        await asyncio.sleep(self.config.poll_max_s)

    def _take(
        self,
        record: dict[str, Any],
        chunk: _Chunk,
        round_: int,
        finished: float,
        final_round: bool,
    ) -> None:
        custom_id = record.get("custom_id")
        if not isinstance(custom_id, str):
            return
        key = hash(custom_id)
        if key in chunk.written or custom_id in self._completed:
            return  # already has its one result
        response = record.get("response") or {}
        status = response.get("status_code")
        body = response.get("body")
        failure = None
        if record.get("error") is not None or not (isinstance(status, int) and status < 300):
            failure = classify_response(
                status if isinstance(status, int) else 500,
                orjson.dumps(body if body is not None else record.get("error")),
            )
        usage = (body or {}).get("usage") or {} if isinstance(body, dict) else {}
        self._requests_log.write(
            request_record(
                t=chunk.submitted_t,
                t_end=finished,
                custom_id=custom_id,
                ok=failure is None,
                status=status,
                error=None if failure is None else failure.cause,
                latency_s=None,  # the server schedules a batch; per-request timing is its own
                prompt_tokens=usage.get("prompt_tokens"),
                output_tokens=usage.get("completion_tokens"),
                attempt=round_,
                batch_id=record.get("id"),
            )
        )
        self.stats.attempts += 1
        if failure is not None:
            self.stats.failures[failure.cause] += 1
            if failure.cause == OOM_ERROR:  # smaller batches from now on
                self.degrader.overloaded(chunk.submitted_mono, failure.cause)
            if failure.retryable and not final_round:
                return  # sent again in the chunk's next batch
        chunk.written.add(key)
        self.checkpoint.append_raw(record)
        self.stats.done += 1
        if failure is None:
            self.stats.ok += 1
        else:
            self.stats.failed += 1
        if chunk.server_completed > 0:  # now counted as a result, no longer as server progress
            chunk.server_completed -= 1
            self._report_running()
        if self._on_result is not None:
            self._on_result(custom_id, failure is None)

    async def _fail_missing(self, chunk: _Chunk) -> None:
        """Ids the server never answered after max_rounds batches: final `batch_lost` errors."""
        for line in _lines(self._path, chunk.start, chunk.end):
            custom_id = _custom_id(line)
            if hash(custom_id) in chunk.written or custom_id in self._completed:
                continue
            chunk.written.add(hash(custom_id))
            self.checkpoint.append(
                custom_id,
                status=None,
                error={
                    "code": "batch_lost",
                    "message": f"no result after {self.config.max_rounds} batches",
                },
            )
            self.stats.done += 1
            self.stats.failed += 1
            if self._on_result is not None:
                self._on_result(custom_id, False)

    def _report_running(self) -> None:
        if self._on_running is not None:
            self._on_running(sum(c.server_completed for c in self._chunks))

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code >= 400:
            raise UserError(
                f"{what} failed: {response.request.url} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        return response.json()

    async def _multipart(self, chunk: _Chunk, boundary: str, name: str) -> AsyncIterator[bytes]:
        """multipart/form-data with purpose=batch and the chunk's lines, streamed from disk."""
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        rewrite = self.config.model is not None or self.config.max_tokens is not None
        if not chunk.written and not len(self._completed) and not rewrite:
            for block in _blocks(self._path, chunk.start, chunk.end):
                yield block
        else:
            out: list[bytes] = []
            size = 0
            for line in _lines(self._path, chunk.start, chunk.end):
                custom_id = _custom_id(line)
                if hash(custom_id) in chunk.written or custom_id in self._completed:
                    continue
                if rewrite:
                    request = orjson.loads(line)
                    if self.config.model is not None:
                        request["body"]["model"] = self.config.model
                    if self.config.max_tokens is not None:
                        request["body"]["max_tokens"] = self.config.max_tokens
                    line = orjson.dumps(request) + b"\n"
                out.append(line)
                size += len(line)
                if size >= _BLOCK:
                    yield b"".join(out)
                    out, size = [], 0
            if out:
                yield b"".join(out)
        yield f"\r\n--{boundary}--\r\n".encode()


class _Chunker:
    """Cuts the first n lines of the file into chunks of `size` pending (not completed) requests."""

    def __init__(self, path: Path, n: int, completed: IdSet) -> None:
        self._handle = open(path, "rb")  # noqa: SIM115 - closed when exhausted
        self._left = n
        self._completed = completed
        self._offset = 0
        self._index = 0

    def next(self, size: int) -> _Chunk | None:
        start = self._offset
        pending = 0
        while self._left > 0 and pending < size:
            line = self._handle.readline()
            if not line:
                self._left = 0
                break
            self._offset += len(line)
            if not line.strip():
                continue
            self._left -= 1
            if not len(self._completed) or _custom_id(line) not in self._completed:
                pending += 1
        if pending == 0:
            self._handle.close()
            return None
        self._index += 1
        return _Chunk(self._index, start, self._offset, pending)


def _custom_id(line: bytes) -> str:
    match = _CUSTOM_ID.match(line)
    return orjson.loads(match.group(1)) if match else orjson.loads(line)["custom_id"]


def _blocks(path: Path, start: int, end: int):
    with open(path, "rb") as handle:
        handle.seek(start)
        left = end - start
        while left > 0:
            block = handle.read(min(_BLOCK, left))
            if not block:
                return
            left -= len(block)
            yield block


def _lines(path: Path, start: int, end: int):
    with open(path, "rb") as handle:
        handle.seek(start)
        while handle.tell() < end:
            line = handle.readline()
            if not line:
                return
            if line.strip():
                yield line if line.endswith(b"\n") else line + b"\n"
