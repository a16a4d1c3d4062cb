"""A run directory read into columns: one pass over each file, numbers kept as float arrays.

Columns (8 bytes a value) rather than dicts keep a 13-hour run (100K samples per source) in a few
tens of MB; fields the reports do not use are not kept. Missing or null values are NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from harness.locust.timing import GAPS_FIELD
from harness.rundir import EVENTS, MANIFEST, REQUESTS, SAMPLES, read_jsonl
from reports.engine import ENGINE_FIELDS, EngineRowReader
from reports.locust_csv import LocustStats, read_locust

# Per source, the fields reports use (see docs/run-directory.md); others are skipped while reading.
SAMPLE_FIELDS: dict[str, tuple[str, ...]] = {
    "ram": (
        "system_used_bytes",
        "system_total_bytes",
        "rss_bytes",
        "pss_bytes",
        "cgroup_usage_bytes",
        "cgroup_limit_bytes",
        "nprocs",
        "pid",
    ),
    "vram": ("gpu", "used_bytes", "total_bytes", "process_used_bytes", "temperature_c"),
    # engine metrics under their canonical names (reports.engine folds in old and labelled ones)
    "server": ("sim_vram_bytes", "sim_vram_total_bytes", "context_trims_total", *ENGINE_FIELDS),
    "disk": ("free_bytes", "total_bytes"),
    "load": ("users", "completed", "total", "cpu_percent"),
}

REQUEST_FIELDS = (
    "t",
    "t_end",
    "latency_s",
    "ttft_s",
    "itl_mean_s",
    "tpot_s",
    "ttst_s",
    "itl_max_s",
    "scheduled_latency_s",
    "schedule_lag_s",
    "prompt_tokens",
    "output_tokens",
)

_NAN = math.nan
_CHUNK = 8192


@dataclass
class Columns:
    """One sample source: times `t` (sorted) and one float array per field, NaN where absent."""

    t: np.ndarray
    fields: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.t)

    def get(self, name: str) -> np.ndarray | None:
        """The field's values, or None when no sample carried it."""
        values = self.fields.get(name)
        if values is None or not np.isfinite(values).any():
            return None
        return values

    def where(self, mask: np.ndarray) -> Columns:
        return Columns(self.t[mask], {name: v[mask] for name, v in self.fields.items()})


class GapHistogram:
    """Every inter-token gap of the run (`itl_gaps_ms` of streamed requests) in log buckets 0.1%
    wide, from 1 us to 1000 s: percentiles to within 0.1% in fixed memory, however long the run."""

    RATIO = 1.001
    LOW_S = 1e-6
    BUCKETS = int(math.log(1e9) / math.log(RATIO)) + 2

    def __init__(self) -> None:
        self.counts = np.zeros(self.BUCKETS, dtype=np.int64)
        self._pending: list[float] = []

    def add(self, gaps_ms: list[Any]) -> None:
        self._pending.extend(gaps_ms)
        if len(self._pending) >= 1 << 16:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            seconds = np.asarray(self._pending, dtype=float) / 1000
        except (TypeError, ValueError):  # a hand-edited line: keep its numbers
            seconds = np.asarray([_number(v) for v in self._pending]) / 1000
        self._pending.clear()
        seconds = seconds[np.isfinite(seconds) & (seconds >= 0)]
        index = np.log(np.maximum(seconds, self.LOW_S) / self.LOW_S) / math.log(self.RATIO)
        np.add.at(self.counts, np.minimum(index.astype(np.int64), self.BUCKETS - 1), 1)

    @property
    def n(self) -> int:
        self._flush()
        return int(self.counts.sum())

    def figures(self) -> dict[str, float] | None:
        """n, mean, p50/p90/p95/p99 and max (bucket midpoints), or None without gaps."""
        n = self.n
        if not n:
            return None
        edges = self.LOW_S * self.RATIO ** np.arange(self.BUCKETS + 1)
        middles = np.sqrt(edges[:-1] * edges[1:])
        cumulative = np.cumsum(self.counts)
        figures: dict[str, float] = {"n": n, "mean": float((middles * self.counts).sum() / n)}
        for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
            rank = max(1, math.ceil(q / 100 * n))
            figures[name] = float(middles[np.searchsorted(cumulative, rank)])
        figures["max"] = float(middles[np.nonzero(self.counts)[0][-1]])
        return figures


