"""SLOs and goodput on constructed runs whose attainment and goodput are computed by hand."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from harness.cli import main
from harness.errors import UserError
from reports import load_run, summarize, write_report
from reports.compare import compare, make_baseline
from reports.slo import Objective, evaluate, format_slo, parse_slo

T0 = 1_700_000_000.0


def _write_run(path: Path, lines: list[dict], manifest: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "requests.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    (path / "manifest.json").write_bytes(orjson.dumps({"run_id": path.name, **(manifest or {})}))
    return path


def _request(i: float, latency: float, ttft: float | None, itl: float | None, ok: bool = True):
    return {
        "t": T0 + i,
        "t_end": T0 + i + latency,
        "ok": ok,
        "status": 200 if ok else 500,
        "error": None if ok else "http_5xx",
        "latency_s": latency,
        "ttft_s": ttft if ok else None,
        "itl_mean_s": itl if ok else None,
        "output_tokens": 10 if ok else None,
    }


# Ten requests sent one a second; the last finishes at T0 + 9 + 1.0, so the window is 10 s.
# TTFT within 0.5 s: requests 0-6 (7 of 10); request 9 failed. E2E within 2 s: all but 3 and 9.
# ITL: request 8 has none (one token), which cannot break a bound.
RUN = [
    _request(0, 1.0, 0.1, 0.02),
    _request(1, 1.5, 0.2, 0.03),
    _request(2, 1.2, 0.3, 0.02),
    _request(3, 2.5, 0.4, 0.05),
    _request(4, 1.1, 0.45, 0.02),
    _request(5, 0.9, 0.5, 0.02),
    _request(6, 1.9, 0.5, 0.04),
    _request(7, 1.4, 0.9, 0.02),
    _request(8, 1.0, 0.6, None),
    _request(9, 1.0, None, None, ok=False),
]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return _write_run(tmp_path / "run", RUN)


def _slo(path: Path, spec: str) -> dict:
    return evaluate(load_run(path), parse_slo(spec))


def test_parse_accepts_any_metric_and_percentile() -> None:
    objectives = parse_slo("ttft_p99=2s, itl_p99.9=100ms,e2e_p95=30,gap_max=0.25s,tpot_p50=40ms")
    assert objectives == (
        Objective("ttft", 99, 2.0),
        Objective("itl", 99.9, 0.1),
        Objective("e2e", 95, 30.0),
        Objective("gap", 100, 0.25),
        Objective("tpot", 50, 0.04),
    )
    assert format_slo(objectives) == (
        "ttft_p99=2s,itl_p99.9=100ms,e2e_p95=30s,gap_max=250ms,tpot_p50=40ms"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ttft=2s", "is not METRIC_pQ=BOUND"),
        ("ttft_p99", "is not METRIC_pQ=BOUND"),
        ("speed_p99=2s", "unknown metric 'speed'"),
        ("ttft_p0=2s", "must lie in (0, 100]"),
        ("ttft_p101=2s", "must lie in (0, 100]"),
        ("ttft_p99=-2s", "is not a positive duration"),
        ("ttft_p99=2 parsecs", "is not a positive duration"),
        ("ttft_p99=2s,ttft_p99=3s", "names ttft_p99 twice"),
        (" , ", "holds no objective"),
    ],
)
def test_parse_rejects_bad_specs_in_one_line(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("]", r"\]")) as info:
        parse_slo(spec)
    assert "\n" not in str(info.value)


def test_goodput_counts_the_requests_that_met_every_objective(run: Path) -> None:
    slo = _slo(run, "ttft_p70=500ms,e2e_p80=2s")
    ttft, e2e = slo["objectives"]
    assert (ttft["attained"], ttft["attainment"], ttft["verdict"]) == (7, 0.7, "pass")
    assert (e2e["attained"], e2e["attainment"], e2e["verdict"]) == (8, 0.8, "pass")
    # every objective at once: requests 0, 1, 2, 4, 5, 6 (3 is too slow end to end)
    assert slo["attained_all"] == 6 and slo["attainment"] == pytest.approx(0.6)
    assert slo["goodput_rps"] == pytest.approx(6 / 10.0)
    assert slo["goodput_output_tokens_per_s"] == pytest.approx(60 / 10.0)
    assert slo["verdict"] == "pass" and slo["missed"] == []


def test_a_percentile_objective_is_met_only_by_that_share(run: Path) -> None:
    # 7 of 10 attain TTFT <= 0.5 s: p70 is met, p71 is not (the failed request counts against)
    assert _slo(run, "ttft_p70=0.5s")["verdict"] == "pass"
    missed = _slo(run, "ttft_p71=0.5s")
    assert missed["verdict"] == "fail" and missed["missed"] == ["ttft_p71"]
    # the nearest-rank p70 of the nine successful TTFTs is the 7th smallest: 0.5 s
    assert missed["objectives"][0]["measured_s"] == pytest.approx(0.5)
    # a bound just under the 0.5 s values loses two requests
    assert _slo(run, "ttft_p50=0.49s")["objectives"][0]["attained"] == 5


def test_a_request_without_the_metric_cannot_break_its_bound(run: Path) -> None:
    # request 8 answered one token (no ITL); request 9 failed and attains nothing
    itl = _slo(run, "itl_max=50ms")["objectives"][0]
    assert itl["attained"] == 9 and itl["verdict"] == "fail"  # max: all ten needed
    assert _slo(run, "itl_p90=50ms")["verdict"] == "pass"


def test_an_slo_no_request_measured_is_unmeasured_not_met(tmp_path: Path) -> None:
    path = _write_run(tmp_path / "plain", [_request(i, 1.0, None, None) for i in range(5)])
    slo = _slo(path, "ttft_p99=2s,e2e_p99=2s")
    assert slo["verdict"] == "unmeasured"
    ttft = slo["objectives"][0]
    assert ttft["verdict"] == "unmeasured" and "streamed" in ttft["reason"]
    summary = summarize(load_run(path), parse_slo("ttft_p99=2s"))
    assert any("SLOs not measured" in warning for warning in summary["warnings"])


def test_the_summary_judges_the_objectives_stored_in_the_manifest(tmp_path: Path) -> None:
    path = _write_run(tmp_path / "stored", RUN, {"slo": "e2e_p90=2s"})
    summary = summarize(load_run(path))
    assert summary["slo"]["spec"] == "e2e_p90=2s" and summary["slo"]["verdict"] == "fail"
    assert summarize(load_run(path), parse_slo("e2e_p80=2s"))["slo"]["verdict"] == "pass"
    assert summarize(load_run(_write_run(tmp_path / "none", RUN)))["slo"] is None


def test_report_cli_verdict_and_exit_code(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(run), "--slo", "ttft_p70=500ms", "--fail-on-slo"]) == 0
    assert "SLOs met" in capsys.readouterr().out
    assert main(["report", str(run), "--slo", "ttft_p99=500ms"]) == 0  # reported, not failed
    assert main(["report", str(run), "--slo", "ttft_p99=500ms", "--fail-on-slo"]) == 1
    out = capsys.readouterr().out
    assert "SLOs MISSED" in out and "ttft_p99" in out
    html = (run / "report.html").read_text()
    assert "SLOs and goodput" in html and "MISSED" in html
    summary = orjson.loads((run / "summary.json").read_bytes())
    assert summary["slo"]["goodput_rps"] == pytest.approx(0.7)
    assert main(["report", str(run), "--slo", "ttft_p99"]) == 2
    assert "is not METRIC_pQ=BOUND" in capsys.readouterr().err
    assert main(["report", str(run), "--fail-on-slo"]) == 2  # nothing to judge
    assert "needs objectives" in capsys.readouterr().err


def test_compare_shows_the_verdict_and_judges_goodput(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    summary = summarize(load_run(run), parse_slo("ttft_p70=500ms"))
    baseline = make_baseline(summary)
    assert baseline["slo"] == "ttft_p70=500ms" and "slo.goodput_rps" in baseline["metrics"]
    allowed = {"max_error_rate": 0.2}  # one failed request of ten, on purpose
    comparison = compare(summary, baseline, **allowed)
    assert comparison.passed and comparison.slo_met
    assert "SLOs `ttft_p70=500ms`: ✅ met" in comparison.to_markdown()
    # fewer requests within the bound: goodput and attainment regress
    worse = summarize(load_run(run), parse_slo("ttft_p70=450ms"))
    worse["slo"]["spec"] = "ttft_p70=500ms"  # as if the same objectives were judged
    verdicts = {row.metric: row.verdict for row in compare(worse, baseline, **allowed).rows}
    assert verdicts["slo.goodput_rps"] == verdicts["slo.attainment"] == "regressed"
    # other objectives than the baseline's: their goodput is not comparable, so not compared
    other = compare(summarize(load_run(run), parse_slo("e2e_p80=2s")), baseline, **allowed)
    assert "slo.goodput_rps" in other.ignored and other.passed

    file = tmp_path / "baseline.json"
    file.write_bytes(orjson.dumps(baseline))
    args = ["compare", str(run), "--baseline", str(file), "--max-error-rate", "0.2"]
    assert main([*args, "--slo", "ttft_p70=500ms", "--fail-on-slo"]) == 0
    missed = [*args, "--slo", "ttft_p80=500ms"]
    assert main(missed) == 0  # shown, not failed
    assert main([*missed, "--fail-on-slo"]) == 1
    assert "❌ missed (ttft_p80)" in capsys.readouterr().out


def test_slo_block_survives_a_full_report(run: Path) -> None:
    files = write_report(run, slo=parse_slo("e2e_p95=2s"))
    assert files.summary["slo"]["verdict"] == "fail"
