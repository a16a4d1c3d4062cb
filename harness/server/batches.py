"""OpenAI Batch API (/v1/batches): persistent, resumable, every custom_id exactly once.

A batch's state lives in <data dir>/batches/<id>.json, written atomically. Results are appended
(one write per line) to its output and error files as requests finish, and the input is read
as a stream, so memory stays flat whatever the batch size. After a restart, kill -9 included,
an unfinished batch resumes: a torn last line is cut off and the custom_ids already in the two
files are skipped, so each input line ends up exactly once in one of them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from starlette.requests import Request

from harness.rundir import repair_jsonl, write_json_atomic
from harness.server.asgi import Response, json_response, read_body
from harness.server.faults import on_oom_death
from harness.server.openai_api import run_batch_request
from harness.server.protocol import (
    INTERNAL_ERROR,
    ApiError,
    invalid_type,
    invalid_value,
    missing,
    parse_json_object,
)

if TYPE_CHECKING:
    from harness.server.app import ServerState

log = logging.getLogger("harness.server")

BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
MAX_VALIDATION_ERRORS = 10
SAVE_INTERVAL_S = 1.0
YIELD_EVERY = 32  # zero-latency lines between yields to the event loop, so health stays live
COMPLETION_WINDOWS = ("24h",)  # what OpenAI accepts; --batch-window-seconds says how long
OOM_DEATHS_TO_FAIL = 2  # in flight at this many OOM deaths, the last one alone: failed as `oom`
_EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


class BatchManager:
    """The batches of one server and the tasks that run the unfinished ones."""

    def __init__(self, state: ServerState, root: Path) -> None:
        self._state = state
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict[str, Any]] = {}
        for path in root.glob("batch_*.json"):
            record = orjson.loads(path.read_bytes())
            self._records[record["batch"]["id"]] = record
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._runs: set[_Run] = set()
        on_oom_death(self._record_oom_death)

    def _record_oom_death(self) -> None:
        """Last words before an OOM death: count it, and which lines were in flight, per batch.

        On resume the batch runs at half the concurrency per death, and a line that was in
        flight at OOM_DEATHS_TO_FAIL deaths, the last one alone, is failed instead of retried.
        """
        for run in self._runs:
            if not run.in_flight:
                continue
            oom = run.record.setdefault("oom", {"deaths": 0, "lines": {}})
            oom["deaths"] += 1
            alone = len(run.in_flight) == 1
            for custom_id in run.in_flight:
                line = oom["lines"].setdefault(custom_id, {"deaths": 0, "alone": False})
                line["deaths"] += 1
                line["alone"] = alone
            self._save(run.record)

    def resume(self) -> None:
        """Start a runner for every batch a previous process left unfinished."""
        for batch_id, record in self._records.items():
            if record["batch"]["status"] in ACTIVE:
                self._start(batch_id)

    async def shutdown(self) -> None:
        """Stop the runners; their batches stay resumable (results are already on disk)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def active_user_of(self, file_id: str) -> str | None:
        """The id of an unfinished batch reading or writing this file, if any."""
        for batch_id, record in self._records.items():
            batch = record["batch"]
            uses = (batch["input_file_id"], record["output_file_id"], record["error_file_id"])
            if batch["status"] in ACTIVE and file_id in uses:
                return batch_id
        return None

    def get(self, batch_id: str) -> dict[str, Any]:
        record = self._records.get(batch_id) if BATCH_ID.fullmatch(batch_id) else None
        if record is None:
            raise ApiError(
                404,
                f"No batch found with id '{batch_id[:80]}'.",
                param="batch_id",
                code="not_found",
            )
        return record

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Validate a POST /v1/batches body and start the batch (status validating)."""
        input_file_id = _required_str(body, "input_file_id")
        endpoint = _required_str(body, "endpoint")
        if endpoint not in ENDPOINTS:
            raise invalid_value(
                "endpoint", f"'{endpoint}' is not supported; use one of {ENDPOINTS}."
            )
        window = _required_str(body, "completion_window")
        if window not in COMPLETION_WINDOWS:
            raise invalid_value(
                "completion_window",
                f"'{window[:40]}' is not supported; the only window is '24h', as in OpenAI's API.",
            )
        window_s = math.ceil(self._state.config.batch_window_s)
        metadata = _metadata(body.get("metadata"))
        input_file = self._state.files.get(input_file_id)
        if input_file["purpose"] != "batch":
            raise invalid_value(
                "input_file_id",
                f"file {input_file_id} has purpose '{input_file['purpose']}', not 'batch'.",
            )
        now = int(time.time())
        batch_id = "batch_" + secrets.token_hex(12)
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": window,
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + window_s,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata,
            "usage": _usage(0, 0),
        }
        record = {
            "batch": batch,
            "output_file_id": self._state.files.new_id(),
            "error_file_id": self._state.files.new_id(),
            "context_id": (metadata or {}).get("context_id"),
        }
        self._save(record)  # on disk first: a record that cannot be saved is never listed
        self._records[batch_id] = record
        self._start(batch_id)
        return batch

    def cancel(self, batch_id: str) -> dict[str, Any]:
        record = self.get(batch_id)
        batch = record["batch"]
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelling"
            batch["cancelling_at"] = int(time.time())
            self._save(record)
        elif batch["status"] != "cancelling":
            raise ApiError(
                400,
                f"Cannot cancel a batch with status '{batch['status']}'.",
                code="invalid_batch_status",
            )
        return batch

    def list(self, after: str | None, limit: int) -> dict[str, Any]:
        batches = sorted(
            (r["batch"] for r in self._records.values()),
            key=lambda b: (b["created_at"], b["id"]),
            reverse=True,
        )
        if after is not None:
            ids = [b["id"] for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        page = batches[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(batches) > limit,
        }

    # -- running -----------------------------------------------------------------------------

    def _start(self, batch_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(self._records[batch_id]))
        self._tasks[batch_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(batch_id, None))

    async def _run(self, record: dict[str, Any]) -> None:
        batch = record["batch"]
        try:
            await self._state.wait_ready()
            if batch["status"] == "validating":
                await self._validate(record)
            if batch["status"] == "in_progress":
                await self._process(record)
            if batch["status"] == "finalizing":
                self._finalize(record, "completed")
            elif batch["status"] == "cancelling":
                self._finalize(record, "cancelled")
        except asyncio.CancelledError:
            self._save(record)
            raise
        except Exception as exc:  # e.g. the input file was deleted under the batch
            log.exception("batch %s failed", batch["id"])
            self._fail(record, [_error("server_error", f"The batch could not run: {exc}")])

    async def _validate(self, record: dict[str, Any]) -> None:
        batch = record["batch"]
        path = self._state.files.content_path(batch["input_file_id"])
        total, errors = await asyncio.to_thread(_validate_file, path, batch["endpoint"])
        if batch["status"] != "validating":  # cancelled meanwhile
            return
        if not errors and total == 0:
            errors = [_error("empty_file", "The input file has no request lines.")]
        if errors:
            self._fail(record, errors)
            return
        batch["request_counts"]["total"] = total
        batch["status"] = "in_progress"
        batch["in_progress_at"] = int(time.time())
        self._save(record)

    async def _process(self, record: dict[str, Any]) -> None:
        batch = record["batch"]
        files = self._state.files
        out_path = files.content_path(record["output_file_id"])
        err_path = files.content_path(record["error_file_id"])
        done, completed, failed, tokens = await asyncio.to_thread(_scan_results, out_path, err_path)
        counts = batch["request_counts"]
        counts["completed"], counts["failed"] = completed, failed
        batch["usage"] = _usage(*tokens)
        lines = _input_lines(files.content_path(batch["input_file_id"]))
        run = _Run(self, record, lines, done)
        deaths = record.get("oom", {}).get("deaths", 0)
        workers = max(1, self._state.simulator.profile.max_num_seqs >> deaths)
        if deaths:
            log.warning(
                "batch %s resumes at concurrency %d after %d OOM deaths",
                batch["id"],
                workers,
                deaths,
            )
        self._runs.add(run)
        try:
            with open(out_path, "ab", buffering=0) as out, open(err_path, "ab", buffering=0) as err:
                run.out, run.err = out, err
                await asyncio.gather(*(run.worker() for _ in range(workers)))
                if run.expired:
                    run.expire_rest()
        finally:
            self._runs.discard(run)
        if run.expired:
            self._finalize(record, "expired")
        elif batch["status"] == "in_progress":
            batch["status"] = "finalizing"
            batch["finalizing_at"] = int(time.time())
            self._save(record)

    def _finalize(self, record: dict[str, Any], status: str) -> None:
        """Publish the output and error files (when not empty) and record the final status."""
        batch = record["batch"]
        files = self._state.files
        for key, kind in (("output_file_id", "output"), ("error_file_id", "errors")):
            path = files.content_path(record[key])
            if path.exists() and path.stat().st_size > 0:
                files.register(record[key], f"{batch['id']}_{kind}.jsonl", "batch_output")
                batch[key] = record[key]
            else:
                path.unlink(missing_ok=True)
        batch["status"] = status
        batch[f"{status}_at"] = int(time.time())
        self._save(record)

    def _fail(self, record: dict[str, Any], errors: list[dict[str, Any]]) -> None:
        batch = record["batch"]
        batch["status"] = "failed"
        batch["failed_at"] = int(time.time())
        batch["errors"] = {"object": "list", "data": errors}
        self._save(record)

    def _save(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.root / f"{record['batch']['id']}.json", record)


class _Run:
    """One pass over a batch's input by several workers sharing one line iterator."""

    def __init__(
        self,
        manager: BatchManager,
        record: dict[str, Any],
        lines: Iterator[bytes],
        done: set[str],
    ) -> None:
        self.manager = manager
        self.record = record
        self.batch = record["batch"]
        self.lines = lines
        self.done = done
        self.out: IO[bytes] | None = None
        self.err: IO[bytes] | None = None
        self.expired = False
        self.in_flight: set[str] = set()
        self._killers = {
            custom_id
            for custom_id, line in record.get("oom", {}).get("lines", {}).items()
            if line["deaths"] >= OOM_DEATHS_TO_FAIL and line["alone"]
        }
        self._last_save = time.monotonic()

    async def worker(self) -> None:
        """Take lines until the input ends, the batch is cancelled or its window expires."""
        state = self.manager._state
        batch, url = self.batch, self.batch["endpoint"]
        context_id = self.record.get("context_id")
        zero_latency = state.config.zero_latency
        handled = 0
        while batch["status"] == "in_progress" and not self.expired:
            line = next(self.lines, None)
            if line is None:
                return
            item = orjson.loads(line)
            custom_id = item["custom_id"]
            if custom_id in self.done:
                continue
            if time.time() >= batch["expires_at"]:
                self.expired = True
                self._write(custom_id, None, _EXPIRED)
                return
            if custom_id in self._killers:
                self._write(custom_id, None, _oom_error(self.record["oom"]["lines"][custom_id]))
                continue
            body = item.get("body")
            if context_id and isinstance(body, dict):
                body.setdefault("context_id", context_id)
            self.in_flight.add(custom_id)
            try:
                response, status = await run_batch_request(state, url, body), 200
            except ApiError as error:
                response, status = error.body(), error.status
            except Exception:
                log.exception("batch %s: line %s failed", batch["id"], custom_id[:80])
                response, status = INTERNAL_ERROR.body(), 500
            finally:
                self.in_flight.discard(custom_id)
            self._write(custom_id, {"status_code": status, "body": response}, None)
            handled += 1
            if zero_latency and handled % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def expire_rest(self) -> None:
        """After the window closed: every line not yet answered goes to the error file."""
        for line in self.lines:
            custom_id = orjson.loads(line)["custom_id"]
            if custom_id not in self.done:
                self._write(custom_id, None, _EXPIRED)

    def _write(self, custom_id: str, response: dict[str, Any] | None, error: dict | None) -> None:
        ok = response is not None and response["status_code"] == 200
        if response is not None:
            response = {**response, "request_id": "req_" + secrets.token_hex(12)}
        line = {
            "id": "batch_req_" + secrets.token_hex(12),
            "custom_id": custom_id,
            "response": response,
            "error": error,
        }
        (self.out if ok else self.err).write(orjson.dumps(line) + b"\n")  # type: ignore[union-attr]
        counts = self.batch["request_counts"]
        if ok:
            counts["completed"] += 1
            usage = response["body"]["usage"]  # type: ignore[index]
            total = self.batch["usage"]
            total["input_tokens"] += usage["prompt_tokens"]
            total["output_tokens"] += usage["completion_tokens"]
            total["total_tokens"] += usage["total_tokens"]
        else:
            counts["failed"] += 1
        now = time.monotonic()
        if now - self._last_save >= SAVE_INTERVAL_S:
            self._last_save = now
            self.manager._save(self.record)


