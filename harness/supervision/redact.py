"""Keep secrets out of run directories: one place that says what looks secret and masks it.

A flag or variable whose name contains token, key, secret, password or credential is secret
(`--api-key K`, `--admin-token=T`, `HF_TOKEN=x` after `env`); its value becomes `***`. Every place
that records a command line (target.json, manifest.json, events.jsonl, target.log) uses this.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MASK = "***"
_SECRET_NAME = re.compile(r"token|key|secret|passw|credential", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")


def is_secret_name(name: str) -> bool:
    """Does a flag or environment variable name look like it holds a secret?"""
    return _SECRET_NAME.search(name.lstrip("-")) is not None


def redact_command(argv: Sequence[str]) -> list[str]:
    """argv with secret values masked: `--api-key K`, `--api-key=K`, `NAME_TOKEN=K`."""
    shown: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            mask_next = False
            if not arg.startswith("--"):
                shown.append(MASK)
                continue
        if arg.startswith("-") and arg != "--":
            flag, equals, _ = arg.partition("=")
            if is_secret_name(flag):
                if equals:
                    shown.append(f"{flag}={MASK}")
                    continue
                mask_next = True
        else:
            assignment = _ASSIGNMENT.match(arg)
            if assignment and is_secret_name(assignment.group(1)):
                shown.append(f"{assignment.group(1)}={MASK}")
                continue
        shown.append(arg)
    return shown


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of an environment with the values of secret-looking variables masked."""
    return {name: MASK if is_secret_name(name) else value for name, value in env.items()}
