"""The reference server embedded in a test or benchmark: a supervised, sampled child process.

with EmbeddedServer(run_dir, server_args=["--oom", "kill", "--speed", "max"]) as server:
    httpx.post(f"{server.url}/v1/chat/completions", json=...)
    server.inject({"fault": "oom"})          # recorded; the supervisor times the recovery
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from harness.admin_faults import post_fault
from harness.errors import UserError
from harness.interpreter import python_command
from harness.net import free_port
from harness.rundir import EventKind, RunDir
from harness.supervision.samplers import SamplerLoop, start_sampling
from harness.supervision.supervisor import ADMIN_TOKEN_ENV, Supervisor

_DEATH_FAULTS = frozenset({"oom", "crash"})


class EmbeddedServer:
    """`harness serve` on a free 127.0.0.1 port under a Supervisor (ready = /health/ready),
    sampled (its process tree, its /metrics). A context manager: everything stops on exit."""

    def __init__(
        self,
        run_dir: RunDir,
        *,
        server_args: Sequence[str] = (),
        sample_interval: float = 0.5,
        ready_timeout: float = 60.0,
        **supervisor_options: Any,
    ) -> None:
        self.run_dir = run_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_urlsafe(16)
        self.sample_interval = sample_interval
        self.ready_timeout = ready_timeout
        command = python_command("harness", "serve", "--port", str(self.port))
        if "--data-dir" not in server_args:  # its own files and batches, not the user's
            command += ["--data-dir", str(run_dir.path / "server-data")]
        self.supervisor = Supervisor(
            [*command, *server_args],
            run_dir,
            health_url=f"{self.url}/health/ready",
            env={ADMIN_TOKEN_ENV: self.admin_token},
            **supervisor_options,
        )
        self.sampler: SamplerLoop | None = None

    def start(self) -> EmbeddedServer:
        """Start server and sampling; UserError when it is not ready within ready_timeout."""
        self.supervisor.start()
        self.sampler = start_sampling(
            self.run_dir,
            interval=self.sample_interval,
            pid=lambda: self.supervisor.pid,
            metrics_url=f"{self.url}/metrics",
            metrics_grace_s=self.ready_timeout,
        )
        deadline = time.monotonic() + self.ready_timeout
        while not self.supervisor.wait_ready(min(0.2, max(0.0, deadline - time.monotonic()))):
            refused = self._refused_arguments()
            if refused is not None or time.monotonic() >= deadline:
                self.stop()
                raise UserError(
                    f"the reference server refused its arguments: {refused}"
                    if refused is not None
                    else f"the reference server was not ready within {self.ready_timeout:g} s; "
                    f"see its log, {self.supervisor.log_path}"
                )
        return self

    def _refused_arguments(self) -> str | None:
        """The server's one-line error when it exited 2 (bad arguments, as every `harness`
        command does): restarting it would only repeat that, so scale stops at once."""
        last = self.supervisor.last_exit
        if last is None or last.get("returncode") != 2:
            return None
        try:
            lines = self.supervisor.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        errors = [line for line in lines if line.startswith("harness: error:")]
        return errors[-1].removeprefix("harness: error:").strip() if errors else "exit 2"

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        self.supervisor.stop()

    def inject(self, fault: dict[str, Any]) -> dict[str, Any]:
        """POST /admin/faults with the admin token; records a `fault_injected` event first
        (an OOM in kill mode may end the server before it answers)."""
        self.run_dir.event(
            EventKind.FAULT_INJECTED,
            fault=fault.get("fault"),
            pid=self.supervisor.pid,
            by="embedded",
            admin=fault,
        )
        answer = post_fault(self.url, self.admin_token, fault)
        if answer is not None:
            return answer
        if fault.get("fault") in _DEATH_FAULTS:
            return {"injected": fault.get("fault"), "answered": False}
        raise UserError(f"the reference server at {self.url} did not answer the fault {fault}")

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
