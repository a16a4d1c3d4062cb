"""A full disk while results are appended: every write is whole or an error, and resume finishes.

The file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) makes write() return short and then fail
with EFBIG, exactly as a nearly full disk does with ENOSPC, without needing a small filesystem.
"""

from __future__ import annotations

import subprocess
import sys

from harness.driver.checkpoint import Checkpoint, read_ids, verify

_APPEND_UNDER_LIMIT = """
import resource, signal, sys
from harness.driver.checkpoint import Checkpoint
from harness.rundir import WriteFailed
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
run_dir, limit, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
checkpoint = Checkpoint(run_dir)
done = checkpoint.completed()
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
for i in range(start, 40):
    if f"cand-{i}" in done:
        continue
    try:
        checkpoint.append(f"cand-{i}", status=200, body={"text": "y" * (37 + i)}, request_id=str(i))
    except WriteFailed as exc:
        print(exc)
        sys.exit(3)
"""


def _append_under_limit(run_dir, limit: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _APPEND_UNDER_LIMIT, str(run_dir), str(limit), "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_twenty_disk_full_stops_then_resume_lose_nothing_and_count_nothing_corrupt(tmp_path):
    limit = 700  # a few lines fit, then a line is cut short
    stops = 0
    for _ in range(20):
        done = _append_under_limit(tmp_path, limit)
        assert done.returncode in (0, 3), done.stderr
        if done.returncode == 3:
            stops += 1
            assert "cannot append to" in done.stdout and "Traceback" not in done.stderr
            assert (tmp_path / "results.jsonl").read_bytes().endswith(b"\n")  # no partial line
        limit += 300  # the disk gets some space back before each resume
    assert stops == 20
    final = _append_under_limit(tmp_path, 1 << 30)
    assert final.returncode == 0, final.stderr
    report = verify([f"cand-{i}" for i in range(40)], tmp_path / "results.jsonl")
    assert (report["lost"], report["duplicated"], report["corrupt"]) == (0, 0, 0)
    assert [i for i, _ in read_ids(tmp_path / "results.jsonl")] == [f"cand-{i}" for i in range(40)]


def test_checkpoint_reports_the_torn_bytes_it_repaired(tmp_path):
    (tmp_path / "results.jsonl").write_bytes(b'{"custom_id":"a","ok":true}\n{"custom_id":"b"')
    assert Checkpoint(tmp_path).torn_bytes == len(b'{"custom_id":"b"')


_DRIVE_UNDER_LIMIT = """
import asyncio, resource, signal, sys
from harness.driver.checkpoint import Checkpoint
from harness.driver.client import ClientDriver, DriverConfig
from harness.rundir import RunDir, WriteFailed
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
run_dir, url, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
checkpoint = Checkpoint(run_dir)
done = checkpoint.completed()
directory = RunDir(run_dir)
directory.writer("requests.jsonl")  # opened before the limit, as a run's logs are
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
requests = ((f"r{i}", b'{"n":%d}' % i) for i in range(300) if f"r{i}" not in done)
driver = ClientDriver(DriverConfig(url=url, concurrency=8, health_url=url), directory, checkpoint)
try:
    stats = asyncio.run(driver.run(requests))
except WriteFailed as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_full_disk_stops_the_driver_and_a_resume_sends_only_what_is_missing(
    tmp_path, tiny_server
):
    limits = [20_000, 45_000, 1 << 30]  # results.jsonl or requests.jsonl fills up, twice
    codes = []
    for limit in limits:
        done = subprocess.run(
            [sys.executable, "-c", _DRIVE_UNDER_LIMIT, str(tmp_path), tiny_server.url, str(limit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        codes.append(done.returncode)
        assert "Traceback" not in done.stderr, done.stderr
        for name in ("results.jsonl", "requests.jsonl"):
            data = (tmp_path / name).read_bytes()
            assert data.endswith(b"\n") or not data  # whole lines only (or none yet)
    assert codes == [3, 3, 0]
    report = verify([f"r{i}" for i in range(300)], tmp_path / "results.jsonl")
    assert (report["lost"], report["duplicated"], report["corrupt"]) == (0, 0, 0)
