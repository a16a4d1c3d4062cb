"""LoadShape: the one shape class of the scenarios, reading --load-shape at every tick.

Locust runs the first shape class it finds, so a single class serves every --load-shape (the web
UI may change the option between tests); -u, -r and -t keep their meaning (see curves.py).
"""

from __future__ import annotations

import logging
import math

from locust import LoadTestShape

from harness.locust.curves import default_duration, users_at
from harness.locust.options import Settings

logger = logging.getLogger(__name__)


class LoadShape(LoadTestShape):
    """--load-shape steady|ramp|step|spike|soak over -t (default 10 min, soak 1 h), peak -u."""

    use_common_options = True  # -u, -r and -t keep their meaning, in the web UI too

    def __init__(self) -> None:
        super().__init__()
        self._announced: tuple[str, float] | None = None

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        if options is None:
            return None
        settings = Settings.from_options(options)
        shape = settings.load_shape
        duration = float(options.run_time or 0) or default_duration(shape)
        if not options.run_time and settings.arrivals is not None and settings.arrivals.finite:
            duration = math.inf  # a trace ends the test when it is over
        if self._announced != (shape, duration):
            self._announced = (shape, duration)
            if math.isinf(duration):
                logger.info("No --run-time given: the test ends when the trace does")
            else:
                note = "" if options.run_time else " (no --run-time given; set -t to change)"
                logger.info(f"Load shape {shape}: the test ends after {duration:g} s{note}")
        users = users_at(shape, self.get_run_time(), duration, int(options.num_users or 1))
        return None if users is None else (users, float(options.spawn_rate or 1))
