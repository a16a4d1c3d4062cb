"""`harness scale --processes N` end to end: real driver processes, real SIGKILLs of the server and
of a driver process, resumes with another count, and a client starved of CPU flagged as such."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import psutil
import pytest

from harness.driver.checkpoint import read_ids, results_paths
from harness.errors import UserError
from harness.net import free_port
from harness.rundir import EventKind, read_jsonl
from harness.scale import ScaleConfig, run_scale
from tests.starving import starve

HARNESS = [sys.executable, "-m", "harness"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("datasets"))


@pytest.fixture
def slow_server(tmp_path):
    """A reference server with a simulated delay (so runs last), outside scale's control."""
    port = free_port()
    server = subprocess.Popen(
        [*HARNESS, "serve", "--port", str(port), "--speed", "100", "--data-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_for(lambda: _ready(url), "the reference server")
    yield url
    server.send_signal(signal.SIGTERM)
    server.wait(10)


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == kind]


def _ids(run_dir: Path) -> Counter[str]:
    return Counter(c for path in results_paths(run_dir) for c, _ in read_ids(path))


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _scaled(tmp_path, cache_dir, **settings):
    """A `harness scale` run in this process, with the files and timings these tests share."""
    common = {"runs_root": str(tmp_path), "cache_dir": cache_dir, "report": False}
    common |= {"sample_interval": 0.2, "ready_timeout_s": 30.0}
    return run_scale(ScaleConfig(**common, **settings))


def test_two_processes_survive_two_oom_kills_with_every_result_once(tmp_path, cache_dir):
    outcome = _scaled(tmp_path, cache_dir, n=3000, processes=2, oom_at=(0.3, 0.7), concurrency=16)
    assert outcome.ok and outcome.oom_kills == 2
    assert outcome.verification["received"] == 3000 and outcome.verification["duplicated"] == 0
    run_dir = outcome.run_dir
    ids = _ids(run_dir)
    assert len(ids) == 3000 and set(ids.values()) == {1}
    assert [p.name for p in results_paths(run_dir)] == ["results.jsonl", "results-1.jsonl"]
    assert all(sum(1 for _ in read_ids(p)) > 500 for p in results_paths(run_dir))  # both worked
    # progress saw the whole run: both OOM points fired, at their points, and were recovered
    planned = _events(run_dir, EventKind.OOM_PLANNED)
    assert [e["point"] for e in planned] == [0.3, 0.7]
    assert all(abs(e["done"] / 3000 - e["point"]) < 0.05 for e in planned)
    assert len(_events(run_dir, EventKind.RECOVERED)) == 2
    assert _events(run_dir, EventKind.PROGRESS)[-1]["done"] == 3000
    # each process checked itself as a load generator
    verdicts = _events(run_dir, EventKind.LOAD_GENERATOR)
    assert len({v["pid"] for v in verdicts}) == len(verdicts) == 2
    load = [s for s in read_jsonl(run_dir / "samples.jsonl") if s["source"] == "load"]
    assert max(s.get("processes", 0) for s in load) == 2
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert manifest["outcome"]["processes"] == 2 and manifest["scale"]["processes"] == 2


def test_a_sigkilled_driver_process_stops_the_run_and_a_resume_with_three_finishes(
    tmp_path, cache_dir, slow_server
):
    run_dir = tmp_path / "run"
    common = ["--runs-root", str(tmp_path), "--cache-dir", cache_dir, "--no-report"]
    sizes = ["--n", "2000", "--processes", "2", "--concurrency", "16"]
    scale = subprocess.Popen(
        [*HARNESS, "scale", *sizes, "--target", slow_server, "--run-dir", str(run_dir), *common],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = run_dir / "results-1.jsonl"
    _wait_for(lambda: second.exists() and second.stat().st_size > 50_000, "process 1's results")
    [victim] = [
        child
        for child in psutil.Process(scale.pid).children()
        if "harness.driver.shards" in " ".join(child.cmdline())
        and orjson.loads(child.environ().get("HARNESS_DRIVER_SHARD", "{}")).get("shard") == 1
    ]
    victim.send_signal(signal.SIGKILL)
    _, stderr = scale.communicate(timeout=120)
    assert scale.returncode != 0
    assert "driver process 1 died (killed by SIGKILL)" in stderr and "--resume" in stderr
    before = _ids(run_dir)
    assert set(before.values()) == {1} and 0 < len(before) < 2000
    resumed = subprocess.run(
        [*HARNESS, "scale", "--resume", str(run_dir), "--processes", "3", "--no-report"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(before):,} of 2,000 already done" in resumed.stderr
    after = _ids(run_dir)
    assert len(after) == 2000 and set(after.values()) == {1}
    assert len(results_paths(run_dir)) == 3
    verification = _events(run_dir, EventKind.VERIFICATION)[-1]
    assert (verification["lost"], verification["duplicated"], verification["corrupt"]) == (0, 0, 0)
    died = _events(run_dir, EventKind.DRIVER_PROCESS_DIED)
    assert [(e["process"], e["exit"]) for e in died] == [(1, -signal.SIGKILL)]


def test_a_client_starved_of_cpu_is_flagged_in_the_summary_and_atop_the_report(
    tmp_path, cache_dir, slow_server
):
    run_dir = tmp_path / "starved"
    where = ["--run-dir", str(run_dir), "--runs-root", str(tmp_path), "--cache-dir", cache_dir]
    scale = subprocess.Popen(
        [*HARNESS, "scale", "--n", "1500", "--target", slow_server, "--concurrency", "8", *where],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = run_dir / "results.jsonl"
    _wait_for(lambda: results.exists() and results.stat().st_size > 20_000, "some results")
    starve(scale.pid)  # the driver's event loop (scale's main thread), for a few seconds
    _, stderr = scale.communicate(timeout=180)
    assert scale.returncode == 0, stderr[-3000:]
    assert "CLIENT SATURATED: the client could not keep up" in stderr
    [verdict] = _events(run_dir, EventKind.LOAD_GENERATOR)
    assert verdict["saturated"] and verdict["saturated_windows"] >= 2
    assert verdict["loop_lag_p99_s"] > verdict["lag_limit_s"]
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    load = summary["load_generator"]
    assert load["saturated"] and load["saturated_processes"] == 1
    assert summary["warnings"][0] == load["warning"]
    assert load["warning"].startswith("CLIENT SATURATED: the client could not keep up")
    html = (run_dir / "report.html").read_text()
    alert = html.index("<div class='alert' role='alert'>")
    assert alert < html.index("<h2>")  # above every section, not a footnote


def test_two_processes_share_one_rate_schedule(tmp_path, cache_dir):
    """--rate with --processes 2: each process sends at every other arrival of the one schedule,
    so together they keep the rate (each sending the whole schedule would double it)."""
    n, rate = 400, 200.0
    outcome = _scaled(
        tmp_path, cache_dir, n=n, processes=2, rate=rate, arrival="constant", concurrency=16
    )
    assert outcome.ok and outcome.verification["received"] == n
    run_dir = outcome.run_dir
    ids = _ids(run_dir)
    assert len(ids) == n and set(ids.values()) == {1}
    assert all(sum(1 for _ in read_ids(p)) > n // 4 for p in results_paths(run_dir))
    first = [r for r in read_jsonl(run_dir / "requests.jsonl") if r["attempt"] == 1]
    due = sorted(r["scheduled_t"] for r in first)
    # a send never leaves before its time, and the last arrival is due (n - 1) / rate after the
    # first: the two parts together take the whole schedule's time
    assert len(due) == n and due[-1] - due[0] >= 0.95 * (n - 1) / rate
    assert all(r["t"] >= r["scheduled_t"] - 1e-6 for r in first)
    verdicts = _events(run_dir, EventKind.SCHEDULE_KEPT) + _events(
        run_dir, EventKind.BEHIND_SCHEDULE
    )
    assert len({v["pid"] for v in verdicts}) == 2
    assert sum(v["arrivals"] for v in verdicts) == n


def test_an_open_loop_held_by_oom_kills_is_behind_schedule_not_a_saturated_client(
    tmp_path, cache_dir
):
    """Arrivals due while the target restarts leave late: the run is behind its schedule, but
    the driver processes woke on time for every arrival they slept until, so neither is flagged
    saturated for it (it was `CLIENT SATURATED`, telling the user to add processes)."""
    outcome = _scaled(
        tmp_path, cache_dir, n=3000, processes=2, rate=600.0, oom_at=(0.3, 0.7), concurrency=32
    )
    assert outcome.ok and outcome.oom_kills == 2
    run_dir = outcome.run_dir
    assert _events(run_dir, EventKind.BEHIND_SCHEDULE)  # the outages' arrivals left late
    verdicts = _events(run_dir, EventKind.LOAD_GENERATOR)
    assert len(verdicts) == 2
    for verdict in verdicts:
        assert verdict["timer_lag"]["arrivals"] > 0 and verdict["timer_lag"]["behind"] is False
        assert verdict["saturated"] == (verdict["saturated_share"] >= 0.1)  # its windows alone


def test_a_trace_is_replayed_by_one_process(tmp_path, cache_dir):
    trace = tmp_path / "trace.jsonl"
    trace.write_bytes(b'{"timestamp": 0}\n{"timestamp": 10}\n')
    config = ScaleConfig(
        n=2, processes=2, trace=str(trace), runs_root=str(tmp_path), cache_dir=cache_dir
    )
    with pytest.raises(UserError, match="--trace replays its send times in one driver process"):
        run_scale(config)


def test_child_processes_run_their_parents_harness_not_the_working_directorys(tmp_path, cache_dir):
    """`python -m` puts the working directory first on sys.path: from a folder holding another
    harness, the embedded server and the driver processes ran that one."""
    decoy = tmp_path / "checkout"
    (decoy / "harness").mkdir(parents=True)
    (decoy / "harness" / "__init__.py").write_text("raise SystemExit('the decoy harness ran')\n")
    console_script = Path(sys.executable).with_name("harness")
    where = ["--runs-root", str(tmp_path / "runs"), "--cache-dir", cache_dir]
    done = subprocess.run(
        [str(console_script), "scale", "--n", "300", "--processes", "2", "--no-report", *where],
        cwd=decoy,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "decoy" not in done.stderr
    assert "received 300, lost 0, duplicated 0" in done.stderr
