"""Supervision: the target as a process group, its exits, its memory, and faults against it.

`supervisor` restarts and times, `exits` classifies, `proctree`/`procfs`/`cgroup` read memory,
`samplers/` write samples.jsonl, `chaos` injects faults, `embedded` runs the reference server.
"""

from harness.supervision.redact import redact_command, redact_env
from harness.supervision.victim import parse_victim, pick_victim

__all__ = ["parse_victim", "pick_victim", "redact_command", "redact_env"]
