"""Why a process ended, in plain words: OOM kill, OOM error, crash, stop, or normal completion.

SIGKILL is what the kernel's OOM killer sends (a container at its memory limit, exit -9 / 137),
so a SIGKILL death is an OOM kill unless something else is known to have sent it; an
out-of-memory message in the process's own output is an OOM error. A server leader that reports
its engine or worker dead (vLLM's EngineDeadError, Ollama's runner) lost a process the OOM killer
picks first, so that exit is an OOM kill whatever its code. A supervised server (one with a health
URL) has no normal finish: exit 0 is an unexpected exit too.
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
# What vLLM, Ollama and llama.cpp's wrappers print when a worker/engine process under them died.
ENGINE_DEATH_TEXT = re.compile(
    rb"EngineDeadError|died unexpectedly|llama runner process has terminated"
    rb"|llama runner process no longer running|EngineCore encountered a fatal error",
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
    engine_death_line: str | None = None,
    descendant_killed: str | None = None,
    supervised: bool = False,
) -> ExitVerdict:
    """Classify a return code (negative: killed by that signal, as subprocess reports it).

    memory_limit is (tree PSS, else RSS, bytes; limit bytes) when the harness killed it for passing
    --memory-limit; kernel_oom_kill is the kernel's OOM counters' verdict when readable;
    engine_death_line is the last engine-death line of its log; descendant_killed names a process
    of its tree seen SIGKILLed; supervised: it was meant to keep serving (exit 0 is no finish).
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
    if oom_line is not None and descendant_killed is None and (returncode != 0 or supervised):
        where = "GPU memory" if re.search("cuda|gpu|cublas", oom_line, re.IGNORECASE) else "memory"
        return ExitVerdict(
            OOM_ERROR,
            returncode,
            signame,
            f"out of {where}: the target printed {oom_line!r}; reduce the workload "
            f"(batch size, concurrency, context) or give it more {where}",
        )
    if descendant_killed is not None or engine_death_line is not None:
        what = (
            f"{descendant_killed} in its tree was killed by SIGKILL"
            if descendant_killed
            else "a process in its tree died"
        )
        said = f"; the target printed {engine_death_line!r}" if engine_death_line else ""
        return ExitVerdict(
            OOM_KILL,
            returncode,
            signame,
            f"{what}{said} (exit {returncode} followed), as when the OOM killer picks the "
            "largest process (vLLM's worker, Ollama's runner): raise the memory limit or reduce "
            "the workload" + _sigkill_evidence(None, injected, memory_limit, kernel_oom_kill),
        )
    if returncode != 0:
        what = f"killed by {signame}" if signame else f"exited with code {returncode}"
        return ExitVerdict(CRASH, returncode, signame, f"{what}; see the target's log")
    if supervised:
        return ExitVerdict(
            CRASH,
            returncode,
            None,
            "exited with code 0 unasked: a server given a health URL has no normal finish",
        )
    return ExitVerdict(COMPLETED, returncode, None, "exited with code 0 (finished; not restarted)")


def find_oom_line(path: str | os.PathLike[str], start: int = 0) -> str | None:
    """The last out-of-memory line written to a log at or after byte offset `start`."""
    return _last_line(OOM_TEXT, path, start)


def find_engine_death_line(path: str | os.PathLike[str], start: int = 0) -> str | None:
    """The last engine/worker-death line (EngineDeadError, "died unexpectedly") after `start`."""
    return _last_line(ENGINE_DEATH_TEXT, path, start)


def _last_line(pattern: re.Pattern[bytes], path: str | os.PathLike[str], start: int) -> str | None:
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            handle.seek(max(start, end - _SCAN_BYTES))
            data = handle.read()
    except OSError:
        return None
    found = None
    for line in data.splitlines():
        if pattern.search(line):
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
        used, limit = memory_limit
        return (
            f". The harness sent it: the process tree's memory {format_bytes(used)} passed "
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