def _input_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield line


def _validate_file(path: Path, endpoint: str) -> tuple[int, list[dict[str, Any]]]:
    """(request lines, first errors) of a batch input file, read as a stream."""
    seen: set[str] = set()
    errors: list[dict[str, Any]] = []
    total = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            total += 1
            problem = _line_problem(line, endpoint, seen)
            if problem is not None:
                errors.append({**problem, "line": number})
                if len(errors) >= MAX_VALIDATION_ERRORS:
                    break
    return total, errors


def _line_problem(line: bytes, endpoint: str, seen: set[str]) -> dict[str, Any] | None:
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return _error("invalid_json_line", f"This line is not valid JSON: {exc}.")
    if not isinstance(item, dict):
        return _error("invalid_json_line", "Each line must be a JSON object.")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _error(
            "missing_custom_id", "Each line needs a non-empty string 'custom_id'.", "custom_id"
        )
    if custom_id in seen:
        return _error(
            "duplicate_custom_id",
            f"The custom_id '{custom_id[:80]}' appears more than once.",
            "custom_id",
        )
    seen.add(custom_id)
    if item.get("method") != "POST":
        return _error("invalid_method", "The 'method' of each line must be 'POST'.", "method")
    if item.get("url") != endpoint:
        return _error(
            "mismatched_url",
            f"The 'url' of each line must be the batch's endpoint '{endpoint}'.",
            "url",
        )
    if not isinstance(item.get("body"), dict):
        return _error("missing_body", "Each line needs a JSON object 'body'.", "body")
    return None


