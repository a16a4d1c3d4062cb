"""The batch driver: every request of a dataset through a server, exactly once, surviving OOMs.

    config = DriverConfig(url="http://127.0.0.1:8000", concurrency=64)
    driver = ClientDriver(config, run_dir, Checkpoint(run_dir.path))
    stats = run_loop(driver.run(iter_payloads(path)))

`ClientDriver` sends requests itself (bounded, adaptive concurrency, its own lean HTTP/1.1
client); `BatchApiDriver` uploads them to /v1/batches. Both checkpoint each result to
results.jsonl as it arrives, so a resumed run sends only what is missing; `verify` checks that
every custom_id has exactly one result. `ShardPool` runs the client driver in N processes.

Names are imported on first use, so a driver process (shards.py) starts without loading what
it does not run (the Batch API driver, the dataset generators).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BatchApiDriver": "batch_api",
    "BatchConfig": "batch_api",
    "Checkpoint": "checkpoint",
    "IdSet": "checkpoint",
    "verify": "checkpoint",
    "ClientDriver": "client",
    "DriverConfig": "client",
    "DriverStats": "client",
    "TargetRejected": "client",
    "Degrader": "degrade",
    "Failure": "errors",
    "classify_exception": "errors",
    "classify_response": "errors",
    "run_loop": "loop",
    "LoopMonitor": "monitor",
    "iter_payloads": "payloads",
    "pending": "payloads",
    "Readiness": "ready",
    "TargetUnavailable": "ready",
    "ShardPlan": "shards",
    "ShardPool": "shards",
}
__all__ = [
    "BatchApiDriver",
    "BatchConfig",
    "Checkpoint",
    "ClientDriver",
    "Degrader",
    "DriverConfig",
    "DriverStats",
    "Failure",
    "IdSet",
    "LoopMonitor",
    "Readiness",
    "ShardPlan",
    "ShardPool",
    "TargetRejected",
    "TargetUnavailable",
    "classify_exception",
    "classify_response",
    "iter_payloads",
    "pending",
    "run_loop",
    "verify",
]

if TYPE_CHECKING:
    from harness.driver.batch_api import BatchApiDriver, BatchConfig
    from harness.driver.checkpoint import Checkpoint, IdSet, verify
    from harness.driver.client import ClientDriver, DriverConfig, DriverStats, TargetRejected
    from harness.driver.degrade import Degrader
    from harness.driver.errors import Failure, classify_exception, classify_response
    from harness.driver.loop import run as run_loop
    from harness.driver.monitor import LoopMonitor
    from harness.driver.payloads import iter_payloads, pending
    from harness.driver.ready import Readiness, TargetUnavailable
    from harness.driver.shards import ShardPlan, ShardPool


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    attribute = "run" if name == "run_loop" else name
    value = getattr(importlib.import_module(f"harness.driver.{module}"), attribute)
    globals()[name] = value
    return value
