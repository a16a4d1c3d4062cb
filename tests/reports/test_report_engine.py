"""The engine's own view (vLLM's /metrics): summary.json's `engine` block, its panel and compare."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from synthetic_run import T0, write_synthetic_run

from reports import compare, load_run, make_baseline, summarize, write_report
from reports.compare import NEW, REGRESSED, UNMEASURED, WORSE
from reports.engine import NO_PANEL_NOTE
from reports.plots import engine_figure, markers_in

TICKS = 120  # server samples, one a second
RESTART_AT = 60  # the target restarts between samples 59 and 60: its counters start again at 0


def _usage(i: int) -> float:
    return 0.2 + 0.6 * i / TICKS  # a ramp: peak and mean are known


def _engine_rows(names: str, labelled: bool = False) -> list[dict]:
    """vLLM-style `server` rows as the sampler writes them, new or old names; one process until
    RESTART_AT, then a fresh one. Per process: 3 preemptions, 10 requests queued 0.5 s each,
    40 of 100 prefix-cache lookups hit."""
    rows = []
    for i in range(TICKS):
        age = i if i < RESTART_AT else i - RESTART_AT
        done = min(age, 10)
        row = {"t": T0 + i, "source": "server", "sim_vram_bytes": 9e9}
        usage, waiting, running = _usage(i), float(i % 7), 4.0
        preempted = float(min(age // 10, 3))
        if labelled:  # two engines: usage is the fuller one's, requests and counters add up
            for engine, share in (("0", 1.0), ("1", 0.5)):
                row[f'kv_cache_usage_perc{{engine="{engine}"}}'] = usage * share
                row[f'num_requests_waiting{{engine="{engine}"}}'] = waiting / 2
                row[f'num_requests_running{{engine="{engine}"}}'] = running / 2
                row[f'num_preemptions_total{{engine="{engine}"}}'] = preempted / 2
        elif names == "new":
            row |= {
                "kv_cache_usage_perc": usage,
                "num_requests_waiting": waiting,
                "num_requests_running": running,
                "num_preemptions_total": preempted,
                "prefix_cache_hits_total": 4.0 * done,
                "prefix_cache_queries_total": 10.0 * done,
            }
        else:  # vLLM before the V1 names
            row |= {
                "gpu_cache_usage_perc": usage,
                "num_requests_waiting": waiting,
                "num_requests_running": running,
                "num_preemptions": preempted,
                "gpu_prefix_cache_hit_rate": 0.4,
            }
        row["request_queue_time_seconds_sum"] = 0.5 * done
        row["request_queue_time_seconds_count"] = float(done)
        rows.append(row)
    return rows


def _write(path: Path, rows: list[dict], restart: bool = True) -> Path:
    write_synthetic_run(path, duration_s=TICKS, interval_s=1.0, kills_at=(), sim_vram=False)
    with (path / "samples.jsonl").open("ab") as samples:
        samples.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    if restart:
        with (path / "events.jsonl").open("ab") as events:
            for record in (
                {"t": T0 + RESTART_AT - 0.5, "kind": "exited", "cause": "crash", "returncode": 1},
                {"t": T0 + RESTART_AT - 0.2, "kind": "started", "pid": 200},
            ):
                events.write(orjson.dumps(record) + b"\n")
    return path


@pytest.mark.parametrize("names", ["new", "old"])
def test_engine_block_from_new_and_old_vllm_names(tmp_path: Path, names: str) -> None:
    engine = summarize(load_run(_write(tmp_path / names, _engine_rows(names))))["engine"]
    usage = [_usage(i) for i in range(TICKS)]
    assert engine["kv_cache_usage_peak"] == pytest.approx(max(usage))
    assert engine["kv_cache_usage_mean"] == pytest.approx(np.mean(usage))
    assert engine["requests_waiting_peak"] == 6
    assert engine["requests_waiting_mean"] == pytest.approx(np.mean([i % 7 for i in range(TICKS)]))
    assert engine["requests_running_peak"] == 4
    assert engine["preemptions"] == 6  # 3 per process: the restart's drop to 0 is a reset
    assert engine["counter_resets"] == 1
    assert engine["queue_time_mean_s"] == pytest.approx(0.5)
    assert engine["prefix_cache_hit_rate"] == pytest.approx(0.4)
    assert engine["unavailable"] == {}


def test_a_restart_is_a_reset_even_when_the_counter_did_not_fall(tmp_path: Path) -> None:
    """The new process preempted more before its first scrape than the old one in all: only the
    `started` event shows the reset."""
    values = [0, 1, 2, 2, 5, 6]  # restart between 2 and 5
    rows = [
        {"t": T0 + i, "source": "server", "num_requests_waiting": 0, "num_preemptions_total": v}
        for i, v in enumerate(values)
    ]
    path = tmp_path / "run"
    write_synthetic_run(path, duration_s=6, interval_s=1.0, kills_at=(), sim_vram=False)
    with (path / "samples.jsonl").open("ab") as samples:
        samples.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    with (path / "events.jsonl").open("ab") as events:
        events.write(orjson.dumps({"t": T0 + 3.5, "kind": "started", "pid": 7}) + b"\n")
    engine = summarize(load_run(path))["engine"]
    assert engine["preemptions"] == 2 + 6
    assert engine["counter_resets"] == 1


def test_a_counter_of_a_target_the_harness_did_not_start_counts_from_its_first_sample(
    tmp_path: Path,
) -> None:
    rows = [
        {
            "t": T0 + 10 + i,
            "source": "server",
            "num_requests_waiting": 1,
            "num_preemptions_total": v,
        }
        for i, v in enumerate([40, 41, 41, 2, 3])  # fell: a restart nobody recorded
    ]
    path = tmp_path / "external"
    path.mkdir()
    (path / "samples.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    engine = summarize(load_run(path))["engine"]
    assert engine["preemptions"] == 1 + 2 + 1  # 40 was there before the run began
    assert engine["counter_resets"] == 1


def test_several_engines_are_combined(tmp_path: Path) -> None:
    rows = _engine_rows("new", labelled=True)
    engine = summarize(load_run(_write(tmp_path / "dp", rows)))["engine"]
    assert engine["kv_cache_usage_peak"] == pytest.approx(max(_usage(i) for i in range(TICKS)))
    assert engine["requests_waiting_peak"] == 6
    assert engine["requests_running_peak"] == 4
    assert engine["preemptions"] == 6


def test_metrics_the_target_did_not_expose_are_null_with_a_reason(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if not k.startswith(("num_preemptions", "prefix_cache"))}
            for r in _engine_rows("new")]  # fmt: skip
    engine = summarize(load_run(_write(tmp_path / "partial", rows)))["engine"]
    assert engine["preemptions"] is None and engine["prefix_cache_hit_rate"] is None
    assert "vllm:num_preemptions_total" in engine["unavailable"]["preemptions"]
    assert "vllm:prefix_cache_hits_total" in engine["unavailable"]["prefix_cache_hit_rate"]
    assert engine["kv_cache_usage_peak"] is not None and engine["queue_time_mean_s"] is not None


def test_a_run_without_engine_metrics_has_no_panel_and_says_so(make_run) -> None:
    run = make_run("plain", sim_vram=True, kills_at=())  # reference rows: sim VRAM, running only
    rows = (run.path / "samples.jsonl").read_bytes().replace(b',"num_requests_running":4', b"")
    (run.path / "samples.jsonl").write_bytes(rows)
    files = write_report(run.path)
    engine = files.summary["engine"]
    figures = [
        k for k, v in engine.items() if k not in ("samples", "counter_resets", "unavailable")
    ]
    assert all(engine[k] is None for k in figures)
    assert set(engine["unavailable"]) == set(figures)
    assert "engine" not in files.pngs
    assert NO_PANEL_NOTE in files.html_path.read_text()

    bare = make_run("no-server", sim_vram=False, kills_at=())
    engine = summarize(load_run(bare.path))["engine"]
    assert engine["samples"] == 0 and engine["kv_cache_usage_peak"] is None
    assert "no server samples" in engine["unavailable"]["kv_cache_usage_peak"]


def test_the_panel_draws_usage_queues_and_preemptions(tmp_path: Path) -> None:
    path = _write(tmp_path / "panel", _engine_rows("new"))
    data = load_run(path)
    figure = engine_figure(data, TICKS)
    assert figure is not None
    lines = {line.get_gid(): line for ax in figure.axes for line in ax.lines if line.get_gid()}
    kv = lines["engine:kv_cache_usage"]
    # NaN breaks the lines at the restart: the new process's line does not join the old one
    assert np.nanmax(kv.get_ydata()) == pytest.approx(100 * max(_usage(i) for i in range(TICKS)))
    assert np.isnan(kv.get_ydata()[2:]).sum() == 1
    assert np.nanmax(lines["engine:num_requests_waiting"].get_ydata()) == 6
    running = lines["engine:num_requests_running"].get_ydata()
    assert set(running[np.isfinite(running)]) == {4}
    # the counter rose at ages 10, 20, 30 of each process (seconds since start on the axis)
    assert markers_in(figure)["preemption"] == [10, 20, 30, 70, 80, 90]
    assert "crash" in markers_in(figure)
    files = write_report(path)
    assert "engine" in files.pngs


def test_compare_gates_engine_metrics(tmp_path: Path) -> None:
    base = summarize(load_run(_write(tmp_path / "base", _engine_rows("new"))))
    worse_rows = _engine_rows("new")
    for row in worse_rows:
        row["kv_cache_usage_perc"] = min(1.0, row["kv_cache_usage_perc"] + 0.15)
        row["num_preemptions_total"] *= 10
        row["prefix_cache_hits_total"] /= 2
        row["request_queue_time_seconds_sum"] *= 3
    current = summarize(load_run(_write(tmp_path / "worse", worse_rows)))
    result = compare(current, make_baseline(base), calibrate=False)
    verdicts = {row.metric: row.verdict for row in result.rows}
    assert verdicts["engine.kv_cache_usage_peak"] == WORSE  # informational: shown, not failed
    assert verdicts["engine.preemptions"] == REGRESSED
    assert verdicts["engine.prefix_cache_hit_rate"] == REGRESSED
    assert verdicts["engine.queue_time_mean_s"] == REGRESSED
    assert set(result.to_dict()["regressions"]) == {
        "engine.preemptions",
        "engine.prefix_cache_hit_rate",
        "engine.queue_time_mean_s",
    }
    assert "informational" in result.to_markdown()
    assert compare(base, make_baseline(base), calibrate=False).passed


def test_compare_does_not_judge_what_either_side_lacks(tmp_path: Path) -> None:
    full = summarize(load_run(_write(tmp_path / "full", _engine_rows("new"))))
    rows = [{k: v for k, v in r.items() if not k.startswith("num_preemptions")}
            for r in _engine_rows("new")]  # fmt: skip
    lacking = summarize(load_run(_write(tmp_path / "lacking", rows)))
    verdicts = {r.metric: r.verdict for r in compare(lacking, make_baseline(full)).rows}
    assert verdicts["engine.preemptions"] == UNMEASURED
    verdicts = {r.metric: r.verdict for r in compare(full, make_baseline(lacking)).rows}
    assert verdicts["engine.preemptions"] == NEW
    markdown = compare(lacking, make_baseline(full)).to_markdown()
    assert "not measured in this run, not compared" in markdown


def test_a_real_scale_run_reports_the_reference_servers_engine_metrics(tmp_path: Path) -> None:
    """End to end: `harness scale` on the embedded reference server, then `harness report`."""
    run_dir = tmp_path / "scale"
    common = ["--runs-root", str(tmp_path), "--cache-dir", str(tmp_path / "datasets")]
    harness = [sys.executable, "-m", "harness"]
    scale = [*harness, "scale", "--n", "300", "--speed", "20", "--run-dir", str(run_dir)]
    done = subprocess.run(
        [*scale, "--no-report", *common], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = subprocess.run(
        [*harness, "report", str(run_dir)], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr[-2000:]
    engine = orjson.loads((run_dir / "summary.json").read_bytes())["engine"]
    assert engine["samples"] > 0
    assert 0 < engine["kv_cache_usage_peak"] <= 1
    assert engine["requests_waiting_peak"] is not None and engine["requests_running_peak"] > 0
    assert engine["queue_time_mean_s"] is not None
    assert (run_dir / "engine.png").stat().st_size > 10_000
