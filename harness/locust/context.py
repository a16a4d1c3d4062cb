"""What the harness keeps per Locust process: settings, prompt source, run log and target."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.locust.failures import Rejections
from harness.locust.options import Settings
from harness.locust.prompts import PromptSource, dataset_source, generated_source
from harness.locust.records import RunLog

if TYPE_CHECKING:
    from harness.locust.openloop import OpenLoop
    from harness.locust.readiness import GeventReadiness
    from harness.locust.selfcheck import SelfCheck
    from harness.locust.target import EmbeddedTarget
    from harness.rundir import RunDir
    from harness.supervision.samplers import SamplerLoop

# Set on the master's parsed options, which Locust forwards to every worker with its spawn jobs.
SHARED_WORKERS = "harness_workers"
SHARED_ADMIN_TOKEN = "harness_admin_token"
SHARED_SUPERVISED = "harness_supervised"
SHARED_SCHEDULE_START = "harness_schedule_start"


@dataclass
class RunContext:
    """One per Locust process; the master (or local runner) also owns the run directory."""

    environment: Environment
    log: RunLog
    settings: Settings | None = None
    run_dir: RunDir | None = None
    server: EmbeddedTarget | None = None
    sampler: SamplerLoop | None = None
    open_loop: OpenLoop | None = None  # this process's arrivals, with --rate or --trace
    readiness: GeventReadiness | None = None  # the driver's poller, in a process sending load
    selfcheck: SelfCheck | None = None  # this process's own load-generator check, per test
    rejections: Rejections = field(default_factory=Rejections)
    schedule_running: bool = False  # an open-loop test is on
    schedule_pending: bool = False  # an open-loop test ended; its schedule lag not yet reported
    checked_trace: str | None = None
    started_t: float = field(default_factory=time.time)  # deaths of a supervised target count
    _prompts: PromptSource | None = None
    _prompts_key: tuple[Any, ...] | None = field(default=None, repr=False)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.environment.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.environment.runner, MasterRunner)

    @property
    def prompts(self) -> PromptSource:
        if self._prompts is None:
            raise RuntimeError("no prompt source: the test has not started in this process")
        return self._prompts

    def shared(self, name: str, default: Any = None) -> Any:
        """A value the master shares with workers through the parsed options."""
        return getattr(self.environment.parsed_options, name, default)

    def part(self) -> tuple[int, int]:
        """(this process's index, processes sending load): which prompts and arrivals are ours."""
        if not self.is_worker:
            return 0, 1
        parts = max(1, int(self.shared(SHARED_WORKERS) or 1))
        return max(0, self.environment.runner.worker_index) % parts, parts

    def prepare_prompts(self) -> None:
        """(Re)build this process's prompt source when the settings or the worker layout changed."""
        settings = self.settings
        assert settings is not None
        part, parts = self.part()
        key = (
            settings.dataset,
            settings.candidates,
            settings.seed,
            settings.model,
            settings.max_tokens,
            part,
            parts,
        )
        if key == self._prompts_key:
            return
        common = {
            "model": settings.model,
            "max_tokens": settings.max_tokens,
            "part": part,
            "parts": parts,
        }
        if settings.dataset:
            self._prompts = dataset_source(settings.dataset, **common)
        else:
            self._prompts = generated_source(settings.candidates, seed=settings.seed, **common)
        self._prompts_key = key


def run_context(environment: Environment) -> RunContext:
    """The harness context of a Locust environment (created by the plugin's init hook)."""
    context = getattr(environment, "harness", None)
    if context is None:
        raise RuntimeError(
            "the harness Locust plugin is not loaded: subclass harness.locust.users.LLMUser"
        )
    return context
