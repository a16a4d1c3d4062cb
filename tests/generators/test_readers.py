"""Streaming readers: every input shape, hostile inputs as one-line errors, memory flat in N."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import orjson
import pytest

import generators
from harness.rundir import write_json_atomic


@pytest.fixture(scope="module")
def compact(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("readers") / "batch.json"
    generators.write_dataset(path, 300, workers=1)
    return path


def _gzip(path: Path, out: Path) -> Path:
    out.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    return out


def _ids(path: Path) -> list[str]:
    return [custom_id for custom_id, _ in generators.iter_requests(path)]


def test_compact_pretty_reordered_gzip_and_archive_read_alike(tmp_path: Path, compact: Path):
    document = orjson.loads(compact.read_bytes())
    expected = [c["id"] for c in document["candidates"]]
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(document, indent=2))
    reordered = tmp_path / "reordered.json"  # candidates first, the header after them
    header = {k: v for k, v in document.items() if k != "candidates"}
    reordered.write_bytes(orjson.dumps({"candidates": document["candidates"], **header}))
    array = tmp_path / "array.json"
    array.write_bytes(orjson.dumps(document["candidates"]))
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + compact.read_bytes())
    gz = _gzip(compact, tmp_path / "batch.json.gz")
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(compact, arcname="candidates-batch-300.json")
    member = f"{archive}:candidates-batch-300.json"
    for path in (compact, pretty, reordered, bom, gz, member):
        assert generators.detect_format(path) == "json", path
        assert _ids(Path(path)) == expected, path
        assert generators.read_header(path)["job"] == document["job"], path
    assert generators.detect_format(array) == "json-array"
    assert [c["id"] for c in generators.read_candidates(array)] == expected
    report = generators.validate_file(member)
    assert report.ok and report.count == 300


@pytest.mark.parametrize("fmt", ["jsonl", "openai-batch"])
def test_line_formats_gzipped(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / generators.default_filename(50, fmt)
    generators.write_dataset(path, 50, fmt=fmt)
    gz = _gzip(path, tmp_path / (path.name + ".gz"))
    assert generators.detect_format(gz) == fmt
    assert _ids(gz) == _ids(path)
    assert generators.validate_file(gz).ok


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "is empty"),
        (b"\xef\xbb\xbf  \n", "is empty"),
        (b'{"schema_version": "1.0", "candidates": [{"id": "a"', "truncated or not valid JSON"),
        (b"hello world", "does not start with a JSON object or array"),
        (b"\x1f\x8b\x08\x00garbage-not-deflate", "corrupt or truncated gzip"),
    ],
)
def test_hostile_inputs_give_one_line_errors(tmp_path: Path, content: bytes, fragment: str):
    path = tmp_path / "hostile.json"
    path.write_bytes(content)
    with pytest.raises(generators.DatasetError) as caught:
        generators.validate_file(path)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_schema_errors_of_any_json_type_are_reported_not_raised(tmp_path: Path) -> None:
    """An id that is an object, a list or a number is a schema error in the report (validate
    hashes ids to find duplicates: it must not fail on one it cannot hash)."""
    lines = [
        {"custom_id": {"a": 1}, "method": "POST", "url": "/v1/chat/completions", "body": {}},
        {"custom_id": [1], "method": "POST", "url": "/v1/chat/completions", "body": {}},
        {"custom_id": [1], "method": "POST", "url": "/v1/chat/completions", "body": {}},
    ]
    path = tmp_path / "odd-ids.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    report = generators.validate_file(path)
    assert report.count == 3 and report.error_count == 3 and report.duplicate_ids == 1


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("job", {"title": "x"}, "job does not match the schema"),
        ("job", 7, "job does not match the schema (itself"),
        ("model", {"name": 3}, "model does not match the schema (name"),
    ],
)
def test_a_header_the_prompts_cannot_be_built_from_is_one_line(
    tmp_path: Path, compact: Path, key: str, value: object, fragment: str
) -> None:
    document = orjson.loads(compact.read_bytes())
    document[key] = value
    path = tmp_path / "odd-header.json"
    path.write_bytes(orjson.dumps(document))
    with pytest.raises(generators.DatasetError) as caught:
        next(generators.iter_requests(path))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("body", [[], {"messages": 5}, {"messages": [1, "x"]}])
def test_a_document_request_of_another_shape_reads_as_an_empty_candidate(
    tmp_path: Path, body: object
) -> None:
    """A batch document whose candidates are requests whose body has no user message (of any
    shape): read as an empty candidate, as one with no messages is, not a crash."""
    path = tmp_path / "odd-body.json"
    path.write_bytes(orjson.dumps({"candidates": [{"custom_id": "a", "body": body}]}))
    assert list(generators.read_candidates(path)) == [{}]


def test_a_job_without_remote_policy_builds_its_prompt(tmp_path: Path, compact: Path) -> None:
    """remote_policy is optional in the schema: a valid job without it still makes requests."""
    document = orjson.loads(compact.read_bytes())
    del document["job"]["location"]["remote_policy"]
    path = tmp_path / "onsite-unsaid.json"
    path.write_bytes(orjson.dumps(document))
    assert generators.validator("job").is_valid(document["job"])
    _, body = next(generators.iter_requests(path))
    city, country = document["job"]["location"]["city"], document["job"]["location"]["country"]
    assert f"({city}, {country})" in body["messages"][0]["content"]


def test_truncated_gzip_is_named(tmp_path: Path, compact: Path) -> None:
    whole = gzip.compress(compact.read_bytes())
    path = tmp_path / "torn.json.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(generators.DatasetError, match="corrupt or truncated gzip"):
        list(generators.iter_requests(path))


def test_detection_reads_a_bounded_prefix(tmp_path: Path, compact: Path) -> None:
    """A one-line document is detected from its prefix: a torn tail does not matter yet."""
    path = tmp_path / "torn.json"
    data = compact.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert generators.detect_format(path) == "json"


def test_missing_archive_member_lists_the_members(tmp_path: Path, compact: Path) -> None:
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(compact, arcname="candidates-batch-300.json")
    with pytest.raises(generators.DatasetError, match=r"candidates-batch-300\.json"):
        generators.detect_format(f"{archive}:nope.json")


# VmHWM, not ru_maxrss: Linux carries the parent's (this test process's) RSS into a child's
# ru_maxrss across exec, so it would measure pytest's growth, not validate's
_PEAK = """
import re, sys
import generators
report = generators.validate_file(sys.argv[1])
assert report.ok, report.errors
status = open("/proc/self/status").read()
print(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
"""


def _peak_kb(path: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


def test_validate_memory_is_flat_in_n(tmp_path: Path) -> None:
    """8x the records (~3 MB vs ~24 MB of JSON, gzipped too) costs at most a few MB more."""
    peaks = []
    for n in (400, 3200):
        path = tmp_path / f"b{n}.json"
        generators.write_dataset(path, n, workers=2)
        peaks.append(_peak_kb(_gzip(path, tmp_path / f"b{n}.json.gz")))
        path.unlink()
    small, large = peaks
    assert large - small < 8 * 1024, peaks  # the file grew by ~21 MB


def test_atomic_files_get_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "report.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644
