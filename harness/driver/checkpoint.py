"""The checkpoint: results.jsonl, one line per finished custom_id, appended as each result arrives.

A driver killed at any instant loses at most the line it was writing; `--resume` truncates that torn
line, skips every custom_id already there, and sends only the rest, so nothing is lost or repeated.
Lines follow the OpenAI Batch output shape, with `custom_id` and `ok` first; every line is parsed
whole when read back, so a corrupt line is never taken for a result.
"""

from __future__ import annotations

import itertools
import os
import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from harness.rundir import JsonlWriter, repair_jsonl

RESULTS = "results.jsonl"  # driver process 0's (the only one's, unless --processes N)
_SHARD_RESULTS = re.compile(r"results-(\d+)\.jsonl")


def results_path(run_dir: str | os.PathLike[str], shard: int = 0) -> Path:
    """Where driver process `shard` checkpoints: results.jsonl, else results-<shard>.jsonl."""
    return Path(run_dir) / (RESULTS if shard == 0 else f"results-{shard}.jsonl")


def results_paths(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Every checkpoint file of a run, whatever process counts wrote it, in shard order."""
    directory = Path(run_dir)
    shards = sorted(
        int(match.group(1))
        for name in os.listdir(directory)
        if (match := _SHARD_RESULTS.fullmatch(name))
    )
    first = [directory / RESULTS] if (directory / RESULTS).exists() else []
    return first + [results_path(directory, k) for k in shards if k > 0]


def completed_ids(run_dir: str | os.PathLike[str]) -> IdSet:
    """Every custom_id with a result in any of a run's checkpoint files."""
    return IdSet(custom_id for path in results_paths(run_dir) for custom_id, _ in read_ids(path))


def read_ids(path: str | os.PathLike[str]) -> Iterator[tuple[str, bool]]:
    """(custom_id, ok) of every complete, well-formed line of a results file, in file order."""
    return (entry for entry in _read_entries(path) if entry is not None)


def _read_entries(path: str | os.PathLike[str]) -> Iterator[tuple[str, bool] | None]:
    """Every complete line as (custom_id, ok), or None for a line that does not parse whole (a
    write cut short, a corrupt block): such a line never counts as a result."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn by a kill: repaired on resume, never counted
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield None
                continue
            custom_id = record.get("custom_id") if isinstance(record, dict) else None
            if not isinstance(custom_id, str):
                yield None
                continue
            ok = record.get("ok")
            if ok is None:
                ok = record.get("error") is None
            yield custom_id, bool(ok)


class IdSet:
    """A set of custom_ids in 8 bytes each (64-bit hashes, sorted), so 170K ids cost ~1.4 MB.

    Two distinct ids share a hash with probability ~n²/2⁶⁵ (about 1e-9 at 170K).
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._hashes = _distinct_sorted(hash(i) for i in ids)

    def __contains__(self, custom_id: object) -> bool:
        return _holds(self._hashes, hash(custom_id))

    def __len__(self) -> int:
        return len(self._hashes)


def verify(
    expected: Iterable[str],
    results: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> dict[str, int]:
    """Exactly-once check: {expected, received, lost, duplicated, unexpected, failed, corrupt}
    over one results file or all of a sharded run's (an id in two files is duplicated).

    received counts distinct ids with a result; duplicated counts extra lines for an id; corrupt
    counts lines that do not parse whole, whose ids (if any) count as lost.
    """
    files = [results] if isinstance(results, (str, os.PathLike)) else list(results)
    lines = array("q")
    failed = corrupt = 0
    for entry in itertools.chain.from_iterable(_read_entries(path) for path in files):
        if entry is None:
            corrupt += 1
            continue
        custom_id, ok = entry
        lines.append(hash(custom_id))
        failed += not ok
    received = _distinct_sorted(lines)
    wanted = _distinct_sorted(hash(i) for i in expected)
    present = sum(_holds(received, h) for h in wanted)
    return {
        "expected": len(wanted),
        "received": len(received),
        "lost": len(wanted) - present,
        "duplicated": len(lines) - len(received),
        "unexpected": len(received) - present,
        "failed": failed,
        "corrupt": corrupt,
    }


def _distinct_sorted(hashes: Iterable[int]) -> array[int]:
    return array("q", (h for h, _ in itertools.groupby(sorted(hashes))))


def _holds(hashes: array[int], h: int) -> bool:
    k = bisect_left(hashes, h)
    return k < len(hashes) and hashes[k] == h


def result_line(
    custom_id: str,
    *,
    status: int | None,
    body: Any = None,
    error: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> bytes:
    """The results.jsonl line of one custom_id's final outcome (success: error is None)."""
    response = (
        None if status is None else {"status_code": status, "request_id": request_id, "body": body}
    )
    record = {
        "custom_id": custom_id,
        "ok": error is None,
        "id": f"res_{request_id or custom_id}",
        "response": response,
        "error": error,
    }
    return orjson.dumps(record) + b"\n"


class Checkpoint:
    """Appender for results.jsonl in a run directory: each line whole, written as it is given."""

    def __init__(self, run_dir: str | os.PathLike[str], shard: int = 0) -> None:
        self.path = results_path(run_dir, shard)
        self.torn_bytes = repair_jsonl(self.path)
        self._writer = JsonlWriter(self.path)

    def completed(self) -> IdSet:
        """Every custom_id that already has a result (ok or a final error)."""
        return IdSet(custom_id for custom_id, _ in read_ids(self.path))

    def append(
        self,
        custom_id: str,
        *,
        status: int | None,
        body: Any = None,
        error: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        """Record the final outcome of one custom_id (success: error is None)."""
        self._writer.write_lines(
            result_line(custom_id, status=status, body=body, error=error, request_id=request_id)
        )

    def append_lines(self, lines: bytes) -> None:
        """Record many outcomes (`result_line`s joined) with one write: all of them or none."""
        self._writer.write_lines(lines)

    def append_raw(self, record: dict[str, Any]) -> None:
        """Record an OpenAI Batch output or error line as received, adding `ok` up front."""
        error = record.get("error")
        response = record.get("response") or {}
        ok = error is None and 200 <= int(response.get("status_code") or 0) < 300
        self._writer.write({"custom_id": record["custom_id"], "ok": ok, **record})

    def close(self) -> None:
        self._writer.close()
