"""Why a process ended, in plain words: OOM kill, OOM error, crash, stop, or normal completion.

SIGKILL is what the kernel's OOM killer sends (a container at its memory limit, exit -9 / 137),
so a SIGKILL death is an OOM kill unless something else is known to have sent it; an
out-of-memory message in the process's own output is an OOM error.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass

from harness.units import format_bytes

OOM_KILL = "oom_kill"
OOM_ERROR = "oom_error"
CRASH = "crash"
STOPPED = "stopped"
COMPLETED = "completed"

OOM_KILL_ADVICE = (
    "killed by SIGKILL, as the kernel OOM killer does: raise the memory limit "
    "(e.g. --memory-limit / container memory) or reduce the workload "
    "(batch size, concurrency, context)"
)

_LABELS = {
    OOM_KILL: "OOM kill",
    OOM_ERROR: "OOM error",
    CRASH: "crash",
    STOPPED: "stopped",
    COMPLETED: "completed",
}

# What PyTorch/CUDA, vLLM, Python, C++, llama.cpp/ggml, Ollama, cuBLAS and libc print when memory
# runs out: in a dying process's output, or in a 5xx body from a server that survived it.
OOM_TEXT = re.compile(
    rb"out of memory|OutOfMemoryError|MemoryError|allocation failed|failed to allocate"
    rb"|std::bad_alloc|Cannot allocate memory|cudaMalloc failed|CUBLAS_STATUS_ALLOC_FAILED",
    re.IGNORECASE,
)
_SCAN_BYTES = 1 << 20  # an OOM message is near the end of what a dying process printed


@dataclass(frozen=True)
class ExitVerdict:
    """A classified exit: `cause` is one of oom_kill, oom_error, crash, stopped, completed."""

    cause: str
    returncode: int
    signal: str | None
    message: str

    @property
    def line(self) -> str:
        """The line the supervisor prints: "target exited: OOM kill (SIGKILL, exit -9): ..."."""
        how = f"{self.signal}, exit {self.returncode}" if self.signal else f"exit {self.returncode}"
        return f"target exited: {_LABELS[self.cause]} ({how}): {self.message}"


def classify_exit(
    returncode: int,
    *,
    stopped: bool = False,
    oom_line: str | None = None,
    injected: bool = False,
    memory_limit: tuple[int, int] | None = None,
    kernel_oom_kill: bool | None = None,
) -> ExitVerdict:
    """Classify a return code (negative: killed by that signal, as subprocess reports it).

    memory_limit is (tree RSS bytes, limit bytes) when the harness killed it for passing
    --memory-limit; kernel_oom_kill is the kernel's OOM counters' verdict when readable.
    """
    signame = _signal_name(-returncode) if returncode < 0 else None
    if stopped:
        how = f"by {signame}" if signame else f"with exit code {returncode}"
        return ExitVerdict(STOPPED, returncode, signame, f"stopped by the harness (ended {how})")
    if returncode == -signal.SIGKILL:
        return ExitVerdict(
            OOM_KILL,
            returncode,
            signame,
            OOM_KILL_ADVICE + _sigkill_evidence(oom_line, injected, memory_limit, kernel_oom_kill),
        )
    if returncode != 0 and oom_line is not None:
        where = "GPU memory" if re.search("cuda|gpu|cublas", oom_line, re.IGNORECASE) else "memory"
        return ExitVerdict(
            OOM_ERROR,
            returncode,
            signame,
            f"out of {where}: the target printed {oom_line!r}; reduce the workload "
            f"(batch size, concurrency, context) or give it more {where}",
        )
    if returncode != 0:
        what = f"killed by {signame}" if signame else f"exited with code {returncode}"
        return ExitVerdict(CRASH, returncode, signame, f"{what}; see the target's log")
    return ExitVerdict(COMPLETED, returncode, None, "exited with code 0 (finished; not restarted)")


def find_oom_line(path: str | os.PathLike[str], start: int = 0) -> str | None:
    """The last out-of-memory line written to a log at or after byte offset `start`."""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            handle.seek(max(start, end - _SCAN_BYTES))
            data = handle.read()
    except OSError:
        return None
    found = None
    for line in data.splitlines():
        if OOM_TEXT.search(line):
            found = line
    if found is None:
        return None
    return found.decode("utf-8", "replace").strip()[:300]


def _sigkill_evidence(
    oom_line: str | None,
    injected: bool,
    memory_limit: tuple[int, int] | None,
    kernel_oom_kill: bool | None,
) -> str:
    if memory_limit is not None:
        rss, limit = memory_limit
        return (
            f". The harness sent it: the process tree's RSS {format_bytes(rss)} passed "
            f"--memory-limit {format_bytes(limit)}"
        )
    if injected:
        return ". This one was a fault injected on purpose, to rehearse an OOM kill"
    if kernel_oom_kill:
        return ". The kernel's OOM-kill counter went up: the OOM killer did it"
    if oom_line is not None:
        return f". Its last output says {oom_line!r}"
    if kernel_oom_kill is False:
        return ". The kernel's OOM-kill counters did not move, so another process may have sent it"
    return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
