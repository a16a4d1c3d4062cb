"""`harness compare`: directions, thresholds, calibration ratios, verdicts and exit codes."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from harness.cli import main
from reports import compare, load_run, make_baseline, summarize, write_summary
from reports.compare import (
    IMPROVED,
    MISSING,
    NEW,
    OK,
    OVER_LIMIT,
    REGRESSED,
    UNMEASURED,
    flatten,
)


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from synthetic_run import write_synthetic_run

    path = tmp_path_factory.mktemp("compare") / "run-base"
    write_synthetic_run(path, kills_at=(0.5,), duration_s=300)
    return summarize(load_run(path))


def _changed(summary: dict, updates: dict[str, float | None], speed: float | None = None) -> dict:
    """A copy of the summary with dotted paths replaced (and optionally another calibration)."""
    changed = copy.deepcopy(summary)
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = changed
        for key in parents:
            node = node[key]
        node[leaf] = value
    if speed is not None:
        changed["calibration"] = {**changed["calibration"], "requests_per_cpu_s": speed}
    return changed


def _verdicts(comparison) -> dict[str, str]:
    return {row.metric: row.verdict for row in comparison.rows}


def test_the_same_run_passes(summary: dict) -> None:
    comparison = compare(summary, make_baseline(summary))
    assert comparison.passed
    assert set(_verdicts(comparison).values()) == {OK}
    assert {
        "throughput.requests_per_s",
        "latency.e2e_s.p95",
        "memory.peak_rss_bytes",
        "recovery.seconds_to_ready.max",
        "errors.rate",
    } <= set(_verdicts(comparison))


def test_directions_decide_what_is_a_regression(summary: dict) -> None:
    baseline = make_baseline(summary)
    rps = summary["throughput"]["requests_per_s"]
    rss = summary["memory"]["peak_rss_bytes"]
    worse = _changed(
        summary, {"throughput.requests_per_s": rps * 0.7, "memory.peak_rss_bytes": rss * 1.3}
    )
    better = _changed(
        summary, {"throughput.requests_per_s": rps * 1.3, "memory.peak_rss_bytes": rss * 0.7}
    )
    assert _verdicts(compare(worse, baseline))["throughput.requests_per_s"] == REGRESSED
    assert _verdicts(compare(worse, baseline))["memory.peak_rss_bytes"] == REGRESSED
    improved = compare(better, baseline)
    assert improved.passed
    assert _verdicts(improved)["throughput.requests_per_s"] == IMPROVED
    assert _verdicts(improved)["memory.peak_rss_bytes"] == IMPROVED


def test_timing_metrics_are_compared_as_ratios_to_the_calibration(summary: dict) -> None:
    baseline = make_baseline(summary)
    p95 = summary["latency"]["e2e_s"]["p95"]
    rps = summary["throughput"]["requests_per_s"]
    base_ops = summary["calibration"]["requests_per_cpu_s"]
    # a machine half as fast: latency doubles and throughput halves, and that is not a regression
    slower_machine = _changed(
        summary, {"latency.e2e_s.p95": p95 * 2, "throughput.requests_per_s": rps / 2}, base_ops / 2
    )
    comparison = compare(slower_machine, baseline)
    assert comparison.passed
    row = next(r for r in comparison.rows if r.metric == "latency.e2e_s.p95")
    assert row.normalized == pytest.approx(p95)
    assert comparison.calibration["speed_ratio"] == pytest.approx(0.5)
    # the same figures on an equally fast machine are regressions
    same_machine = _changed(
        summary, {"latency.e2e_s.p95": p95 * 2, "throughput.requests_per_s": rps / 2}
    )
    verdicts = _verdicts(compare(same_machine, baseline))
    assert verdicts["latency.e2e_s.p95"] == verdicts["throughput.requests_per_s"] == REGRESSED
    # memory is not a timing: a slower machine does not excuse more of it
    more_memory = _changed(
        slower_machine, {"memory.peak_rss_bytes": summary["memory"]["peak_rss_bytes"] * 2}
    )
    assert _verdicts(compare(more_memory, baseline))["memory.peak_rss_bytes"] == REGRESSED
    # and with calibration turned off the slower machine's latency is a regression again
    assert not compare(slower_machine, baseline, calibrate=False).passed


def test_calibration_is_skipped_when_either_side_lacks_it(summary: dict) -> None:
    baseline = make_baseline(summary)
    baseline["calibration"] = None
    comparison = compare(summary, baseline)
    assert comparison.calibration == {
        "applied": False,
        "reason": "the baseline has no loopback reference",
    }
    assert "unnormalised" in comparison.to_markdown()


def test_thresholds_from_the_command_line_override(summary: dict) -> None:
    baseline = make_baseline(summary)
    p95 = summary["latency"]["e2e_s"]["p95"]
    slower = _changed(summary, {"latency.e2e_s.p95": p95 * 1.4})
    assert not compare(slower, baseline).passed  # default: 25%
    assert compare(slower, baseline, thresholds={"latency.*": "50%"}).passed
    assert not compare(slower, baseline, thresholds={"latency.e2e_s.p95": "30%"}).passed
    absolute = {"latency.e2e_s.p95": str(p95)}  # up to one baseline more, in seconds
    assert compare(slower, baseline, thresholds=absolute).passed


def test_thresholds_kept_in_the_baseline_apply(summary: dict) -> None:
    p95 = summary["latency"]["e2e_s"]["p95"]
    baseline = make_baseline(summary, {"latency.*": "50%"})
    assert baseline["thresholds"] == {"latency.*": "50%"}
    assert compare(_changed(summary, {"latency.e2e_s.p95": p95 * 1.4}), baseline).passed


def test_a_metric_gone_missing_fails_and_a_new_one_does_not(summary: dict) -> None:
    baseline = make_baseline(summary)
    no_ttft = _changed(summary, {"latency.ttft_s": None})  # streaming broke: no TTFT at all
    comparison = compare(no_ttft, baseline)
    assert _verdicts(comparison)["latency.ttft_s.p95"] == MISSING
    assert not comparison.passed
    leaky = _changed(summary, {"leak.ram.confirmed_mb_per_1k_requests": 0.5})
    too_short = _changed(summary, {"leak.ram.confirmed_mb_per_1k_requests": None})
    verdict = _verdicts(compare(too_short, make_baseline(leaky)))
    assert verdict["leak.ram.confirmed_mb_per_1k_requests"] == UNMEASURED  # a fit needs samples
    del baseline["metrics"]["memory.peak_rss_bytes"]
    assert _verdicts(compare(summary, baseline))["memory.peak_rss_bytes"] == NEW
    assert compare(summary, baseline).passed


def test_an_error_rate_over_the_limit_fails_whatever_the_baseline(summary: dict) -> None:
    failing = _changed(summary, {"errors.rate": 0.4})
    baseline = make_baseline(failing)  # even a baseline as bad as the run does not excuse it
    assert _verdicts(compare(failing, baseline))["errors.rate"] == OVER_LIMIT
    assert compare(failing, baseline, max_error_rate=0.5).passed


def test_lost_results_and_unexpected_exits_allow_none(summary: dict) -> None:
    clean = _changed(
        summary, {"results": {"expected": 100, "received": 100, "lost": 0, "duplicated": 0}}
    )
    baseline = make_baseline(clean)
    lost = _changed(clean, {"results.lost": 1, "events.unexpected_exits": 1})
    verdicts = _verdicts(compare(lost, baseline))
    assert verdicts["results.lost"] == verdicts["events.unexpected_exits"] == REGRESSED


def test_flatten_keeps_numbers_only(summary: dict) -> None:
    flat = flatten(summary)
    assert "run.run_id" not in flat and "calibration.requests_per_cpu_s" not in flat
    assert all(isinstance(value, float) for value in flat.values())
    assert "recovery.per_incident" not in flat  # lists are not metrics


def test_markdown_table_and_json(summary: dict) -> None:
    rps = summary["throughput"]["requests_per_s"]
    comparison = compare(
        _changed(summary, {"throughput.requests_per_s": rps * 0.5}), make_baseline(summary)
    )
    markdown = comparison.to_markdown("baselines/ci.json")
    assert markdown.startswith("### Scale regression check: ❌")
    assert "| ↑ `throughput.requests_per_s` |" in markdown and "❌ regressed" in markdown
    assert "✅" in markdown and "-50.0%" in markdown
    document = comparison.to_dict()
    assert document["verdict"] == "regression"
    assert document["regressions"] == ["throughput.requests_per_s"]
    orjson.dumps(document)  # JSON-ready


# The command line, on real run directories.


def _run_dir(make_run, name: str, **options) -> Path:
    return make_run(name, duration_s=300, kills_at=(0.5,), **options).path


def test_cli_exit_codes(make_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = _run_dir(make_run, "base", latency_s=0.4)
    baseline = tmp_path / "baseline.json"
    assert main(["compare", str(base), "--baseline", str(baseline)]) == 2
    assert "--update-baseline" in capsys.readouterr().err

    assert main(["compare", str(base), "--baseline", str(baseline), "--update-baseline"]) == 0
    document = orjson.loads(baseline.read_bytes())
    assert document["schema"] == "harness-baseline/1" and document["calibration"]
    assert main(["compare", str(base), "--baseline", str(baseline)]) == 0
    assert "✅ passed" in capsys.readouterr().out

    slow = _run_dir(make_run, "slow", latency_s=0.8)
    assert main(["compare", str(slow), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "❌" in out and "latency.e2e_s.p95" in out
    verdict = orjson.loads((slow / "compare.json").read_bytes())
    assert verdict["verdict"] == "regression" and "latency.e2e_s.p95" in verdict["regressions"]
    assert (slow / "compare.md").read_text().startswith("### Scale regression check: ❌")
    assert (
        main(["compare", str(slow), "--baseline", str(baseline), "--threshold", "latency.*=150%"])
        == 0
    )

    fast = _run_dir(make_run, "fast", latency_s=0.2)
    assert main(["compare", str(fast), "--baseline", str(baseline)]) == 0
    assert "✅ improved" in capsys.readouterr().out


def test_cli_update_baseline_keeps_thresholds(make_run, tmp_path: Path) -> None:
    base = _run_dir(make_run, "base")
    baseline = tmp_path / "baseline.json"
    args = ["compare", str(base), "--baseline", str(baseline), "--update-baseline"]
    assert main([*args, "--threshold", "latency.*=40%"]) == 0
    assert main(args) == 0
    assert orjson.loads(baseline.read_bytes())["thresholds"] == {"latency.*": "40%"}


def test_cli_rejects_bad_input(make_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = _run_dir(make_run, "base")
    baseline = tmp_path / "baseline.json"
    assert main(["compare", str(base), "--baseline", str(baseline), "--threshold", "latency"]) == 2
    assert "is not METRIC=LIMIT" in capsys.readouterr().err
    baseline.write_text("{not json")
    assert main(["compare", str(base), "--baseline", str(baseline)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    baseline.write_text('{"hello": 1}')
    assert main(["compare", str(base), "--baseline", str(baseline)]) == 2
    assert "neither a baseline nor a summary.json" in capsys.readouterr().err


def test_a_summary_json_serves_as_a_baseline(make_run, tmp_path: Path) -> None:
    base = _run_dir(make_run, "base")
    write_summary(base)
    assert main(["compare", str(base), "--baseline", str(base / "summary.json")]) == 0
