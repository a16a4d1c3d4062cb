"""Real headless Locust runs of scenarios/ as subprocesses, each run once and asserted on at length.

embedded: the default run (no --host): every default user class, an embedded supervised server.
external: --host at a `harness serve` started here.   distributed: --processes 2.
chaos: OOMRecoveryUser injecting real OOM kills into the embedded server.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from scenario_runs import FAST, HTTP, Run, count, http_requests, locust

from harness.net import free_port
from harness.rundir import read_jsonl


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return locust(tmp_path_factory.mktemp("embedded"), "-u", "10", "-r", "10", "-t", "5s", *FAST)


@pytest.fixture(scope="module")
def external_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path_factory.mktemp("server-data")
    command = [sys.executable, "-m", "harness", "serve", "--port", str(port), "--speed", "10"]
    server = subprocess.Popen(
        [*command, "--data-dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "harness serve not ready"
            time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def test_a_default_run_drives_the_embedded_server_without_failures(embedded: Run) -> None:
    assert embedded.returncode == 0, embedded.output[-3000:]
    stats = embedded.stats()
    total = stats[("", "Aggregated")]
    assert int(total["Request Count"]) > 50
    assert int(total["Failure Count"]) == 0
    users = {name for _, name in stats}
    assert {"/v1/chat/completions", "/v1/chat/completions (stream)", "/api/chat (stream)"} <= users
    assert not any(kind == "RECOVERY" for kind, _ in stats)  # the chaos user is opt-in
    manifest = (embedded.run_dir / "manifest.json").read_text()
    assert "OOMRecoveryUser" not in manifest


def test_streams_have_ttft_itl_and_tokens_per_second_entries(embedded: Run) -> None:
    final = embedded.final()
    for name in ("/v1/chat/completions (stream)", "/api/chat (stream)"):
        streamed = count(embedded, "POST", name)
        assert streamed > 0
        for metric in ("TTFT", "ITL", "tokens/s"):
            assert count(embedded, metric, name) == streamed, (metric, name)
            assert (metric, name) in embedded.stats()  # in the CSV too
        ttft, e2e = final[("TTFT", name)], final[("POST", name)]
        assert 0 < ttft["total_response_time"] < e2e["total_response_time"]
    # the metric entries are not requests: the Aggregated row counts HTTP requests only
    stats = embedded.stats()
    in_csv = sum(int(r["Request Count"]) for (kind, _), r in stats.items() if kind in HTTP)
    batch_jobs = int(stats[("BATCH", "/v1/batches (job)")]["Request Count"])
    assert int(stats[("", "Aggregated")]["Request Count"]) == in_csv + batch_jobs


def test_every_chat_request_is_a_requests_jsonl_line(embedded: Run) -> None:
    lines = embedded.requests()
    chat = ("/v1/chat/completions", "/v1/chat/completions (stream)", "/api/chat (stream)")
    assert len(lines) == sum(count(embedded, "POST", name) for name in chat)
    assert all(line["ok"] and line["status"] == 200 and line["error"] is None for line in lines)
    streamed = [line for line in lines if line["endpoint"].endswith("(stream)")]
    assert streamed and all(0 < line["ttft_s"] <= line["latency_s"] for line in streamed)
    assert all(line["output_tokens"] == 16 for line in lines)
    assert all(line["t"] < line["t_end"] for line in lines)


def test_the_run_directory_has_samples_events_and_a_summary(embedded: Run) -> None:
    assert {"ram", "server", "disk", "load"} <= embedded.sample_sources()
    assert embedded.events("ready") and embedded.events("exited")[-1]["cause"] == "stopped"
    summary = (embedded.run_dir / "summary.json").read_text()
    assert '"failed": 0' in summary
    assert (embedded.run_dir / "report.html").stat().st_size > 0


def test_batch_jobs_return_every_custom_id_exactly_once(embedded: Run) -> None:
    jobs = embedded.events("batch_completed")
    assert jobs, "no batch job finished"
    assert all(j["missing"] == j["duplicated"] == 0 and j["succeeded"] == 20 for j in jobs)
    assert count(embedded, "BATCH", "/v1/batches (job)") >= len(jobs)


def test_host_drives_a_separately_started_server(external_server: str, tmp_path: Path) -> None:
    run = locust(
        tmp_path,
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "3s",
        "--host",
        external_server,
        "--max-tokens",
        "16",
        "--candidates",
        "20",
        "ChatUser",
        "StreamingChatUser",
    )
    assert run.returncode == 0, run.output[-3000:]
    assert count(run, "TTFT", "/v1/chat/completions (stream)") > 0
    assert sum(e["num_failures"] for e in run.final().values()) == 0
    assert not (tmp_path / "target.log").exists()  # nothing embedded was started
    assert {"ram", "server", "load"} <= run.sample_sources()  # its pid found by its port
    assert (tmp_path / "summary.json").exists()


def test_processes_2_share_one_server_and_one_run_directory(tmp_path: Path) -> None:
    run = locust(
        tmp_path,
        "--processes",
        "2",
        "--expect-workers",  # the run time starts once both are in, however loaded the machine
        "2",
        "-u",
        "6",
        "-r",
        "6",
        "-t",
        "6s",
        *FAST,
        "ChatUser",
        "StreamingChatUser",
    )
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.events("started")) == 1  # only the master started a server
    lines = run.requests()
    assert len(lines) == http_requests(run) > 0
    assert max(s.get("workers", 0) for s in read_jsonl(tmp_path / "samples.jsonl")) == 2


def test_the_chaos_user_times_recoveries_from_real_oom_kills(tmp_path: Path) -> None:
    run = locust(
        tmp_path,
        "-u",
        "3",
        "-r",
        "3",
        "-t",
        "6s",
        *FAST,
        "--chaos-every",
        "1.5s",
        "ChatUser",
        "OOMRecoveryUser",
    )
    assert "Unknown User" not in run.output
    kills = [e for e in run.events("exited") if e["cause"] == "oom_kill"]
    assert kills and all(e["injected"] for e in kills)
    # a death at the very end may be recorded without a first success: the run stopped first
    recovered = [e for e in run.events("recovered") if e["seconds_to_first_success"] is not None]
    assert recovered
    for event in recovered:
        assert 0 < event["seconds_to_up"] <= event["seconds_to_ready"]
        assert event["seconds_to_ready"] <= event["seconds_to_first_success"]
    assert count(run, "RECOVERY", "to first success") >= 1


def test_a_remote_host_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    run = locust(tmp_path, "--host", "http://192.0.2.10:8000", "-t", "1s", timeout=30)
    assert run.returncode == 2
    assert "not a loopback" in run.output
