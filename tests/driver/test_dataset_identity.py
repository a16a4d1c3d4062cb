"""A user's dataset is hashed while the run sends, not before its first request, and a resume
still only finishes a run against the same bytes: by the sha256 once recorded, by the
fingerprint (size, mtime, sampled blocks) when the run stopped before the hash was done."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import orjson
import pytest

import generators
from harness.driver.dataset import fingerprint, from_file, sha256_file
from harness.driver.payloads import dataset_ids
from harness.errors import UserError
from harness.scale import ScaleConfig, resume_scale, run_scale


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> Path:
    """A batch document of 300 candidates (one line of about 2.4 MB)."""
    path = tmp_path_factory.mktemp("data") / "candidates-batch-300.json"
    generators.write_dataset(path, 300, fmt="json", seed=3)
    return path


def _run(tmp_path: Path, dataset: Path, **settings) -> Path:
    config = ScaleConfig(
        n=settings.pop("n", 120),
        dataset=str(dataset),
        run_dir=str(tmp_path / "run"),
        report=False,
        sample_interval=0.2,
        **settings,
    )
    outcome = run_scale(config, out=io.StringIO())
    assert outcome.ok
    return outcome.run_dir


def _manifest(run_dir: Path) -> dict:
    return orjson.loads((run_dir / "manifest.json").read_bytes())


def _forget_sha256(run_dir: Path) -> None:
    """What a run killed before its hash was done leaves: the fingerprint, no sha256."""
    manifest = _manifest(run_dir)
    manifest["dataset"]["sha256"] = None
    (run_dir / "manifest.json").write_bytes(orjson.dumps(manifest))


def test_the_sha256_is_taken_off_the_path_and_recorded_while_sending(
    tmp_path: Path, document: Path
):
    opened = from_file(document, limit=120, hashed=False)  # what scale reads before sending
    assert opened.sha256 is None and opened.n == 120
    assert opened.fingerprint == fingerprint(document)
    run_dir = _run(tmp_path, document)
    recorded = _manifest(run_dir)["dataset"]
    assert recorded["sha256"] == sha256_file(document) and recorded["n"] == 120
    fields = {k: recorded[k] for k in ("bytes", "mtime_ns", "sampled_sha256")}
    assert fields == fingerprint(document)


def test_a_resume_without_a_recorded_sha256_checks_the_fingerprint(tmp_path: Path, document: Path):
    copy = tmp_path / "copy.json"
    copy.write_bytes(document.read_bytes())
    run_dir = _run(tmp_path, copy)
    _forget_sha256(run_dir)
    out = io.StringIO()
    outcome = resume_scale(run_dir, report=False, out=out)
    assert outcome.ok and "checked its size, mtime and sampled blocks" in out.getvalue()
    assert _manifest(run_dir)["dataset"]["sha256"] == sha256_file(copy)  # hashed this time

    _forget_sha256(run_dir)
    stat = copy.stat()
    data = bytearray(copy.read_bytes())
    data[-100] = ord(" ") if data[-100] != ord(" ") else ord("\t")  # the last sampled block
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    with pytest.raises(UserError, match="size, mtime or sampled content differ"):
        resume_scale(run_dir, report=False, out=io.StringIO())


def test_a_resume_with_a_recorded_sha256_refuses_changed_bytes(tmp_path: Path, document: Path):
    copy = tmp_path / "copy.json"
    copy.write_bytes(document.read_bytes())
    run_dir = _run(tmp_path, copy)
    data = bytearray(copy.read_bytes())
    middle = len(data) // 2 + 12_345  # between sampled blocks: only the full hash sees it
    data[middle] = ord("x") if data[middle] != ord("x") else ord("y")
    copy.write_bytes(bytes(data))
    with pytest.raises(UserError, match="changed since the run started"):
        resume_scale(run_dir, report=False, out=io.StringIO())
    copy.unlink()
    with pytest.raises(UserError, match="is gone"):
        resume_scale(run_dir, report=False, out=io.StringIO())


def test_the_ids_of_a_one_line_document_are_read_in_flat_memory(document: Path):
    tracemalloc.start()
    try:
        first = next(dataset_ids(document))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.startswith("cand-")
    assert peak < document.stat().st_size / 4  # not the whole line (it was, before: 2.8 GB at 170K)
