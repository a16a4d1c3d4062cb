"""The run directory: the one contract between the rooms (see docs/run-directory.md).

Producers append JSON lines (one write + flush per line) or write whole files atomically;
readers tolerate a torn last line left by a producer that was killed mid-write.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import orjson

from harness.errors import UserError

SAMPLES = "samples.jsonl"
EVENTS = "events.jsonl"
REQUESTS = "requests.jsonl"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"


class EventKind:
    """The `kind` of each events.jsonl record, named once for every producer and reader."""

    # a target's life, as the supervisor records it
    STARTED: Final = "started"
    READY: Final = "ready"
    EXITED: Final = "exited"
    RESTARTING: Final = "restarting"
    RECOVERED: Final = "recovered"
    GAVE_UP: Final = "gave_up"
    DESCENDANT_KILLED: Final = "descendant_killed"
    MEMORY_LIMIT_EXCEEDED: Final = "memory_limit_exceeded"
    # faults and what they did
    FAULT_INJECTED: Final = "fault_injected"
    INJECT_FAILED: Final = "inject_failed"
    OOM_PLANNED: Final = "oom_planned"
    RESUMED: Final = "resumed"  # a hung target continued (SIGCONT)
    # samplers
    SOURCE_UNAVAILABLE: Final = "source_unavailable"
    # the driver and scale
    TARGET_DOWN: Final = "target_down"
    TARGET_READY: Final = "target_ready"
    DEGRADED: Final = "degraded"
    RESTORED: Final = "restored"
    PROGRESS: Final = "progress"
    CHECKPOINT: Final = "checkpoint"
    CONTEXT_CHECK: Final = "context_check"
    VERIFICATION: Final = "verification"
    BATCH_SUBMITTED: Final = "batch_submitted"
    BATCH_RESUBMIT: Final = "batch_resubmit"
    BATCH_LOST: Final = "batch_lost"
    BATCH_FINISHED: Final = "batch_finished"
    LOAD_GENERATOR: Final = "load_generator"  # a driver process's own verdict: saturated or not
    DRIVER_PROCESS_DIED: Final = "driver_process_died"
    # Locust scenarios
    BATCH_COMPLETED: Final = "batch_completed"
    BEHIND_SCHEDULE: Final = "behind_schedule"
    SCHEDULE_KEPT: Final = "schedule_kept"
    # a context trim (the reports draw it as a tick)
    TRIM: Final = "trim"


def request_record(
    *,
    t: float,
    t_end: float,
    custom_id: str,
    ok: bool,
    status: int | None,
    error: str | None,
    latency_s: float | None,
    attempt: int,
    prompt_tokens: int | None = None,
    output_tokens: int | None = None,
    ttft_s: float | None = None,
    itl_mean_s: float | None = None,
    tpot_s: float | None = None,
    message: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One requests.jsonl line: the keys every producer writes, then the producer's own extras
    (e.g. `batch_id`, `scenario`); `message` only on a failure that has one."""
    record = {
        "t": t,
        "t_end": t_end,
        "id": custom_id,
        "ok": ok,
        "status": status,
        "error": error,
        "latency_s": latency_s,
        "ttft_s": ttft_s,
        "itl_mean_s": itl_mean_s,
        "tpot_s": tpot_s,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "attempt": attempt,
        **extra,
    }
    if message is not None:
        record["message"] = message
    return record


