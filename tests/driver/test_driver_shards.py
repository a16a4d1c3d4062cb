"""Driver processes sharing a run: each its own checkpoint, one verification over them all,
exactly once through a SIGKILL of one process, and resumes with another process count."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from harness.driver import payloads
from harness.driver.checkpoint import Checkpoint, completed_ids, read_ids, results_paths, verify
from harness.driver.client import ClientDriver, DriverConfig
from harness.driver.dataset import generated
from harness.driver.payloads import Share, iter_payloads, pending, request_end, shard_of
from harness.driver.shards import ShardFailed, ShardPlan, ShardPool, driver_processes
from harness.errors import UserError
from harness.rundir import RunDir, read_jsonl

N = 2000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generated(N, 3, tmp_path_factory.mktemp("datasets"))[0].path


@pytest.fixture
def slow_server(make_server):
    """Answers after a few milliseconds, so a run lasts long enough to be killed midway."""

    def route(path: str, body: bytes):
        if not path.startswith("/health"):
            time.sleep(0.004)
        return 200, {}, make_server.completion()

    return make_server(route)


def _pool(run_dir: Path, dataset: Path, url: str, shards: int, counted: list[int]) -> ShardPool:
    plan = ShardPlan(
        run_dir=str(run_dir),
        dataset=str(dataset),
        n=N,
        shards=shards,
        driver={"url": url, "concurrency": 8, "health_url": url + "/health"},
        window_s=0.1,
    )
    return ShardPool(plan, on_done=counted.append, event=RunDir(run_dir).event)


def _ids(dataset: Path) -> list[str]:
    return [custom_id for custom_id, _ in iter_payloads(dataset)]


def _lines(run_dir: Path) -> int:
    return sum(1 for path in results_paths(run_dir) for _ in read_ids(path))


def test_shares_split_the_requests_exactly_reading_only_their_own_blocks(dataset, monkeypatch):
    monkeypatch.setattr(payloads, "BLOCK", 64 * 1024)  # many blocks of a small file
    ids = _ids(dataset)
    parts = [[c for c, _ in iter_payloads(dataset, share=Share(k, 3))] for k in range(3)]
    assert sorted(c for part in parts for c in part) == sorted(ids)
    assert all(len(part) > N // 5 for part in parts)
    end = request_end(dataset, 100)
    limited = [c for k in range(3) for c, _ in iter_payloads(dataset, share=Share(k, 3, end))]
    assert sorted(limited) == sorted(ids[:100])  # the first 100, whoever reads them


def test_request_end_skips_blank_lines_and_stops_at_the_file_end(dataset, tmp_path):
    lines = dataset.read_bytes().splitlines(keepends=True)[:6]
    spaced = tmp_path / "spaced.jsonl"
    spaced.write_bytes(b"\n".join(lines[:3]) + b"\r\n  \n" + b"".join(lines[3:]).rstrip(b"\n"))
    after_three = len(b"\n".join(lines[:3]) + b"\r\n  \n")
    assert request_end(spaced, 3) == len(b"\n".join(lines[:3]))
    assert request_end(spaced, 4) == after_three + len(lines[3])
    assert request_end(spaced, 99) == spaced.stat().st_size  # fewer requests than asked


def test_a_gzipped_dataset_is_split_by_custom_id(dataset, tmp_path):
    packed = tmp_path / "batch.jsonl.gz"
    packed.write_bytes(gzip.compress(dataset.read_bytes()))
    parts = [[c for c, _ in iter_payloads(packed, limit=500, share=Share(k, 2))] for k in (0, 1)]
    assert sorted(parts[0] + parts[1]) == sorted(_ids(dataset)[:500])
    assert all(shard_of(c, 2) == k for k, part in enumerate(parts) for c in part)
    assert request_end(packed, 500) is None


def test_a_sigkilled_process_loses_nothing_written_and_a_resume_with_three_finishes(
    tmp_path, dataset, slow_server
):
    counted: list[int] = []
    pool = _pool(tmp_path, dataset, slow_server.url, 2, counted)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            asyncio.run(pool.run())
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    second = tmp_path / "results-1.jsonl"
    deadline = time.monotonic() + 60
    while not (second.exists() and second.stat().st_size > 100_000):
        assert time.monotonic() < deadline and thread.is_alive(), "no results from process 1"
        time.sleep(0.01)
    os.kill(pool.pids[1], signal.SIGKILL)
    thread.join(60)
    [error] = outcome
    assert isinstance(error, ShardFailed) and "driver process 1 died (killed by SIGKILL)" in str(
        error
    )
    # counted only what was written; process 0 finished its share; nothing is there twice
    assert sum(counted) <= _lines(tmp_path) < N
    first = verify(_ids(dataset), results_paths(tmp_path))
    assert first["duplicated"] == first["corrupt"] == 0 and first["lost"] > 0
    assert {c for c, _ in read_ids(tmp_path / "results.jsonl")} == {
        c for c, _ in iter_payloads(dataset, share=Share(0, 2))
    }
    # the shared logs hold whole lines only: a torn tail is cut before the next append
    attempts = (tmp_path / "requests.jsonl").read_bytes().splitlines()
    assert all(orjson.loads(line) for line in attempts[:-1])
    died = [e for e in read_jsonl(tmp_path / "events.jsonl") if e["kind"] == "driver_process_died"]
    assert [(e["process"], e["exit"]) for e in died] == [(1, -signal.SIGKILL)]

    before = _lines(tmp_path)
    counted.clear()
    stats = asyncio.run(_pool(tmp_path, dataset, slow_server.url, 3, counted).run())
    assert stats.ok == sum(counted) == N - before  # only what was missing was sent
    assert [p.name for p in results_paths(tmp_path)] == [
        "results.jsonl",
        "results-1.jsonl",
        "results-2.jsonl",
    ]
    final = verify(_ids(dataset), results_paths(tmp_path))
    assert (final["received"], final["lost"], final["duplicated"], final["corrupt"]) == (N, 0, 0, 0)


def test_a_single_process_run_resumed_by_two_and_then_by_one(tmp_path, dataset, tiny_server):
    run_dir, checkpoint = RunDir(tmp_path), Checkpoint(tmp_path)
    config = DriverConfig(url=tiny_server.url, concurrency=4, health_url=tiny_server.url)
    half = list(pending(dataset, N))[: N // 2]
    asyncio.run(ClientDriver(config, run_dir, checkpoint).run(half))
    checkpoint.close()
    # two processes finish it, each sending only its missing share
    counted: list[int] = []
    stats = asyncio.run(_pool(tmp_path, dataset, tiny_server.url, 2, counted).run())
    assert stats.ok == sum(counted) == N - N // 2 and len(completed_ids(tmp_path)) == N
    ids = Counter(c for path in results_paths(tmp_path) for c, _ in read_ids(path))
    assert len(ids) == N and set(ids.values()) == {1}
    # and a resume of a finished run sends nothing
    assert asyncio.run(_pool(tmp_path, dataset, tiny_server.url, 1, []).run()).done == 0


def test_processes_is_a_count_or_auto():
    assert driver_processes("3") == 3
    assert 1 <= driver_processes("auto") <= 8
    with pytest.raises(UserError, match="--processes must be 1 or more"):
        driver_processes("0")
    with pytest.raises(UserError, match="give a number of processes or auto"):
        driver_processes("many")


def test_a_process_reports_coarsely_unless_asked_and_a_recovery_at_once(monkeypatch):
    from harness.driver import shards

    sent: list[dict] = []
    monkeypatch.setattr(shards._Reporter, "send", staticmethod(sent.append))

    async def main() -> list[int]:
        reporter = shards._Reporter()
        counts = []
        for _ in range(100):  # a burst of results: one message, after the interval
            reporter.attempt(True, time.time())
            reporter.result("id", True)
        counts.append(len(sent))
        await asyncio.sleep(shards.REPORT_INTERVAL_S * 2)
        counts.append(len(sent))
        reporter.attempt(False, time.time())
        reporter.attempt(True, time.time())  # the target serves again: sent now
        counts.append(len(sent))
        reporter.precise(True)
        reporter.result("id", True)
        await asyncio.sleep(shards.FLUSH_INTERVAL_S * 4)
        counts.append(len(sent))
        return counts

    assert asyncio.run(main()) == [0, 1, 2, 3]
    assert sent[0]["done"] == 100 and sent[1]["fail_t"] and sent[1]["ok_t"]
    assert shards.REPORT_INTERVAL_S > shards.FLUSH_INTERVAL_S


def test_progress_asks_for_precision_only_near_an_oom_point(tmp_path):
    import io

    from harness.scale.console import Console
    from harness.scale.progress import Progress
    from harness.scale.target import TargetHandle

    progress = Progress(1000, 0, RunDir(tmp_path), Console(io.StringIO()))
    asked: list[bool] = []
    progress.precise = asked.append
    progress.plan_ooms((0.5,), TargetHandle(url="http://127.0.0.1:9", health_url=None))
    progress._started -= 1000  # a slow run so far: the margin is 1% of it, 10 results
    progress.advance(400)
    assert asked == []
    progress.advance(95)  # 5 from the point
    assert asked == [True]
    progress.advance(10)  # past it, and no other point: coarse again
    assert asked == [True, False]


def test_a_line_a_process_cannot_send_stops_the_run_with_a_dataset_error(tmp_path, tiny_server):
    """A file changed under a run (`harness scale` reads every line before it begins): the
    process stops with the line's number, what it wrote is whole, and the pool says so."""
    from generators import DatasetError

    lines = generated(40, 5, tmp_path / "datasets")[0].path.read_bytes().splitlines(True)
    lines[30] = lines[30][:120] + b"\n"  # cut short: no body to slice
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join(lines))
    run_dir = tmp_path / "run"
    plan = ShardPlan(
        run_dir=str(run_dir),
        dataset=str(broken),
        n=40,
        shards=2,
        driver={"url": tiny_server.url, "concurrency": 2, "health_url": tiny_server.url},
    )
    with pytest.raises(DatasetError, match=r"byte [0-9]+: not an OpenAI Batch request"):
        asyncio.run(ShardPool(plan).run())
    sent = verify([c for c, _ in iter_payloads(broken, limit=30)], results_paths(run_dir))
    assert sent["corrupt"] == sent["duplicated"] == 0 and sent["unexpected"] == 0
