"""A run on the embedded server at a finite --speed, told in simulated time: the hours it covered,
each OOM death (on its own or injected) at its simulated hour with the peak simulated VRAM before
it, and the context trims. Simulated time is wall time x --speed, as the server divides every
simulated delay by it; a request-driven memory model puts a death at the same request whatever
the machine, and a slower machine stretches every hour alike."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.rundir import EVENTS, REQUESTS, SAMPLES, EventKind, read_jsonl
from harness.units import format_bytes

HOUR = 3600.0
_TRIMS = "context_trims_total"


def simulated_story(run_path: Path, speed: float) -> dict[str, Any] | None:
    """The run's simulated timeline from its requests, events and server samples; None without
    a finite speed or requests."""
    if math.isinf(speed) or speed <= 0:
        return None
    ends = []
    first = math.inf
    for record in read_jsonl(run_path / REQUESTS):
        first = min(first, record["t"])
        if record.get("ok"):
            ends.append(record["t_end"])
    if not ends:
        return None
    ends.sort()
    last = ends[-1]
    exits = [e for e in read_jsonl(run_path / EVENTS) if e["kind"] == EventKind.EXITED]
    deaths = [e for e in exits if e.get("cause") == "oom_kill"]
    server = [s for s in read_jsonl(run_path / SAMPLES) if "sim_vram_bytes" in s]
    total = max((s.get("sim_vram_total_bytes") or 0 for s in server), default=0)
    ooms, since = [], first
    for death in deaths:
        t = death["t"]
        peak = max((s["sim_vram_bytes"] for s in server if since <= s["t"] <= t), default=None)
        ooms.append(
            {
                "hour": round((t - first) * speed / HOUR, 2),
                "after_requests": bisect.bisect_right(ends, t),
                "injected": bool(death.get("injected")),
                "peak_sim_vram_bytes": peak,
                "peak_sim_vram_share": round(peak / total, 4) if peak and total else None,
            }
        )
        since = t
    return {
        "speed": speed,
        "wall_s": round(last - first, 3),
        "hours": round((last - first) * speed / HOUR, 2),
        "requests": len(ends),
        "sim_vram_total_bytes": total or None,
        "peak_sim_vram_bytes": max((s["sim_vram_bytes"] for s in server), default=None),
        "ooms": ooms,
        "trims": trim_counts(server, [e["t"] for e in exits]),
    }


def trim_counts(samples: Iterable[dict[str, Any]], deaths: Sequence[float] = ()) -> dict[str, Any]:
    """Context trims over every server lifetime, from the sampled counters' increases (counted
    from zero after a death, or when a counter falls; trims after a lifetime's last sample are
    not seen): the total, and by reason where the sample names it (a server with trims of one
    reason only is scraped without the label)."""
    last: dict[str, float] = {}
    counts: dict[str, float] = {}
    previous = -math.inf
    for sample in samples:
        t = sample.get("t", previous)
        if any(previous < death <= t for death in deaths):
            last.clear()  # a new server: its counters start from zero
        previous = t
        total = 0.0
        for key, value in sample.items():
            if key.startswith(_TRIMS) and value is not None:
                total += value
                reason = key.partition('reason="')[2].partition('"')[0]
                if reason:
                    _add_increase(counts, last, reason, value)
        if any(key.startswith(_TRIMS) for key in sample):
            _add_increase(counts, last, "", total)
    total = int(counts.pop("", 0))
    return {"total": total, "by_reason": {r: int(n) for r, n in sorted(counts.items())}}


def _add_increase(counts: dict[str, float], last: dict[str, float], key: str, value: float) -> None:
    before = last.get(key, 0.0)
    counts[key] = counts.get(key, 0.0) + (value - before if value >= before else value)
    last[key] = value


def story_lines(story: dict[str, Any]) -> list[str]:
    """The closing lines: hours covered, each OOM death, the trims."""
    lines = [
        f"simulated time: {story['hours']:.1f} h at --speed {story['speed']:g} "
        f"({story['wall_s']:.1f} s of wall time, {story['requests']:,} results)"
    ]
    total = story["sim_vram_total_bytes"]
    for oom in story["ooms"]:
        how = "injected: true" if oom["injected"] else "organic, injected: false"
        peak = oom["peak_sim_vram_bytes"]
        vram = "peak simulated VRAM before it not sampled"
        if peak is not None and total:
            vram = (
                f"peak simulated VRAM before it {format_bytes(peak)} "
                f"({oom['peak_sim_vram_share']:.1%} of {format_bytes(total)})"
            )
        lines.append(
            f"OOM kill ({how}) at simulated hour {oom['hour']:.1f}, after "
            f"{oom['after_requests']:,} results; {vram}"
        )
    if not story["ooms"]:
        lines.append("no OOM kill")
    trims = story["trims"]
    if trims["total"]:
        by_reason = ", ".join(f"{reason} {n:,}" for reason, n in trims["by_reason"].items())
        lines.append(f"context trims: {trims['total']:,} ({by_reason})")
    return lines
