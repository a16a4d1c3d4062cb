"""Users over time for each --load-shape, scaled by -u (peak users) and -t (duration).

Load always stops by itself: without -t a test lasts DEFAULT_RUN_TIME_S, a soak SOAK_RUN_TIME_S.
"""

from __future__ import annotations

import math

LOAD_SHAPES = ("steady", "ramp", "step", "spike", "soak")
DEFAULT_RUN_TIME_S = 600.0
SOAK_RUN_TIME_S = 3600.0
STEPS = 5


def default_duration(shape: str) -> float:
    """Seconds a test of this shape lasts when no -t is given."""
    return SOAK_RUN_TIME_S if shape == "soak" else DEFAULT_RUN_TIME_S


def users_at(shape: str, elapsed: float, duration: float, peak: int) -> int | None:
    """Users wanted `elapsed` seconds into a test of `duration` s peaking at `peak`; None: stop.

    steady and soak hold `peak`; ramp climbs linearly from 1 to `peak` over the whole test; step
    adds peak/5 users every fifth of it; spike holds peak/5, jumps to `peak` for the middle
    fifth, then falls back.
    """
    if elapsed >= duration:
        return None
    fraction = elapsed / duration
    low = max(1, math.ceil(peak / STEPS))
    if shape == "ramp":
        return max(1, math.ceil(peak * fraction))
    if shape == "step":
        return min(peak, low * (int(fraction * STEPS) + 1))
    if shape == "spike":
        return peak if 0.4 <= fraction < 0.6 else low
    return peak
