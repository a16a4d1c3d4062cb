"""summary.json: figures from events, samples, requests and manifest, by the contract's rules."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from synthetic_run import write_locust_csvs

from reports import load_run, summarize, write_report
from reports.leak import LEAK


def test_failed_requests_are_excluded_from_latency_and_counted_by_cause(make_run) -> None:
    run = make_run(kills_at=(0.5,), latency_s=0.4)
    lines = (run.path / "requests.jsonl").read_bytes().splitlines()
    slow_failures = [
        orjson.dumps(
            {
                "t": run.t0 + 100 + i,
                "t_end": run.t0 + 160 + i,
                "id": f"x{i}",
                "ok": False,
                "status": 500,
                "error": "oom_error",
                "latency_s": 60.0,
            }
        )
        for i in range(20)
    ]
    (run.path / "requests.jsonl").write_bytes(b"\n".join(lines + slow_failures) + b"\n")

    summary = summarize(load_run(run.path))
    assert summary["latency"]["e2e_s"]["max"] < 1.0  # the 60 s failures are not in it
    assert summary["latency"]["e2e_s"]["n"] == run.requests - run.failed
    assert summary["errors"]["by_cause"] == {"connection": run.failed, "oom_error": 20}
    assert summary["errors"]["by_status"]["500"] == 20
    assert summary["requests"]["failed"] == run.failed + 20
    assert summary["errors"]["rate"] == pytest.approx((run.failed + 20) / (run.requests + 20))


def test_throughput_over_the_measured_window(make_run) -> None:
    run = make_run(kills_at=(), requests_per_s=5.0, duration_s=300)
    summary = summarize(load_run(run.path))
    assert summary["throughput"]["requests_per_s"] == pytest.approx(5.0, rel=0.05)
    assert summary["throughput"]["output_tokens_per_s"] == pytest.approx(5.0 * 60, rel=0.05)


def test_recovery_timings_per_incident_and_their_spread(reported_run) -> None:
    run, files = reported_run
    recovery = files.summary["recovery"]
    assert recovery["incidents"] == 2 and recovery["unrecovered"] == 0
    incidents = recovery["per_incident"]
    assert [i["death_t"] for i in incidents] == run.kills
    assert [i["seconds_to_ready"] for i in incidents] == [r["ready"] for r in run.recoveries]
    assert all(i["cause"] == "oom_kill" and i["injected"] for i in incidents)
    ready = [r["ready"] for r in run.recoveries]
    assert recovery["seconds_to_ready"]["max"] == max(ready)
    assert recovery["seconds_to_ready"]["p50"] == pytest.approx(sum(ready) / 2)
    assert recovery["requests_failed"]["total"] == sum(r["failed"] for r in run.recoveries)
    assert files.summary["events"]["oom_kills"] == 2
    assert files.summary["events"]["unexpected_exits"] == 0


def test_stages_are_derived_from_events_when_recovered_is_missing(make_run) -> None:
    run = make_run(kills_at=(0.5,))
    events = [orjson.loads(line) for line in (run.path / "events.jsonl").read_bytes().splitlines()]
    kept = [e for e in events if e["kind"] != "recovered"]
    (run.path / "events.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in kept))
    incident = summarize(load_run(run.path))["recovery"]["per_incident"][0]
    assert incident["recovered"] is False  # never confirmed serving again
    assert incident["seconds_to_up"] == pytest.approx(run.recoveries[0]["up"])
    assert incident["seconds_to_ready"] == pytest.approx(run.recoveries[0]["ready"])


def test_an_exit_nobody_injected_is_unexpected(make_run) -> None:
    run = make_run(kills_at=(0.5,))
    events = [orjson.loads(line) for line in (run.path / "events.jsonl").read_bytes().splitlines()]
    kept = [e for e in events if e["kind"] != "fault_injected"]
    for event in kept:
        event.pop("injected", None)
    (run.path / "events.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in kept))
    assert summarize(load_run(run.path))["events"]["unexpected_exits"] == 1


def test_memory_peaks_keep_real_and_simulated_vram_apart(reported_run) -> None:
    run, files = reported_run
    memory = files.summary["memory"]
    assert memory["peak_rss_bytes"] == pytest.approx(run.peak_rss)
    assert memory["peak_vram_bytes"] is None  # no GPU measured: never a zero
    assert memory["peak_sim_vram_bytes"] > 9e9
    assert memory["vram_source"] == "simulated"


def test_no_vram_at_all_says_why(make_run) -> None:
    run = make_run(sim_vram=False, kills_at=())
    summary = summarize(load_run(run.path))
    assert summary["memory"]["vram_source"] == "unavailable"
    assert "VRAM: unavailable: no NVIDIA driver" in summary["warnings"]


def test_leak_section_and_results_and_load_generator(reported_run) -> None:
    _, files = reported_run
    summary = files.summary
    assert summary["leak"]["ram"]["verdict"] == LEAK
    assert summary["leak"]["ram"]["lifetimes"] == 3  # split at both OOM kills
    assert summary["results"] == {
        "expected": 3000,
        "received": 2998,
        "lost": 2,
        "duplicated": 1,
        "source": "events.jsonl verification",
    }
    load = summary["load_generator"]
    assert load["cpu_percent_mean"] > 90
    assert load["warning"] in summary["warnings"]


def test_an_idle_load_generator_gives_no_warning(make_run) -> None:
    run = make_run(load_cpu_percent=20, kills_at=())
    summary = summarize(load_run(run.path))
    assert summary["load_generator"]["warning"] is None
    assert not any("load generator" in w for w in summary["warnings"])


def test_torn_last_lines_are_tolerated(make_run) -> None:
    whole = summarize(load_run(make_run("whole", seed=3).path))
    torn = summarize(load_run(make_run("torn", seed=3, torn=True).path))
    for section in ("requests", "errors", "throughput", "latency", "memory", "recovery", "leak"):
        assert torn[section] == whole[section], section


def test_records_and_manifest_keys_of_the_wrong_shape_are_left_out(make_run) -> None:
    """A run directory edited by hand: a line that is not an object, an event whose kind is a
    number, a sample whose source is a list, an error that is an object, and manifest keys of the
    wrong type are left out (the manifest's with a warning), and the report is still written."""
    whole = make_run("whole", seed=4)
    edited = make_run("edited", seed=4)
    odd = [b"[1, 2]", b"7", b"null", b'"text"']
    for name, extra in (
        ("requests.jsonl", [*odd, b'{"t": 1.0, "ok": false, "error": {"a": 1}}']),
        ("events.jsonl", [*odd, b'{"t": 1.0, "kind": 5}']),
        ("samples.jsonl", [*odd, b'{"t": 1.0, "source": ["ram"]}']),
    ):
        path = edited.path / name
        path.write_bytes(path.read_bytes() + b"\n".join(extra) + b"\n")
    manifest = orjson.loads((edited.path / "manifest.json").read_bytes())
    manifest.update(run_id=["a"], calibration={"requests_per_cpu_s": "fast"}, host=3)
    (edited.path / "manifest.json").write_bytes(orjson.dumps(manifest))

    before, after = summarize(load_run(whole.path)), summarize(load_run(edited.path))
    assert after["errors"]["by_cause"] == {**before["errors"]["by_cause"], "unknown": 1}
    for section in ("latency", "memory", "recovery"):
        assert after[section] == before[section], section
    assert after["run"]["run_id"] == "edited" and after["calibration"] is None
    [warning] = [w for w in after["warnings"] if w.startswith("manifest.json")]
    assert all(key in warning for key in ("run_id", "calibration", "host"))
    files = write_report(edited.path)
    assert files.html_path.stat().st_size > 0 and files.pngs


def test_locust_csvs_when_there_is_no_requests_jsonl(tmp_path: Path) -> None:
    write_locust_csvs(tmp_path)
    summary = summarize(load_run(tmp_path))
    assert summary["requests"] == {"source": "locust", "attempts": 1000, "ok": 990, "failed": 10}
    assert summary["latency"]["e2e_s"]["p95"] == pytest.approx(0.7)
    assert summary["throughput"]["requests_per_s"] == pytest.approx(9.9)
    assert any("Locust counts failed requests" in w for w in summary["warnings"])


def test_measured_and_simulated_vram_are_both_kept_and_labelled(make_run) -> None:
    run = make_run(gpu=True, kills_at=())
    summary = summarize(load_run(run.path))
    memory = summary["memory"]
    assert memory["vram_source"] == "nvml+simulated"
    assert memory["peak_vram_bytes"] == pytest.approx(7e9 + 1e7, rel=1e-3)
    assert memory["vram_per_gpu"]["0"]["total_bytes"] == 11.5e9
    assert memory["peak_sim_vram_bytes"] != memory["peak_vram_bytes"]
    assert {"ram", "vram", "sim_vram"} <= set(summary["leak"])
