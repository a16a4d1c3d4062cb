"""A locustfile that starves its own Locust process on purpose: CPUHog holds the event loop.

Every 50 ms it spins for 200 ms without yielding, so nothing else in the process runs then:
open-loop arrivals due meanwhile leave late, as they would from an overloaded load generator.
"""

import time

from locust import User, constant, task


class CPUHog(User):
    fixed_count = 1
    wait_time = constant(0.05)

    @task
    def spin(self) -> None:
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            pass
