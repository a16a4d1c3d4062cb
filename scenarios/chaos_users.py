"""OOMRecoveryUser: inject an OOM into the target every --chaos-every and time its recovery.

Opt-in only, never part of a default run: the class is abstract (invisible to Locust) unless
--chaos-every is given (command line, LOCUST_CHAOS_EVERY or a Locust config file) or the class is
named. Workers started on their own need the same option or name.

    locust -f scenarios/ --headless -u 10 -r 5 -t 2m --chaos-every 30s
    locust -f scenarios/ --headless -u 5 -t 1m ChatUser OOMRecoveryUser

The embedded server then runs with --oom kill, so an injected OOM is a real SIGKILL, a restart
by the supervisor and a `recovered` event; against a --host, the token comes from
HARNESS_ADMIN_TOKEN. The client's view of each recovery shows as RECOVERY stats entries.
"""

from __future__ import annotations

import logging
import time

import gevent
from locust import task
from locust.exception import StopUser

from harness.locust.chaos import InjectionFailed, inject_oom, time_recovery
from harness.locust.context import SHARED_ADMIN_TOKEN, SHARED_SUPERVISED
from harness.locust.options import CHAOS_USER, chaos_requested
from harness.locust.protocol import encode_chat
from harness.locust.users import LLMUser
from harness.rundir import EventKind

logger = logging.getLogger(__name__)


class OOMRecoveryUser(LLMUser):
    """One per run: an OOM every --chaos-every (default 30 s), at most --chaos-max per test."""

    abstract = not chaos_requested()
    api = "openai"  # its probe is a chat completion
    fixed_count = 1
    default_every_s = 30.0

    @property
    def every_s(self) -> float:
        return self.run.settings.chaos_every or self.default_every_s

    def wait_time(self) -> float:
        return self.every_s

    def on_start(self) -> None:
        super().on_start()
        self.injected = 0
        self.token = self.run.shared(SHARED_ADMIN_TOKEN)
        if not self.token:
            logger.error(
                f"{CHAOS_USER} cannot inject: the target is not the embedded server and "
                "HARNESS_ADMIN_TOKEN is not set (serve with --admin-token T and export it)"
            )
            raise StopUser()
        gevent.sleep(self.every_s)  # let the other users' traffic flow first

    @task
    def inject_oom_and_time_recovery(self) -> None:
        if self.injected >= self.run.settings.chaos_max:
            raise StopUser()
        probe = encode_chat(
            "openai", {**self.run.prompts.next().body, "max_tokens": 1}, stream=False
        )
        death_t = time.time()
        try:
            dies = inject_oom(self.run, self.host, self.token)
        except InjectionFailed as exc:
            logger.error(f"{CHAOS_USER}: {exc}")
            raise StopUser() from None
        self.injected += 1
        recovery = time_recovery(self.host, probe, death_t, dies, lambda: self.run.log.failures)
        stats = self.environment.stats
        for name, t in (
            ("to ready", recovery.ready_t),
            ("to first success", recovery.first_success_t),
        ):
            if t is not None:
                stats.get(name, "RECOVERY").log((t - death_t) * 1000, 0)
        if recovery.first_success_t is None:
            logger.error(f"{CHAOS_USER}: the target did not serve again after the OOM")
        if not self.run.shared(SHARED_SUPERVISED):  # the supervisor records the embedded server's
            self.run.log.event(EventKind.RECOVERED, source="client", **recovery.event_fields())