@dataclass
class Requests:
    """Every finished request attempt (one line of requests.jsonl each), as columns."""

    columns: dict[str, np.ndarray]
    ok: np.ndarray  # bool
    errors_by_cause: Counter = field(default_factory=Counter)
    errors_by_status: Counter = field(default_factory=Counter)
    gaps: GapHistogram = field(default_factory=GapHistogram)  # successful requests' gaps

    def __len__(self) -> int:
        return len(self.ok)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


@dataclass
class RunData:
    """Everything a report reads from one run directory."""

    path: Path
    manifest: dict[str, Any]
    samples: dict[str, Columns]
    events: list[dict[str, Any]]
    requests: Requests | None
    locust: LocustStats | None

    @property
    def t0(self) -> float | None:
        """The run's first moment on any time axis (samples, events, requests)."""
        starts = [cols.t[0] for cols in self.samples.values() if len(cols)]
        starts += [self.events[0]["t"]] if self.events else []
        if self.requests is not None and len(self.requests):
            starts.append(float(np.nanmin(self.requests["t"])))
        if self.locust is not None and self.locust.history is not None:
            starts.append(float(self.locust.history["t"][0]))
        return min(starts) if starts else None

    def events_of(self, *kinds: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("kind") in kinds]


def load_run(path: str | Path) -> RunData:
    """Read a run directory (any of its files may be missing; torn last lines are skipped)."""
    path = Path(path)
    return RunData(
        path=path,
        manifest=_read_manifest(path / MANIFEST),
        samples=_read_samples(path / SAMPLES),
        events=_read_events(path / EVENTS),
        requests=_read_requests(path / REQUESTS),
        locust=read_locust(path),
    )


def has_run_files(path: Path) -> bool:
    """Whether the directory holds anything a report can read."""
    names = (MANIFEST, SAMPLES, EVENTS, REQUESTS)
    return any((path / name).exists() for name in names) or any(path.glob("*_stats.csv"))


def _nullable(kind: str | list[str], **more: Any) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else kind
    return {"type": [*kinds, "null"], **more}


def _fields(kind: str | list[str], *names: str) -> dict[str, Any]:
    return {name: _nullable(kind) for name in names}


_COUNTS = _nullable(
    "object", properties=_fields("integer", "expected", "received", "lost", "duplicated")
)
# What the reports read from manifest.json, with its types. A producer's manifest matches; a key
# that does not (an edit by hand) is left out of the report with a warning, never a failure.
_MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_fields("string", "run_id", "target_url", "start_time", "end_time", "git_commit", "slo"),
        "seed": _nullable("integer"),
        "dataset": _nullable(
            "object",
            properties={**_fields("string", "path", "sha256", "format"), "n": _nullable("integer")},
        ),
        "calibration": _nullable(
            "object",
            properties={
                **_fields("string", "workload", "python"),
                **_fields("number", "requests_per_cpu_s", "requests_per_s", "seconds"),
                "connections": _nullable("integer"),
                **{
                    name: _nullable("array", items={"type": "number"})
                    for name in ("rounds_requests_per_cpu_s", "rounds_requests_per_s")
                },
            },
        ),
        "simulated": _nullable("object", properties={"speed": _nullable(["number", "string"])}),
        "host": _nullable(
            "object",
            properties={"gpus": _nullable("object", properties=_fields("string", "reason"))},
        ),
        "results": _COUNTS,
        "verification": _COUNTS,
        "cost": _nullable(
            "object",
            properties={
                "requests": _nullable("integer"),
                **_fields("number", "cpu_s", "driver_cpu_s", "target_cpu_s"),
            },
        ),
    },
}


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except orjson.JSONDecodeError:
        return {"_error": f"{path.name} is not valid JSON"}
    if not isinstance(document, dict):
        return {"_error": f"{path.name} is not a JSON object"}
    from jsonschema import Draft202012Validator  # only where a report reads a manifest

    wrong = {
        str(error.absolute_path[0]): error.message
        for error in Draft202012Validator(_MANIFEST_SCHEMA).iter_errors(document)
        if error.absolute_path
    }
    if wrong:
        for key in wrong:
            del document[key]
        ignored = "; ".join(f"{key}: {message[:80]}" for key, message in sorted(wrong.items()))
        document["_error"] = f"{path.name}: left out, of an unexpected type: {ignored}"
    return document


