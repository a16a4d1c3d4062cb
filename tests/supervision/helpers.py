"""Test helpers: small target programs, polling with deadlines, and run-directory readers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from harness.rundir import RunDir

PROGRAMS = Path(__file__).parent / "programs"
T = TypeVar("T")


def program(name: str, *args: object) -> list[str]:
    """Command line running one of tests/supervision/programs with this interpreter."""
    return [sys.executable, str(PROGRAMS / name), *map(str, args)]


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def events(run_dir: RunDir, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in run_dir.events() if kind is None or e["kind"] == kind]


def samples(run_dir: RunDir, source: str) -> list[dict[str, Any]]:
    return [s for s in run_dir.samples() if s["source"] == source]


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
