"""Fixtures: a run directory per test, and supervisors that are always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.rundir import RunDir
from harness.supervision.supervisor import Supervisor


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[RunDir]:
    directory = RunDir(tmp_path / "run")
    yield directory
    directory.close()


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    """Supervisors appended here are stopped at teardown, whatever the test did."""
    started: list[Supervisor] = []
    yield started
    for supervisor in started:
        supervisor.stop(timeout=2.0)
