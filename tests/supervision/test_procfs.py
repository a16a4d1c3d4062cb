"""PinnedFile: kept open, re-read; a failed open raises once and leaves nothing to complain."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from harness.supervision.procfs import PinnedFile


def test_a_failed_open_raises_and_its_del_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(FileNotFoundError):
        PinnedFile(str(tmp_path / "exited-process-statm"))
    gc.collect()
    assert unraisable == []  # was: AttributeError: 'PinnedFile' object has no attribute '_fd'


def test_reads_current_content_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    pinned = PinnedFile(str(path))
    assert pinned.read() == b"one"
    path.write_bytes(b"two")
    assert pinned.read() == b"two"
    pinned.close()
    with pytest.raises(OSError, match="closed"):
        pinned.read()
