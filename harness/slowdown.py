"""A test-only knob: HARNESS_TEST_SLOWDOWN=0.25 makes this process do 25% more CPU work.

It exists to prove that the scale-regression gate catches a real slowdown (docs/reports.md,
"Checking the gate"). Armed when the harness package is imported, so every process of a scale
run (the driver's, the embedded server's, which inherit the variable) slows down alike: after
each tick of CPU time (a SIGPROF timer) the main thread spins for the asked share of the CPU the
process used, in the middle of whatever it was doing, as slower code would. Never set it outside
that check.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time

SLOWDOWN_ENV = "HARNESS_TEST_SLOWDOWN"
_PERIOD_S = 0.001  # CPU time between burns (the kernel rounds it up to its tick)
_armed = False


def share_from_env() -> float:
    """The extra share of CPU work asked for (0 when the variable is unset or not a number)."""
    try:
        share = float(os.environ.get(SLOWDOWN_ENV, ""))
    except ValueError:
        return 0.0
    return share if 0 < share <= 10 else 0.0


def start_from_env() -> bool:
    """Arm the timer when HARNESS_TEST_SLOWDOWN asks for it; whether it did (once a process)."""
    global _armed
    share = share_from_env()
    main = threading.current_thread() is threading.main_thread()
    if _armed or not share or not main or not hasattr(signal, "setitimer"):
        return False
    _armed = True
    start = time.process_time()
    burned = 0.0
    burning = False

    def burn(signum: int, frame: object) -> None:
        # The debt is kept over the whole life of the process (the timer's tick does not add
        # up) and spun off on this thread's CPU clock: a wall-clock spin would count the time
        # other work took the core as burned, and slow the code by less on a busy machine.
        nonlocal burned, burning
        if burning:  # the timer fired again during the spin
            return
        burning = True
        owed = share * (time.process_time() - start - burned) - burned
        if owed > 0:
            began = time.thread_time()
            end = began + owed
            while time.thread_time() < end:
                pass
            burned += time.thread_time() - began
        burning = False

    signal.signal(signal.SIGPROF, burn)
    signal.setitimer(signal.ITIMER_PROF, _PERIOD_S, _PERIOD_S)
    atexit.register(_disarm)
    return True


def _disarm() -> None:
    """No timer signal may reach an interpreter shutting down (its default action kills)."""
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    signal.signal(signal.SIGPROF, signal.SIG_IGN)