def _scan_results(out_path: Path, err_path: Path) -> tuple[set[str], int, int, tuple[int, int]]:
    """What earlier runs finished: (custom_ids, completed, failed, (input, output) tokens)."""
    done: set[str] = set()
    counts = [0, 0]
    tokens = [0, 0]
    for index, path in enumerate((out_path, err_path)):
        if not path.exists():
            continue
        repair_jsonl(path)
        with open(path, "rb") as handle:
            for line in handle:
                result = orjson.loads(line)
                done.add(result["custom_id"])
                counts[index] += 1
                if index == 0:
                    usage = result["response"]["body"]["usage"]
                    tokens[0] += usage["prompt_tokens"]
                    tokens[1] += usage["completion_tokens"]
    return done, counts[0], counts[1], (tokens[0], tokens[1])


def _oom_error(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": "oom",
        "message": (
            f"The server died of out-of-memory {line['deaths']} times with this request in "
            "flight, the last time alone; it is failed rather than retried again. Shorten it "
            "or raise the server's memory."
        ),
    }


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _error(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": None}


def _required_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise missing(key)
    if not isinstance(value, str):
        raise invalid_type(key, "a string", value)
    return value


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type("metadata", "an object", value)
    if len(value) > 16 or not all(
        isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
        for k, v in value.items()
    ):
        raise invalid_value(
            "metadata", "up to 16 string pairs, keys up to 64 and values up to 512 characters."
        )
    return value


async def create(request: Request, state: ServerState) -> Response:
    body = parse_json_object(await read_body(request, state.config.max_body_bytes))
    return json_response(state.batches.create(body))


async def retrieve(request: Request, state: ServerState, batch_id: str) -> Response:
    return json_response(state.batches.get(batch_id)["batch"])


async def cancel(request: Request, state: ServerState, batch_id: str) -> Response:
    return json_response(state.batches.cancel(batch_id))


async def list_batches(request: Request, state: ServerState) -> Response:
    query = request.query_params
    limit_text = query.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise invalid_value("limit", "expected an integer from 1 to 100.")
    return json_response(state.batches.list(query.get("after"), int(limit_text)))