class _ColumnBuilder:
    """Rows of chosen fields gathered as tuples (C-speed `map(record.get, ...)`) and turned into
    float arrays every `_CHUNK` rows, so memory holds arrays, not millions of Python objects."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self._rows: list[tuple[Any, ...]] = []
        self._chunks: list[np.ndarray] = []

    def add(self, record: dict[str, Any]) -> tuple[Any, ...]:
        row = tuple(map(record.get, self.fields))
        self._rows.append(row)
        if len(self._rows) >= _CHUNK:
            self._flush()
        return row

    def _flush(self) -> None:
        if not self._rows:
            return
        try:  # None becomes NaN; numbers and booleans become floats
            chunk = np.array(self._rows, dtype=float)
        except (TypeError, ValueError):  # a string or an object somewhere: cell by cell
            chunk = np.array([[_number(v) for v in row] for row in self._rows], dtype=float)
        self._chunks.append(chunk.reshape(-1, len(self.fields)))
        self._rows.clear()

    def columns(self) -> dict[str, np.ndarray]:
        self._flush()
        table = np.concatenate(self._chunks) if self._chunks else np.empty((0, len(self.fields)))
        return {name: np.ascontiguousarray(table[:, i]) for i, name in enumerate(self.fields)}


def _number(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return _NAN


def _read_samples(path: Path) -> dict[str, Columns]:
    builders = {source: _ColumnBuilder(("t", *fields)) for source, fields in SAMPLE_FIELDS.items()}
    engine_row = EngineRowReader()
    for record in read_jsonl(path):
        source = record.get("source")
        builder = builders.get(source) if isinstance(source, str) else None
        if builder is not None:
            builder.add(engine_row(record) if source == "server" else record)
    result = {}
    for source, builder in builders.items():
        fields = builder.columns()
        t = fields.pop("t")
        usable = np.isfinite(t)
        if not usable.any():
            continue
        if not usable.all():
            t, fields = t[usable], {name: v[usable] for name, v in fields.items()}
        if np.any(t[1:] < t[:-1]):  # samplers of several sources may interleave out of order
            order = np.argsort(t, kind="stable")
            t, fields = t[order], {name: v[order] for name, v in fields.items()}
        result[source] = Columns(t, fields)
    return result


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = [
        e
        for e in read_jsonl(path)
        if isinstance(e.get("t"), (int, float)) and isinstance(e.get("kind"), str)
    ]
    events.sort(key=lambda event: event["t"])
    return events


def _read_requests(path: Path) -> Requests | None:
    if not path.exists():
        return None
    builder = _ColumnBuilder((*REQUEST_FIELDS, "ok", "error", "status"))
    ok_at = len(REQUEST_FIELDS)
    by_cause: Counter = Counter()
    by_status: Counter = Counter()
    gaps = GapHistogram()
    for record in read_jsonl(path):
        row = builder.add(record)
        if row[ok_at] is not True and isinstance(row[0], (int, float)):
            cause = row[ok_at + 1]
            by_cause[cause if isinstance(cause, str) and cause else "unknown"] += 1
            status = row[ok_at + 2]
            by_status[str(status) if status is not None else "none"] += 1
        elif isinstance(line_gaps := record.get(GAPS_FIELD), list):
            gaps.add(line_gaps)
    columns = builder.columns()
    ok = columns.pop("ok") == 1.0
    del columns["error"], columns["status"]
    usable = np.isfinite(columns["t"])
    if not usable.all():  # a line without a send time cannot be placed on the time axis
        columns = {name: v[usable] for name, v in columns.items()}
        ok = ok[usable]
    t_end = columns["t_end"]
    missing_end = ~np.isfinite(t_end)
    if missing_end.any():  # an end time is needed for time bins; sent + latency is the same moment
        columns["t_end"] = np.where(missing_end, columns["t"] + columns["latency_s"], t_end)
    return Requests(columns, ok, by_cause, by_status, gaps)
