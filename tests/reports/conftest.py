"""Fixture run directories for the reporter's tests (see synthetic_run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_run import SyntheticRun, write_synthetic_run

from reports import write_report
from reports.report import ReportFiles


@pytest.fixture(scope="session")
def reported_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticRun, ReportFiles]:
    """A 10-minute run with a RAM leak, two injected OOM kills, a one-sample RAM spike and a busy
    load generator, reported once for the whole session (rendering PNGs is the slow part)."""
    path = tmp_path_factory.mktemp("reported") / "run-leaky"
    run = write_synthetic_run(
        path,
        leak_mb_per_h=300,
        kills_at=(0.3, 0.6),
        spike_at=0.8,
        load_cpu_percent=95,
        verification={"expected": 3000, "received": 2998, "lost": 2, "duplicated": 1},
    )
    return run, write_report(path)


@pytest.fixture
def make_run(tmp_path: Path):
    """Write a synthetic run under tmp_path: make_run("name", **options) -> SyntheticRun."""

    def make(name: str = "run", **options) -> SyntheticRun:
        return write_synthetic_run(tmp_path / name, **options)

    return make
