"""The figures a new user reads first: no legend over the data, a shared cgroup kept off the
target's axis, throughput and tokens on panels of their own, simulated hours where they apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from reports import load_run, write_report
from reports.plots import latency_figure, memory_figure, recovery_figure, throughput_figure

GIB = 1024**3


def _with_cgroup(path: Path, extra_bytes: float) -> None:
    """The run's RAM rows with a cgroup that holds the target plus `extra_bytes`."""
    rows = [orjson.loads(line) for line in (path / "samples.jsonl").read_bytes().splitlines()]
    for row in rows:
        if row.get("source") == "ram" and row.get("rss_bytes") is not None:
            row["cgroup_usage_bytes"] = row["rss_bytes"] + extra_bytes
    (path / "samples.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.lines]


def test_a_shared_cgroup_goes_with_system_ram_and_the_targets_own_stays(make_run) -> None:
    shared = make_run("shared", duration_s=60)
    _with_cgroup(shared.path, 4 * GIB)  # the sandbox: harness, page cache, everything
    figure = memory_figure(load_run(shared.path), 60)
    target, system = figure.axes[0], figure.axes[1]
    assert "cgroup usage" not in " ".join(_labels(target))
    rss = next(line for line in target.lines if line.get_label() == "target RSS")
    low, high = target.get_ylim()
    assert np.nanmax(rss.get_ydata()) > low + 0.5 * (high - low)  # not squashed to the floor
    assert any("cgroup usage (shared" in label for label in _labels(system))

    own = make_run("own", duration_s=60)
    _with_cgroup(own.path, 50 * 1024**2)  # a container running the server alone
    assert "cgroup usage" in _labels(memory_figure(load_run(own.path), 60).axes[0])


def test_no_legend_covers_a_panel(make_run) -> None:
    run = make_run("legends", duration_s=60)
    data = load_run(run.path)
    for figure in (memory_figure(data, 60), throughput_figure(data, 60), latency_figure(data, 60)):
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        for ax in figure.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            box, panel = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert box.x0 >= panel.x1 - 1, f"{ax.get_title()!r}: legend over the data"


def test_tokens_per_second_has_a_panel_of_its_own_and_bins_are_labelled(make_run) -> None:
    run = make_run("rates", duration_s=60)
    data = load_run(run.path)
    figure = throughput_figure(data, 60)
    rates, tokens = figure.axes[0], figure.axes[1]
    assert "successful req/s" in _labels(rates) and "output tokens/s" not in _labels(rates)
    assert "output tokens/s" in _labels(tokens)
    assert "completion time" in figure.axes[-1].get_xlabel()
    assert "completion time" in latency_figure(data, 60).axes[-1].get_xlabel()


def test_a_run_at_a_finite_speed_gets_a_simulated_hours_axis(make_run) -> None:
    run = make_run("simulated", duration_s=60)
    assert not memory_figure(load_run(run.path), 60).axes[0].child_axes
    manifest = orjson.loads((run.path / "manifest.json").read_bytes())
    manifest["simulated"] = {"speed": 600.0}
    (run.path / "manifest.json").write_bytes(orjson.dumps(manifest))
    figure = memory_figure(load_run(run.path), 60)
    (top,) = figure.axes[0].child_axes
    assert top.get_xlabel() == "simulated hours (at --speed 600)"
    figure.canvas.draw()
    # 60 s of wall time at 600x: the top axis ends near 10 simulated hours
    assert 9 <= top.get_xlim()[1] <= 11.5


def test_a_generated_dataset_is_named_as_such_never_none(make_run) -> None:
    run = make_run("generated", duration_s=30)
    manifest = orjson.loads((run.path / "manifest.json").read_bytes())
    manifest["dataset"] = {"path": None, "sha256": None, "format": "generated", "n": 500}
    (run.path / "manifest.json").write_bytes(orjson.dumps(manifest))
    html = write_report(run.path).html_path.read_text()
    assert "generated, not read from a file (500 records)" in html
    assert "None (" not in html


def test_no_box_is_drawn_from_a_couple_of_incidents(make_run) -> None:
    run = make_run("two-deaths", duration_s=120, kills_at=(0.3, 0.6))
    figure = recovery_figure(load_run(run.path))
    dist = figure.axes[1]
    assert len(dist.lines) == 0  # a box plot draws its boxes, medians and whiskers as lines
    assert sum(len(c.get_offsets()) for c in dist.collections) == 2 * 3  # the points, all shown
    many = make_run("six-deaths", duration_s=600, kills_at=(0.1, 0.25, 0.4, 0.55, 0.7, 0.85))
    assert recovery_figure(load_run(many.path)).axes[1].lines  # five or more: boxes


def test_itl_and_tpot_share_a_panel_when_they_are_the_same(make_run) -> None:
    run = make_run("one-token-chunks", duration_s=60)
    lines = (run.path / "requests.jsonl").read_bytes().splitlines()
    rows = [orjson.loads(line) for line in lines]
    for row in rows:
        row["tpot_s"] = row["itl_mean_s"]
    (run.path / "requests.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    labels = [ax.get_ylabel() for ax in latency_figure(load_run(run.path), 60).axes]
    assert "ITL (per-request mean) = TPOT (ms)" in labels and "TPOT (ms)" not in labels
    other = make_run("distinct", duration_s=60)  # 10 ms against 12 ms: two panels
    labels = [ax.get_ylabel() for ax in latency_figure(load_run(other.path), 60).axes]
    assert "TPOT (ms)" in labels and "ITL (per-request mean) (ms)" in labels