def utc_iso(t: float | None = None) -> str:
    """ISO 8601 UTC timestamp, as JSON documents in a run directory use."""
    moment = datetime.fromtimestamp(time.time() if t is None else t, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id(prefix: str = "run") -> str:
    """Sortable, unique run id: <prefix>-YYYYmmdd-HHMMSS-<6 hex>."""
    stamp = datetime.now(tz=timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:6]}"


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes to path via a temp file in the same directory, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide reports from the team
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike[str], document: Any) -> None:
    """Write a JSON document atomically, indented for people."""
    write_atomic(path, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


def read_json_file(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON document of a run directory, or None when it is missing or torn."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
        return None


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the objects of a JSON Lines file, skipping a torn or blank line and any line that
    is not a JSON object (no record of a run directory is anything else)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a producer killed mid-write leaves a torn line
            if isinstance(record, dict):
                yield record


def repair_jsonl(path: str | os.PathLike[str]) -> int:
    """Cut a torn last line (no trailing newline) so appends start clean; returns bytes dropped."""
    try:
        handle = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    with handle:
        fd = handle.fileno()
        size = os.fstat(fd).st_size
        keep = _whole_lines_end(fd, size)
        if keep != size:
            os.ftruncate(fd, keep)
        return size - keep


def _whole_lines_end(fd: int, size: int) -> int:
    """Where the last whole line of a file ends: `size` unless a writer died mid-line."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        if end == size and block.endswith(b"\n"):
            return size
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


class WriteFailed(UserError):
    """An appended line could not be written whole (disk full, file size limit, I/O error)."""


class JsonlWriter:
    """Thread- and process-safe appender: each record is one full line or an error, never a
    partial line (a batch of lines: all of them or an error).

    A short write (ENOSPC on a nearly full disk, RLIMIT_FSIZE) is finished or undone: the file is
    cut back to where the line started, so no later append lands inside a half-written one. The
    processes of one run (driver shards) append to the same file under an exclusive lock; a tail
    a killed writer left torn is cut before the next append, so it never corrupts a whole line.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b", buffering=0)  # noqa: SIM115 - owned by the writer
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        self.write_lines(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")

    def write_lines(self, lines: bytes) -> None:
        """Append encoded lines (each ending in a newline) with one write: all of them or none."""
        with self._lock:
            fd = self._file.fileno()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                start = _whole_lines_end(fd, size)
                view = memoryview(lines)
                try:
                    if start != size:
                        os.ftruncate(fd, start)
                    while view:
                        view = view[os.write(fd, view) :]
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)
                    raise WriteFailed(
                        f"cannot append to {self.path}: {exc.strerror or exc}"
                    ) from None
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemovedOnFailure:
    """A command's run directory, removed when the command fails before keep() (before anything
    useful is in it): a failed command leaves no empty run directory behind. One the user gave
    that already held anything is never touched; an empty one is emptied again, not removed.

        with RemovedOnFailure(path) as guard:
            ...  # pre-checks, opening the target: a failure here removes what was made
            guard.keep()  # the run has begun: from here on its directory stays
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._existed = self.path.is_dir()
        self.kept = self._existed and any(self.path.iterdir())

    def keep(self) -> None:
        self.kept = True

    def __enter__(self) -> RemovedOnFailure:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None or self.kept:
            return
        if not self._existed:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for child in self.path.iterdir():  # it was empty: what is in it now, this command made
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


class RunDir:
    """One run's directory: appenders for events and samples, atomic JSON documents."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, JsonlWriter] = {}
        self._lock = threading.Lock()
        self._manifest_lock = threading.Lock()  # updates read, merge and write: one at a time

    @classmethod
    def create(cls, root: str | os.PathLike[str] = "runs", prefix: str = "run") -> RunDir:
        """A new run directory under root with a fresh run id."""
        return cls(Path(root) / new_run_id(prefix))

    @property
    def run_id(self) -> str:
        return self.path.name

    def writer(self, name: str) -> JsonlWriter:
        """The shared appender for one JSONL file of this run (created on first use)."""
        with self._lock:
            if name not in self._writers:
                self._writers[name] = JsonlWriter(self.path / name)
            return self._writers[name]

    def event(self, kind: str, t: float | None = None, **fields: Any) -> dict[str, Any]:
        """Append one event to events.jsonl and return it."""
        record = {"t": time.time() if t is None else t, "kind": kind, **fields}
        self.writer(EVENTS).write(record)
        return record

    def sample(self, source: str, t: float | None = None, **fields: Any) -> None:
        """Append one sample to samples.jsonl."""
        self.writer(SAMPLES).write(
            {"t": time.time() if t is None else t, "source": source, **fields}
        )

    def events(self) -> Iterator[dict[str, Any]]:
        return read_jsonl(self.path / EVENTS)

    def samples(self) -> Iterator[dict[str, Any]]:
        return read_jsonl(self.path / SAMPLES)

    def write_manifest(self, **fields: Any) -> dict[str, Any]:
        """Write manifest.json with what every run records, plus the given fields."""
        manifest = {
            "run_id": self.run_id,
            "command": sys.argv,
            "harness_version": _harness_version(),
            "git_commit": _git_commit(),
            "host": host_info(),
            "start_time": utc_iso(),
            "end_time": None,
            **fields,
        }
        write_json_atomic(self.path / MANIFEST, manifest)
        return manifest

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge fields into manifest.json (atomically), e.g. end_time at the end of a run."""
        with self._manifest_lock:
            manifest = self.read_json(MANIFEST) or {}
            manifest.update(fields)
            write_json_atomic(self.path / MANIFEST, manifest)
        return manifest

    def read_json(self, name: str) -> dict[str, Any] | None:
        try:
            return orjson.loads((self.path / name).read_bytes())
        except FileNotFoundError:
            return None

    def close(self) -> None:
        with self._lock:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()


def host_info() -> dict[str, Any]:
    """CPU, RAM and GPUs of this host; GPUs "none" with the reason when NVML is unavailable."""
    import psutil

    from harness.gpu import gpu_inventory

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": platform.processor() or platform.machine(),
        "ram_total_bytes": psutil.virtual_memory().total,
        "gpus": gpu_inventory(),
    }


def _harness_version() -> str:
    from harness import __version__

    return __version__


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
