"""One incident, one record, when `harness supervise` and `harness scale --target` are two commands.

The supervisor's run directory knows each death (`exited`), restart (`started`) and `ready`; only
scale knows when a request first succeeded again and how many failed in between. After the run,
scale copies the supervisor's lifecycle events from its own time window into its run directory
and closes each death with a `recovered` event timed against its own requests.jsonl, so its
summary counts and times the incidents it lived through.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.rundir import EVENTS, REQUESTS, EventKind, RunDir, read_jsonl

# What the supervisor records of a target's life, copied as they are (with source: supervisor).
_LIFECYCLE = frozenset(
    {
        EventKind.FAULT_INJECTED,
        EventKind.EXITED,
        EventKind.RESTARTING,
        EventKind.STARTED,
        EventKind.READY,
        EventKind.GAVE_UP,
        EventKind.MEMORY_LIMIT_EXCEEDED,
    }
)
_NOT_A_DEATH = frozenset({"stopped", "completed"})


def import_supervisor_incidents(supervisor_dir: Path, run_dir: RunDir, since_t: float) -> int:
    """Copy the supervisor's lifecycle events since `since_t` into run_dir, each death followed
    by its `recovered` timings; returns the number of deaths."""
    events = [
        e
        for e in read_jsonl(supervisor_dir / EVENTS)
        if e.get("kind") in _LIFECYCLE and e.get("t", 0.0) >= since_t
    ]
    deaths = _deaths(events)
    outcomes = _outcomes(run_dir.path / REQUESTS)
    timed = {id(d["closing"]): d for d in _time_recoveries(deaths, outcomes)}
    for event in events:
        fields = {k: v for k, v in event.items() if k not in ("kind", "t")}
        run_dir.event(event["kind"], t=event["t"], source="supervisor", **fields)
        recovered = timed.get(id(event))
        if recovered is not None and recovered["serving"]:
            run_dir.event(EventKind.RECOVERED, **recovered["fields"])
    return len(deaths)


def _deaths(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each death with the `started` and `ready` that followed it (before the next death), and
    the last of those events, after which its `recovered` goes."""
    deaths: list[dict[str, Any]] = []
    for event in events:
        kind = event["kind"]
        if kind == EventKind.EXITED and event.get("cause") not in _NOT_A_DEATH:
            deaths.append({"exited": event, "closing": event, "up_t": None, "ready_t": None})
        elif deaths and kind == EventKind.STARTED and deaths[-1]["up_t"] is None:
            deaths[-1].update(up_t=event["t"], closing=event)
        elif deaths and kind == EventKind.READY and deaths[-1]["ready_t"] is None:
            deaths[-1].update(ready_t=event["t"], closing=event)
    return deaths


def _outcomes(path: Path) -> Iterator[tuple[float, bool]]:
    """(when it finished, ok) of every attempt scale sent, in the order they were written."""
    if not path.exists():
        return
    for record in read_jsonl(path):
        t = record.get("t_end", record.get("t"))
        if isinstance(t, (int, float)):
            yield float(t), bool(record.get("ok"))


def _time_recoveries(
    deaths: list[dict[str, Any]], outcomes: Iterator[tuple[float, bool]]
) -> list[dict[str, Any]]:
    """For each death: the first success after it came back up, and the failures before that.
    One pass over the attempts (streamed: memory flat in their number)."""
    timed = [{**d, "first_t": None, "failed": 0, "serving": False} for d in deaths]
    for t, ok in outcomes:
        for death in timed:
            death_t = death["exited"]["t"]
            if t < death_t or death["first_t"] is not None:
                continue
            if ok and death["up_t"] is not None and t >= death["up_t"]:
                death["first_t"] = t
            elif not ok:
                death["failed"] += 1
    for death in timed:
        death_t = death["exited"]["t"]
        ready_t = death["ready_t"]
        if ready_t is not None and death["first_t"] is not None:
            ready_t = min(ready_t, death["first_t"])  # it served between two health polls

        def since(t: float | None, death_t: float = death_t) -> float | None:
            return None if t is None else round(t - death_t, 6)

        death["serving"] = death["up_t"] is not None and (
            ready_t is not None or death["first_t"] is not None
        )
        death["fields"] = {
            "death_t": death_t,
            "cause": death["exited"].get("cause"),
            "pid": death["exited"].get("pid"),
            "requests_failed": death["failed"],
            "seconds_to_up": since(death["up_t"]),
            "seconds_to_ready": since(ready_t),
            "seconds_to_first_success": since(death["first_t"]),
            "source": "scale",
        }
    return timed
