"""OOMRecoveryUser: inject an OOM into the target every --chaos-every and time its recovery.

Opt-in only, never part of a default run: the class is abstract (invisible to Locust) unless
--chaos-every is given (command line, LOCUST_CHAOS_EVERY or a Locust config file) or the class is
named. Workers started on their own need the same option or name.

    locust -f scenarios/ --headless -u 10 -r 5 -t 2m --chaos-every 30s
    locust -f scenarios/ --headless -u 5 -t 1m ChatUser OOMRecoveryUser

Against a real server kept alive by `harness supervise --run-dir DIR`, give --supervisor DIR: each
OOM is then a SIGKILL of the process the kernel's OOM killer would pick (the largest oom_score in
the server's tree, e.g. vLLM's worker; --victim leader|largest|PID to choose), the supervisor
restarts it, and its deaths are copied into this run, timed against its requests. The embedded
server runs with --oom kill, so an injected (simulated CUDA) OOM is a real SIGKILL, a restart by
the supervisor and a `recovered` event; against another --host of ours, the admin token comes
from HARNESS_ADMIN_TOKEN. The client's view of each recovery shows as RECOVERY stats entries.

    harness supervise --run-dir runs/vllm --health http://127.0.0.1:8000/health -- vllm serve M
    locust -f scenarios/ --headless -u 8 -t 10m --supervisor runs/vllm --chaos-every 2m
"""

from __future__ import annotations

import logging
import time

import gevent
from locust import task
from locust.exception import StopUser

from harness.locust.chaos import InjectionFailed, inject_oom, kill_supervised, time_recovery
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
        self.supervisor = self.run.settings.supervisor
        self.token = self.run.shared(SHARED_ADMIN_TOKEN)
        if not self.supervisor and not self.token:
            logger.error(
                f"{CHAOS_USER} cannot inject: give --supervisor with the run directory of the "
                "`harness supervise` keeping the target alive (or, for a `harness serve` of your "
                "own, set HARNESS_ADMIN_TOKEN to its --admin-token)"
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
        base = self.host.rstrip("/")
        try:
            if self.supervisor:
                kill = kill_supervised(self.supervisor, self.run.settings.victim)
                death_t, dies, health_url = kill.t, True, kill.health_url or base + "/v1/models"
                logger.info(f"{CHAOS_USER}: SIGKILLed pid {kill.victim_pid} (OOM killer's pick)")
            else:
                death_t, health_url = time.time(), base + "/health/ready"  # our server's route
                dies = inject_oom(self.run, self.host, self.token)
        except InjectionFailed as exc:
            logger.error(f"{CHAOS_USER}: {exc}")
            raise StopUser() from None
        self.injected += 1
        recovery = time_recovery(
            self.host, health_url, probe, death_t, dies, lambda: self.run.log.failures
        )
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
