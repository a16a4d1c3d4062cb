"""Progress display: a rich bar on an interactive terminal, nothing in CI logs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def interactive() -> bool:
    """True on a terminal outside CI, where a live progress bar helps rather than floods logs."""
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def progress_bar(description: str, total: int, unit: str = "") -> Iterator[Callable[[int], None]]:
    """Yield advance(k); draws a bar with rate and ETA on a terminal, stays quiet otherwise."""
    if not interactive():
        yield lambda _k: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} {unit}/s" if task.speed else "")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda k: progress.advance(task, k)
