"""Stream a dataset through the schema: count, bytes per candidate and the first errors."""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from generators.readers import detect_format, iter_candidates, read_header
from generators.schema import validator

_CHUNK = 256


@dataclass
class ValidationReport:
    """What `harness validate` prints; `ok` is False when any error was found."""

    path: Path
    format: str
    file_bytes: int
    count: int = 0
    sizes: list[int] = field(default_factory=list, repr=False)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    duplicate_ids: int = 0
    duplicate_emails: int = 0

    @property
    def ok(self) -> bool:
        clean = self.error_count == 0 and self.duplicate_ids == 0 and self.duplicate_emails == 0
        return clean and self.count > 0

    def size_stats(self) -> dict[str, float]:
        """Mean, spread and percentiles of compact-JSON bytes per candidate."""
        if not self.sizes:
            return {}
        ordered = sorted(self.sizes)
        mean = sum(ordered) / len(ordered)
        variance = sum((s - mean) ** 2 for s in ordered) / len(ordered)
        return {
            "mean": mean,
            "stdev": math.sqrt(variance),
            "min": ordered[0],
            "p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "max": ordered[-1],
        }


def _check_chunk(definition: str, records: list[tuple[int, Any]]) -> list[tuple[int, int, str]]:
    """(index, bytes, error or "") for each record of a chunk (runs in a worker)."""
    check = validator(definition)
    results = []
    for index, record in records:
        size = len(orjson.dumps(record))
        errors = sorted(check.iter_errors(record), key=lambda e: list(e.absolute_path))
        message = ""
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(record)"
            message = f"{where}: {errors[0].message[:200]}"
        results.append((index, size, message))
    return results


def validate_file(
    path: str | os.PathLike[str],
    *,
    max_errors: int = 10,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ValidationReport:
    """Validate every record of a dataset file against the v1 schema, streaming."""
    path = Path(path)
    fmt = detect_format(path)
    report = ValidationReport(path, fmt, path.stat().st_size)
    if fmt == "json":
        header = read_header(path)
        header.pop("candidates", None)
        for error in validator("batch_header").iter_errors(header):
            report.error_count += 1
            report.errors.append(f"header: {error.message[:200]}")
    records: Iterator[tuple[int, Any]]
    definition = "openai_batch_request" if fmt == "openai-batch" else "candidate"
    if fmt == "openai-batch":
        records = enumerate(_raw_lines(path))
    else:
        records = enumerate(iter_candidates(path))
    seen_ids: set[int] = set()
    seen_emails: set[int] = set()
    for chunk, results in _checked_chunks(definition, records, workers):
        for (index, size, message), (_, record) in zip(results, chunk, strict=True):
            report.count += 1
            report.sizes.append(size)
            if message:
                report.error_count += 1
                if len(report.errors) < max_errors:
                    report.errors.append(f"record {index} ({_record_id(record)}): {message}")
            _count_duplicates(report, record, seen_ids, seen_emails)
        if progress is not None:
            progress(len(chunk))
    return report


def _raw_lines(path: Path) -> Iterator[Any]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)


def _checked_chunks(definition: str, records: Iterator[tuple[int, Any]], workers: int):
    chunks = iter(lambda: list(islice(records, _CHUNK)), [])
    if workers <= 1:
        for chunk in chunks:
            yield chunk, _check_chunk(definition, chunk)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(workers) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(_check_chunk, (definition, chunk))))
            if len(pending) >= 2 * workers:
                done_chunk, result = pending.popleft()
                yield done_chunk, result.get()
        while pending:
            done_chunk, result = pending.popleft()
            yield done_chunk, result.get()


def _record_id(record: Any) -> str:
    if isinstance(record, dict):
        return str(record.get("custom_id") or record.get("id") or "?")
    return "?"


def _count_duplicates(
    report: ValidationReport, record: Any, seen_ids: set[int], seen_emails: set[int]
) -> None:
    if not isinstance(record, dict):
        return
    if "custom_id" in record:
        key = hash(record["custom_id"])
        email = None
    else:
        key = hash(record.get("id"))
        email = (record.get("contact") or {}).get("email")
    if key in seen_ids:
        report.duplicate_ids += 1
    seen_ids.add(key)
    if email is not None:
        email_key = hash(email)
        if email_key in seen_emails:
            report.duplicate_emails += 1
        seen_emails.add(email_key)
