"""Starving a process of CPU for a while, as other jobs on a busy machine would."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def starve(pid: int, seconds: float = 3.0) -> None:
    """Put process `pid`'s main thread (the driver's event loop) on one CPU at the lowest
    priority, beside two busy processes at normal priority, for `seconds`; then give it back."""
    allowed = os.sched_getaffinity(pid)
    cpu = {min(allowed)}
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            preexec_fn=lambda: os.sched_setaffinity(0, cpu),
        )
        for _ in range(2)
    ]
    try:
        os.sched_setaffinity(pid, cpu)
        os.setpriority(os.PRIO_PROCESS, pid, 19)
        time.sleep(seconds)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        os.sched_setaffinity(pid, allowed)
