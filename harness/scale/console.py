"""What a person sees of a scale run on stderr: a live bar on a terminal, plain lines in logs,
and the closing summary."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from harness.progress import interactive
from harness.scale.config import ScaleOutcome
from harness.scale.story import story_lines


class Console:
    """Human output on stderr: a live bar on a terminal, plain lines in logs."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.interactive = interactive() and out is sys.stderr

    def say(self, text: str) -> None:
        print(f"scale: {text}", file=self.out, flush=True)

    @contextlib.contextmanager
    def bar(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        """advance(k) for work counted in steps (dataset generation)."""
        show = self.live_bar(label, total, 0)
        count = 0

        def advance(k: int) -> None:
            nonlocal count
            count += k
            show(count)

        try:
            yield advance
        finally:
            show(None)

    def live_bar(self, label: str, total: int, done: int) -> Callable[[int | None], None]:
        """show(position) moves the bar; show(None) removes it. A no-op off a terminal."""
        if not self.interactive:
            return lambda k: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            transient=True,
        )
        task = bar.add_task(label, total=total, completed=done, rate="")
        bar.start()
        started, first = time.monotonic(), done

        def show(position: int | None) -> None:
            if position is None:
                bar.stop()
                return
            elapsed = time.monotonic() - started
            rate = f"{(position - first) / elapsed:,.0f}/s" if elapsed > 0 else ""
            bar.update(task, completed=position, rate=rate)

        return show

    def summary(self, outcome: ScaleOutcome) -> None:
        v = outcome.verification
        sent = v["received"] - outcome.resumed_from
        rate = sent / outcome.seconds if outcome.seconds > 0 else 0.0
        self.say(
            f"{outcome.n:,} requests, {sent:,} sent this session in {outcome.seconds:.1f} s "
            f"({rate:,.0f} req/s), {outcome.mode} mode"
        )
        self.say(
            f"verification: expected {v['expected']:,}, received {v['received']:,}, "
            f"lost {v['lost']:,}, duplicated {v['duplicated']:,}, failed {v['failed']:,}"
        )
        for line in story_lines(outcome.simulated) if outcome.simulated else ():
            self.say(line)
        if outcome.failures:
            causes = ", ".join(f"{k} {c:,}" for k, c in sorted(outcome.failures.items()))
            self.say(f"failed attempts (retried): {causes}")
        for r in outcome.recoveries:
            ready = r.get("seconds_to_ready")
            first = r.get("seconds_to_first_success")
            self.say(
                f"recovered from {r.get('cause', 'death')}: ready after {_seconds(ready)}, "
                f"first success after {_seconds(first)}, "
                f"{r.get('requests_failed', 0)} requests failed in between"
            )
        if outcome.saturated_processes:
            who = (
                "the client"
                if outcome.processes == 1
                else f"{outcome.saturated_processes} of {outcome.processes} driver processes"
            )
            self.say(
                f"CLIENT SATURATED: {who} could not keep up (event-loop lag or CPU, see the "
                "load_generator events): rates and latencies measure the client too; try "
                "--processes N or a quieter machine"
            )
        self.say(f"run directory {outcome.run_dir}")
        if outcome.report is not None:
            self.say(f"report {outcome.report}")
        if not outcome.ok:
            self.say("FAILED: results lost, duplicated or failed beyond --max-failed-rate")


def duration(seconds: float) -> str:
    """A time left as people read it: 4m05s, 12s, or ? when unknown."""
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"
