"""PNGs, figures and report.html from fixture run directories, and the `harness report` command."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from synthetic_run import write_locust_csvs

from harness.cli import main
from reports import load_run, summarize, write_report
from reports.plots import latency_figure, markers_in, memory_figure, recovery_figure
from reports.report import REPORT_HTML


def test_every_png_is_a_real_non_blank_image(reported_run) -> None:
    _, files = reported_run
    assert set(files.pngs) == {"memory", "engine", "recovery", "latency", "throughput"}
    for name, path in files.pngs.items():
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400, name
        assert pixels[..., :3].std() > 0.05, f"{name}.png is blank"


def test_memory_figure_marks_each_oom_kill_restart_and_recovery(reported_run) -> None:
    run, _ = reported_run
    data = load_run(run.path)
    duration = summarize(data)["window"]["duration_s"]
    markers = markers_in(memory_figure(data, duration))
    minutes = [(t - run.t0) / 60 for t in run.kills]
    assert markers["oom_kill"] == pytest.approx(minutes)
    assert markers["fault_injected"] == pytest.approx([m - 0.01 / 60 for m in minutes])
    assert len(markers["restarting"]) == len(markers["recovered"]) == 2
    assert len(markers["trim"]) == 2
    assert "exit" not in markers  # the final normal stop is not an incident


def test_memory_figure_keeps_the_one_sample_spike_and_labels_simulated_vram(reported_run) -> None:
    run, _ = reported_run
    figure = memory_figure(load_run(run.path), 600)
    rss_line = next(line for line in figure.axes[0].lines if line.get_label() == "target RSS")
    assert np.nanmax(rss_line.get_ydata()) == pytest.approx(run.peak_rss / 1024**2)
    vram_axes = figure.axes[2]
    assert "simulated" in vram_axes.get_title()
    assert any("simulated" in line.get_label() for line in vram_axes.lines)
    progress = [line for ax in figure.axes for line in ax.lines if line.get_label() == "completed"]
    assert progress and np.nanmax(progress[0].get_ydata()) > 0


def test_a_100k_sample_run_is_drawn_from_a_bounded_number_of_points(make_run) -> None:
    """13 hours at 0.5 s: each line is drawn from a few thousand points and the spike survives."""
    run = make_run(
        duration_s=50_000,
        interval_s=0.5,
        requests_per_s=0.2,
        spike_at=0.4,
        kills_at=(0.5,),
        sim_vram=False,
    )
    data = load_run(run.path)
    assert len(data.samples["ram"]) == 100_000
    figure = memory_figure(data, 50_000)
    rss_line = next(line for line in figure.axes[0].lines if line.get_label() == "target RSS")
    assert len(rss_line.get_xdata()) <= 4_100
    assert np.nanmax(rss_line.get_ydata()) == pytest.approx(run.peak_rss / 1024**2)
    assert markers_in(figure)["oom_kill"] == pytest.approx([(run.kills[0] - run.t0) / 3600])


def test_recovery_figure_has_one_bar_group_per_incident(reported_run) -> None:
    run, _ = reported_run
    figure = recovery_figure(load_run(run.path))
    up, ready, first = figure.axes[0].containers  # one bar series per stage
    assert [bar.get_height() for bar in up] == pytest.approx([r["up"] for r in run.recoveries])
    assert [bar.get_height() for bar in ready] == pytest.approx(
        [r["ready"] for r in run.recoveries]
    )
    assert [bar.get_height() for bar in first] == pytest.approx(
        [r["first"] for r in run.recoveries]
    )


def test_latency_figure_excludes_failures_and_shows_percentiles(make_run) -> None:
    run = make_run(kills_at=(0.5,), latency_s=0.4)
    figure = latency_figure(load_run(run.path), 600)
    e2e = {line.get_label(): line for line in figure.axes[0].lines}
    assert {"p50", "p95", "p99"} <= set(e2e)
    p99 = e2e["p99"].get_ydata()
    assert np.nanmax(p99) <= 0.4 * 1.2 * 1000 + 1e-6  # the 10 ms connection failures are not in it
    assert np.nanmin(e2e["p50"].get_ydata()) >= 0.4 * 0.8 * 1000 - 1e-6


def test_html_is_self_contained(reported_run) -> None:
    _, files = reported_run
    html = files.html_path.read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", html)
    assert len(sources) == len(files.pngs)
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "http://" not in html.replace("http://127.0.0.1:8000", "")
    assert "https://" not in html and "<script" not in html and "@import" not in html
    assert "VRAM simulated by the reference server" in html
    assert "load generator above 90%" in html
    assert 'class="leak">leak' in html


def test_report_command_writes_everything(make_run, capsys: pytest.CaptureFixture) -> None:
    run = make_run(kills_at=(0.5,))
    assert main(["report", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "summary:" in out and "recovery: 1 incident(s)" in out
    for name in ("summary.json", REPORT_HTML, "memory.png", "recovery.png"):
        assert (run.path / name).stat().st_size > 0


def test_report_command_explains_a_wrong_directory(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "has no manifest.json" in capsys.readouterr().err


def test_a_run_with_only_a_manifest_still_reports(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"run_id": "bare"}')
    assert main(["report", str(tmp_path)]) == 0
    html = (tmp_path / REPORT_HTML).read_text()
    assert "no requests.jsonl or Locust CSVs" in html


def test_measured_vram_is_drawn_per_gpu_next_to_the_simulated(make_run) -> None:
    run = make_run(gpu=True, kills_at=())
    vram_axes = memory_figure(load_run(run.path), 600).axes[2]
    labels = [line.get_label() for line in vram_axes.lines]
    assert "GPU 0 used" in labels and "simulated VRAM (server metric)" in labels
    assert vram_axes.get_title() == "VRAM (NVML) and simulated VRAM (reference server)"


def test_a_locust_only_run_is_plotted_from_its_history(tmp_path: Path) -> None:
    write_locust_csvs(tmp_path)
    files = write_report(tmp_path)
    assert set(files.pngs) == {"latency", "throughput"}
    data = load_run(tmp_path)
    labels = [line.get_label() for line in latency_figure(data, 20).axes[0].lines]
    assert "p95 (Locust, incl. failures)" in labels
