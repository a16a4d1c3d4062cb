"""Ending a test from inside it: the target rejects every request, or the trace is over.

A worker cannot stop the run itself, so it asks the master with a message; the master (or a
local runner) quits a headless run, and stops the test of a web UI session, which stays up.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

logger = logging.getLogger(__name__)

_STOP = "harness_stop"
_DRAINED = "harness_schedule_drained"
_STATE = "harness_stopping"


def register(environment: Environment) -> None:
    """At init: the master listens for its workers' stop requests and finished schedules."""
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(_STOP, lambda msg, **_: _stop_here(environment, **msg.data))
        runner.register_message(_DRAINED, lambda msg, **_: _drained(environment, msg.node_id))


def reset(environment: Environment) -> None:
    """At each test start: nothing asked to stop yet, no worker's schedule is over."""
    setattr(environment, _STATE, {"stopping": False, "drained": set()})


def stop_run(environment: Environment, reason: str, *, error: bool = True) -> None:
    """End the test, logging reason once (an error: exit code 2)."""
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message(_STOP, {"reason": reason, "error": error})
        return
    _stop_here(environment, reason, error)


def schedule_drained(environment: Environment, sent: int) -> None:
    """This process sent its last scheduled arrival and every answer is in."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(_DRAINED, sent)
        return
    _stop_here(environment, f"The trace is over: {sent} arrivals sent", error=False)


def _drained(environment: Environment, worker: str) -> None:
    state = _state(environment)
    state["drained"].add(worker)
    if len(state["drained"]) >= environment.runner.worker_count:
        _stop_here(environment, "The trace is over on every worker", error=False)


def _stop_here(environment: Environment, reason: str, error: bool) -> None:
    state = _state(environment)
    if state["stopping"]:
        return
    state["stopping"] = True
    runner = environment.runner
    if error:
        logger.error(f"Stopping: {reason}")
        environment.process_exit_code = 2
    else:
        logger.info(reason)
    options = environment.parsed_options
    headless = options is None or options.headless
    gevent.spawn(runner.quit if headless else runner.stop)  # not from the greenlet it kills


def _state(environment: Environment) -> dict[str, Any]:
    if not hasattr(environment, _STATE):
        reset(environment)
    return getattr(environment, _STATE)
