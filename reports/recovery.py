"""OOM/crash incidents from events.jsonl: death -> process up -> ready -> first success.

The supervisor's `recovered` event carries the timings; when a producer wrote only `exited`,
`started` and `ready`, the first two stages are derived from those events instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.rundir import EventKind

STAGES = ("seconds_to_up", "seconds_to_ready", "seconds_to_first_success")
# An exit this soon after a `fault_injected` event is the fault's doing, not a surprise.
FAULT_WINDOW_S = 10.0


def incidents(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per death of the target (exits other than `stopped`, `completed`), in order."""
    found: list[dict[str, Any]] = []
    open_: dict[str, Any] | None = None
    last_fault_t = -np.inf
    for event in events:
        kind, t = event.get("kind"), event["t"]
        if kind == EventKind.FAULT_INJECTED:
            last_fault_t = t
        elif kind == EventKind.EXITED and event.get("cause") not in ("stopped", "completed"):
            if open_ is not None:
                open_["note"] = "died again before recovering"
            injected = bool(event.get("injected")) or t - last_fault_t <= FAULT_WINDOW_S
            open_ = _incident(t, event.get("cause"), injected, event)
            found.append(open_)
        elif kind == EventKind.STARTED and open_ is not None and open_["seconds_to_up"] is None:
            open_["seconds_to_up"] = t - open_["death_t"]
        elif kind == EventKind.READY and open_ is not None and open_["seconds_to_ready"] is None:
            open_["seconds_to_ready"] = t - open_["death_t"]
        elif kind == EventKind.RECOVERED:
            if open_ is None:  # its `exited` line was lost (e.g. torn): keep what this one says
                open_ = _incident(event.get("death_t", t), None, False, {})
                found.append(open_)
            for stage in STAGES:
                if isinstance(event.get(stage), (int, float)):
                    open_[stage] = float(event[stage])
            open_["requests_failed"] = event.get("requests_failed")
            open_["recovered"] = True
            open_ = None
    return found


def _incident(death_t: float, cause: str | None, injected: bool, exited: dict) -> dict[str, Any]:
    return {
        "death_t": death_t,
        "cause": cause or "unknown",
        "returncode": exited.get("returncode"),
        "signal": exited.get("signal"),
        "injected": injected,
        "recovered": False,
        **dict.fromkeys(STAGES),
        "requests_failed": None,
    }


def _stage_figures(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    return {"p50": float(np.median(array)), "mean": float(array.mean()), "max": float(array.max())}


def recovery_summary(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, and p50/mean/max per stage over the incidents that recovered."""
    recovered = [item for item in found if item.get("recovered")]
    summary: dict[str, Any] = {
        "incidents": len(found),
        "recovered": len(recovered),
        "unrecovered": len(found) - len(recovered),
    }
    for stage in STAGES:
        values = [item[stage] for item in recovered if item.get(stage) is not None]
        summary[stage] = _stage_figures(values)
    failed = [
        item["requests_failed"] for item in recovered if item.get("requests_failed") is not None
    ]
    summary["requests_failed"] = (
        {"total": int(sum(failed)), "max": int(max(failed))} if failed else None
    )
    summary["per_incident"] = found
    return summary
