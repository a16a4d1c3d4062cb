"""`harness gen` and `harness validate` as a user runs them: real processes, real files."""

from __future__ import annotations

import hashlib
import resource
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import orjson
import pytest

import generators
from harness.cli import main


def harness(*args: str, cwd: Path, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec_fn,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_gen_then_validate(tmp_path: Path) -> None:
    result = harness("gen", "--n", "2500", "--workers", "2", "--seed", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "runs" / "datasets" / "candidates-batch-2500.json"
    assert not list(tmp_path.glob("*.json"))  # nothing dropped into the current directory
    assert str(Path("runs") / "datasets" / path.name) in result.stdout
    assert "2,500 candidates" in result.stdout
    assert hashlib.sha256(path.read_bytes()).hexdigest()[:16] in result.stdout
    checked = harness("validate", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    assert "2,500 records" in checked.stdout and "valid" in checked.stdout


def test_validate_fails_on_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    record = generators.candidate(0)
    del record["contact"]
    path.write_bytes(orjson.dumps(record) + b"\n")
    result = harness("validate", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "'contact' is a required property" in result.stdout
    missing = harness("validate", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert_one_line_error(missing, "nope.json")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--n", "0"), ("positive",)),
        (("--n", "-5"), ("positive",)),
        (("--n", "10", "--format", "yaml"), ("unknown format", "openai-batch")),
        (("--n", "10", "--locale", "xx_XX"), ("unknown locale", "en_US")),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: tuple[str, ...], fragments) -> None:
    assert_one_line_error(harness("gen", *args, cwd=tmp_path), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = harness("gen", "--n", "10", "--out", str(blocker / "batch.json"), cwd=tmp_path)
    assert_one_line_error(result, "cannot write")


def _limit_file_size() -> None:
    # what a full disk looks like to the writer: writes past 1 MB fail
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_full_disk_leaves_no_partial_file(tmp_path: Path) -> None:
    result = harness("gen", "--n", "2000", cwd=tmp_path, preexec_fn=_limit_file_size)
    assert_one_line_error(result, "cannot write", "candidates-batch-2000.json")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_preset_with_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(generators.PRESETS, "production", (10, 100, 1000))
    out = tmp_path / "data"
    assert main(["gen", "--preset", "production", "--out", str(out), "--archive"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "candidates-batch-10.json",
        "candidates-batch-100.json",
        "candidates-batch-1000.json",
        generators.ARCHIVE_NAME,
    ]
    with tarfile.open(out / generators.ARCHIVE_NAME) as tar:
        assert tar.getnames()[0] == "manifest.json"
        manifest = orjson.loads(tar.extractfile("manifest.json").read())
        for entry in manifest["files"]:
            data = tar.extractfile(entry["name"]).read()
            assert len(data) == entry["bytes"]
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert manifest["total_candidates"] == 1110
    assert manifest["schema_version"] == generators.SCHEMA_VERSION
    assert manifest["generator_version"] == generators.GENERATOR_VERSION
    assert "inference-test-data-complete.tar.gz" in capsys.readouterr().out


def test_counts_accept_suffixes(tmp_path: Path) -> None:
    result = harness("gen", "--n", "1.5k", "--format", "jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs" / "datasets"
    lines = (out / "candidates-batch-1500.jsonl").read_bytes().splitlines()
    assert len(lines) == 1500
    assert (out / "candidates-batch-1500.meta.json").exists()
