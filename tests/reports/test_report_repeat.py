"""Repeats and noise: t intervals, repeat groups, and compare judging intervals, checked for false
alarms on unchanged runs and for catching a real slowdown among noisy ones."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import orjson
import pytest

from harness.cli import main
from reports import load_run, summarize
from reports.compare import IMPROVED, OK, REGRESSED, compare, make_baseline
from reports.repeat import REPEAT, aggregate, group_runs, write_repeat
from reports.stats import Estimate, difference_ci95, estimate, t95


def test_t_quantiles() -> None:
    assert t95(1) == pytest.approx(12.706)
    assert t95(4) == pytest.approx(2.776)
    assert t95(30) == pytest.approx(2.042)
    assert t95(60) == pytest.approx(2.000, abs=0.005)
    assert t95(4.5) == pytest.approx((2.776 + 2.571) / 2)
    with pytest.raises(ValueError):
        t95(0.5)


def test_estimate_and_welch_interval_by_hand() -> None:
    current, baseline = estimate([1.0, 2.0, 3.0]), estimate([2.0, 3.0, 4.0])
    assert (current.mean, current.sd, current.n) == (2.0, 1.0, 3)
    low, high = current.ci95  # type: ignore[misc]
    assert high - 2.0 == pytest.approx(4.303 / np.sqrt(3))
    # SE = sqrt(1/3 + 1/3); Welch df = 4 -> t 2.776
    low, high = difference_ci95(current, baseline)  # type: ignore[misc]
    half = 2.776 * np.sqrt(2 / 3)
    assert (low, high) == (pytest.approx(-1 - half), pytest.approx(-1 + half))
    # one side measured once borrows the other's spread
    single = difference_ci95(Estimate(5.0, None, 1), baseline)
    assert single is not None and single[1] - single[0] == pytest.approx(
        2 * 4.303 * np.sqrt(1 + 1 / 3)
    )
    assert difference_ci95(Estimate(5.0, None, 1), Estimate(4.0, None, 1)) is None
    assert estimate([3.0, float("nan")]).sd is None


SPEED = 6000.0


def _summary(run_id: str, rps: float, p95: float, speed: float = SPEED, lost: int = 0) -> dict:
    return {
        "schema": "harness-summary/1",
        "run": {"run_id": run_id},
        "calibration": {"workload": "harness-loopback-http/2", "requests_per_cpu_s": speed},
        "throughput": {"requests_per_s": rps},
        "latency": {"e2e_s": {"p95": p95}},
        "cost": {"cpu_s_per_request": 1 / rps},
        "errors": {"rate": 0.0},
        "results": {"lost": lost, "duplicated": 0},
        "events": {"unexpected_exits": 0},
    }


def _group(rng: np.random.Generator, name: str, k: int, slowdown: float = 1.0) -> list[dict]:
    """k runs of a workload whose figures scatter by 4% (sd), slowed by `slowdown`."""
    runs = []
    for i in range(k):
        noise = rng.normal(1.0, 0.04)
        rps = 1000.0 * noise / slowdown
        runs.append(_summary(f"{name}-{i}", rps, 0.05 * slowdown / noise))
    return runs


def test_intervals_give_no_false_alarm_and_catch_a_real_slowdown() -> None:
    """Five unchanged groups of 3 runs never fail against a 5-run baseline; five groups slowed by
    25% all fail. A single run judged by its point value, with the same noise, would not be as
    safe: the interval is what keeps the false alarms out."""
    rng = np.random.default_rng(7)
    baseline = make_baseline(_group(rng, "base", 5), {"throughput.*": "10%"})
    assert len(baseline["samples"]["throughput.requests_per_s"]) == 5
    assert baseline["source"]["runs"] == 5
    same = [compare(_group(rng, f"same{i}", 3), baseline) for i in range(5)]
    assert all(comparison.passed for comparison in same)
    slowed = [compare(_group(rng, f"slow{i}", 3, 1.25), baseline) for i in range(5)]
    for comparison in slowed:
        verdicts = {row.metric: row.verdict for row in comparison.rows}
        assert verdicts["throughput.requests_per_s"] == REGRESSED
        row = next(r for r in comparison.rows if r.metric == "throughput.requests_per_s")
        assert row.ci95 is not None and row.ci95[1] < -0.10  # the whole interval past 10%
        assert (row.n, row.baseline_n) == (3, 5)


def _drifting_pairs(rng: np.random.Generator, slowdown: float) -> tuple[list[dict], list[dict]]:
    """Five A/B pairs on a machine that drifts by 20% between pairs, 2% within one."""
    base, current = [], []
    for i in range(5):
        machine = rng.uniform(0.8, 1.2)
        base.append(_summary(f"a{i}", 1000.0 * machine * rng.normal(1, 0.02), 0.05))
        current.append(_summary(f"b{i}", 1000.0 * machine * rng.normal(1, 0.02) / slowdown, 0.05))
    return base, current


def test_a_paired_baseline_takes_the_drift_between_pairs_out_of_the_interval() -> None:
    """The CI gate's baseline ran beside the group, run i next to run i (.ci/gate.py): judged
    per pair, a 25% slowdown fails and unchanged code passes, where the machine's drift
    between pairs hides the slowdown from unpaired intervals."""
    rng = np.random.default_rng(3)
    for slowdown, verdict in ((1.0, OK), (1.25, REGRESSED)):
        base, current = _drifting_pairs(rng, slowdown)
        paired = {**make_baseline(base), "paired": True}
        row = next(r for r in compare(current, paired).rows if r.metric == "cost.cpu_s_per_request")
        assert row.verdict == verdict
        unpaired = compare(current, make_baseline(base))
        loose = next(r for r in unpaired.rows if r.metric == "cost.cpu_s_per_request")
        assert loose.ci95 is not None and row.ci95 is not None
        assert row.ci95[1] - row.ci95[0] < (loose.ci95[1] - loose.ci95[0]) / 2
    assert not compare(current, paired).calibration["applied"]


def test_a_change_inside_the_noise_is_neither_regressed_nor_improved() -> None:
    runs = [_summary(f"b{i}", rps, 0.05) for i, rps in enumerate((900, 1000, 1100, 1000))]
    baseline = make_baseline(runs)
    # 20% below the mean, past the 15% threshold, but the baseline's own runs scatter by 8%
    verdict = {r.metric: r.verdict for r in compare(_summary("c", 800, 0.05), baseline).rows}
    assert verdict["throughput.requests_per_s"] == OK
    # judged on its point value alone (a baseline without repeats) the same run fails
    single = make_baseline(_summary("b", 1000, 0.05))
    verdict = {r.metric: r.verdict for r in compare(_summary("c", 800, 0.05), single).rows}
    assert verdict["throughput.requests_per_s"] == REGRESSED
    verdict = {r.metric: r.verdict for r in compare(_summary("c", 3000, 0.05), baseline).rows}
    assert verdict["throughput.requests_per_s"] == IMPROVED


def _on(summary: dict, *rates: float) -> dict:
    """The summary with a reference of these rounds (requests per CPU second)."""
    ordered = sorted(rates)
    median = ordered[len(ordered) // 2]
    summary["calibration"] = {
        "workload": "harness-loopback-http/2",
        "requests_per_cpu_s": median,
        "rounds_requests_per_cpu_s": list(rates),
    }
    return summary


def test_a_slower_machine_is_normalised_only_when_its_reference_says_so() -> None:
    """A machine half as fast (its reference, beyond the reference's own noise) is not a
    regression; a reference within the noise of the baseline's is not applied at all, since it
    would add its noise to every figure."""
    baseline = make_baseline(
        [_on(_summary(f"b{i}", 1000 + i, 0.05), 5900 + 50 * i, 6100 - 30 * i) for i in range(3)]
    )
    assert baseline["reference_samples"] and len(baseline["reference_samples"]) == 3
    slow = [_on(_summary(f"c{i}", 500 + i, 0.1), 3000 + 20 * i) for i in range(3)]
    comparison = compare(slow, baseline)
    assert comparison.passed and comparison.calibration["applied"]
    assert comparison.calibration["speed_ratio"] == pytest.approx(0.5, rel=0.02)
    assert not compare(slow, baseline, calibrate=False).passed
    # the same machine, its reference a little off: compared as measured, and a real 2x slowdown
    # is not excused by the 3% the reference happened to read
    same = [_on(_summary(f"s{i}", 500, 0.1), 5800 + 100 * i) for i in range(3)]
    comparison = compare(same, baseline)
    assert not comparison.calibration["applied"]
    assert "do not show another machine" in comparison.calibration["reason"]
    assert not comparison.passed
    # a single run on each side: the rounds of each reference are its noise
    single = make_baseline(_on(_summary("b", 1000, 0.05), 6000, 6300, 5800, 6100, 5900))
    slow_single = _on(_summary("c", 500, 0.1), 3000, 3100, 2950, 3050, 3020)
    assert compare(slow_single, single).calibration["applied"]
    close = _on(_summary("c", 1000, 0.05), 6100, 5700, 6200, 5900, 6000)
    assert not compare(close, single).calibration["applied"]
    # surely 15% slower, as a busy moment of the same machine reads: not another machine
    busy = _on(_summary("c", 1000, 0.05), 5100, 5150, 5050, 5120, 5080)
    calibration = compare(busy, single).calibration
    assert not calibration["applied"] and calibration["speed_ratio_ci95"][1] < 1


def test_correctness_figures_use_the_worst_run_not_the_mean() -> None:
    baseline = make_baseline([_summary(f"b{i}", 1000, 0.05) for i in range(3)])
    group = [_summary("c0", 1000, 0.05), _summary("c1", 1000, 0.05, lost=1)]
    verdicts = {row.metric: row.verdict for row in compare(group, baseline).rows}
    assert verdicts["results.lost"] == REGRESSED


def _write_group(root: Path, k: int, slowdown: float = 1.0) -> Path:
    from synthetic_run import write_synthetic_run

    runs, summaries = [], []
    for i in range(k):
        path = root / f"r{i + 1}"
        write_synthetic_run(
            path, duration_s=120, kills_at=(), latency_s=0.4 * slowdown, seed=i, sim_vram=False
        )
        runs.append(path)
        summaries.append(summarize(load_run(path)))
    write_repeat(root, runs, summaries)
    return root


def test_a_repeat_group_on_disk_and_compare_over_it(tmp_path: Path) -> None:
    group = _write_group(tmp_path / "base", 3)
    document = orjson.loads((group / REPEAT).read_bytes())
    assert document["runs"] == ["r1", "r2", "r3"] and len(document["reference_samples"]) == 3
    p95 = document["metrics"]["latency.e2e_s.p95"]
    assert p95["n"] == 3 and p95["ci95"][0] <= p95["mean"] <= p95["ci95"][1]
    assert group_runs(group) == [group / "r1", group / "r2", group / "r3"]
    assert group_runs(group / "r1") is None

    baseline = tmp_path / "baseline.json"
    assert main(["compare", str(group), "--baseline", str(baseline), "--update-baseline"]) == 0
    stored = orjson.loads(baseline.read_bytes())
    assert stored["source"]["runs"] == 3 and "latency.e2e_s.p95" in stored["samples"]
    assert main(["compare", str(group), "--baseline", str(baseline)]) == 0
    slow = _write_group(tmp_path / "slow", 3, slowdown=2.0)
    assert main(["compare", str(slow), "--baseline", str(baseline)]) == 1
    verdict = orjson.loads((slow / "compare.json").read_bytes())
    assert verdict["runs"] == 3 and "latency.e2e_s.p95" in verdict["regressions"]
    assert "3 repeats, means with 95% intervals" in (slow / "compare.md").read_text()


def test_a_torn_repeat_index_is_a_one_line_error(tmp_path: Path) -> None:
    group = _write_group(tmp_path / "g", 2)
    (group / REPEAT).write_text("{torn")
    baseline = tmp_path / "b.json"
    assert main(["compare", str(group), "--baseline", str(baseline), "--update-baseline"]) == 2


def test_aggregate_keeps_figures_as_measured_and_the_references_beside_them() -> None:
    first = _summary("a", 1000, 0.05)
    second = _summary("b", 800, 0.06, speed=SPEED / 2)
    first["memory"] = {"peak_rss_bytes": 100.0}
    second["memory"] = {"peak_rss_bytes": 300.0}
    group = aggregate([first, second])
    rps = group["metrics"]["throughput.requests_per_s"]
    assert rps["values"] == [1000.0, 800.0] and rps["mean"] == 900.0 and rps["n"] == 2
    assert group["metrics"]["memory.peak_rss_bytes"]["mean"] == 200.0
    assert group["reference_samples"] == [SPEED, SPEED / 2]
    assert group["reference_requests_per_cpu_s"] == 0.75 * SPEED
    assert copy.deepcopy(group) == group  # plain data
