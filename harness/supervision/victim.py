"""Pick the process the kernel's OOM killer would: the largest /proc/PID/oom_score in the tree.

oom_score is the kernel's own badness (memory share, adjusted by oom_score_adj); RSS breaks ties
and stands in where oom_score cannot be read. In vLLM's tree that is the Worker, not the API server.
"""

from __future__ import annotations

import psutil

from harness.errors import UserError

VICTIMS = ("leader", "largest")
DEFAULT_VICTIM = "largest"


def pick_victim(root_pid: int, how: str | int = DEFAULT_VICTIM) -> int:
    """The pid to kill in root_pid's tree: "leader" (root_pid), "largest" (max oom_score, then
    RSS), or a pid (which must be in the tree). UserError when it is not there."""
    try:
        root = psutil.Process(root_pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        raise UserError(
            f"target pid {root_pid} has exited; try again once it is restarted"
        ) from None
    if how == "leader":
        return root_pid
    if how == "largest":
        return max(tree, key=_badness).pid
    pid = _as_pid(how)
    if pid not in {process.pid for process in tree}:
        raise UserError(
            f"--victim {pid} is not in the target's process tree "
            f"({', '.join(str(process.pid) for process in tree)})"
        )
    return pid


def parse_victim(text: str) -> str | int:
    """--victim's value: leader, largest or a pid; UserError otherwise."""
    if text in VICTIMS:
        return text
    return _as_pid(text)


def _as_pid(value: str | int) -> int:
    try:
        pid = int(value)
    except ValueError:
        pid = 0
    if pid <= 0:
        raise UserError(
            f"--victim {value!r} is not leader, largest or a pid, e.g. --victim largest"
        )
    return pid


def _badness(process: psutil.Process) -> tuple[int, int]:
    """(oom_score, RSS) for max(): unreadable ones rank lowest."""
    try:
        with open(f"/proc/{process.pid}/oom_score", "rb") as handle:
            score = int(handle.read())
    except (OSError, ValueError):
        score = -1
    try:
        rss = int(process.memory_info().rss)
    except psutil.Error:
        rss = -1
    return score, rss
