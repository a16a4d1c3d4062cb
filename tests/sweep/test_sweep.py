"""`harness sweep`: its decisions on constructed points, and real sweeps against the embedded
server that find the knee, stop before a VRAM budget and stop at an OOM."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from harness.cli import main
from harness.errors import UserError
from harness.scale import ScaleConfig
from harness.sweep import (
    CLIENT_SATURATED,
    OOM,
    SATURATED,
    VRAM_BUDGET,
    Point,
    SweepConfig,
    _budget_blocks,
    _Measured,
    _relative_bounds,
    _Search,
    best_point,
    run_sweep,
    saturation,
)
from reports.sweep import pareto_front, sweep_figure
from tests.starving import starve

GIB = 1024**3


def _point(c: int, rps: float, **fields) -> Point:
    base = dict(
        load=c,
        run_dirs=[f"c{c}"],
        requests_per_s=rps,
        requests_per_s_ci95=None,
        output_tokens_per_s=rps * 100,
        per_user_tokens_per_s=1000 / c,
        goodput_rps=None,
        slo_verdict=None,
        slo_missed=[],
        latency={"e2e_s.p99": 0.1 * c, "ttft_s.p99": None},
        errors_rate=0.0,
        peak_ram_bytes=100e6,
        peak_vram_bytes=8 * GIB + c * 0.25 * GIB,
        vram_source="simulated",
    )
    return Point(**{**base, **fields})


def _bins(rate: float, latency: float, seed: int, spread: float = 0.05) -> _Measured:
    rng = np.random.default_rng(seed)
    return _Measured(rng.normal(rate, rate * spread, 10), rng.normal(latency, latency * spread, 10))


def test_saturation_needs_flat_throughput_and_rising_latency() -> None:
    # below the knee: twice the load, nearly twice the throughput, a little more latency
    assert not saturation(_bins(100, 0.05, 1), _bins(190, 0.055, 2))["saturated"]
    # past it: the same throughput, twice the latency
    verdict = saturation(_bins(200, 0.05, 3), _bins(201, 0.1, 4))
    assert verdict["saturated"] and verdict["latency_rising"] and verdict["throughput_flat"]
    assert verdict["throughput_gain_ci95"][0] < 0.05 < verdict["latency_rise_ci95_s"][0] * 1000
    # flat throughput but no sure rise in latency (noise): not saturated
    noisy = saturation(_bins(200, 0.05, 5, 0.3), _bins(200, 0.052, 6, 0.3))
    assert not noisy["saturated"] and not noisy["latency_rising"]
    # latency rising while throughput still rises for sure: still worth going on
    assert not saturation(_bins(100, 0.05, 7), _bins(150, 0.08, 8))["saturated"]


def test_the_search_doubles_then_bisects_to_the_edge() -> None:
    search, seen = _Search(1, 64), []
    edge = 11  # loads up to 11 pass
    while (load := search.next()) is not None:
        seen.append(load)
        (search.passed if load <= edge else search.failed)(load)
    assert seen == [1, 2, 4, 8, 16, 12, 10, 11]
    assert (search.low, search.high) == (11, 12)
    rates = _Search(5.0, 1000.0, integer=False)  # a rate: to within 10%
    while (load := rates.next()) is not None:
        (rates.passed if load <= 33.0 else rates.failed)(load)
    assert rates.low <= 33.0 < rates.high <= 1.1 * rates.low


def test_a_vram_budget_stops_before_the_point_that_would_pass_it() -> None:
    config = SweepConfig(base=ScaleConfig(), vram_budget=int(10 * GIB))
    points = [_point(2, 10), _point(4, 20)]  # 8.5 and 9 GiB: +0.25 GiB per request in flight
    assert _budget_blocks(config, points, 6) is None  # 9.5 GiB predicted
    blocked = _budget_blocks(config, points, 16)  # 12 GiB predicted
    assert blocked is not None and blocked["reason"] == VRAM_BUDGET
    assert blocked["predicted_bytes"] == pytest.approx(12 * GIB)
    assert _budget_blocks(config, points[:1], 16) is None  # one point draws no line


def test_the_best_point_is_usable_and_not_saturated() -> None:
    points = [
        _point(1, 10),
        _point(2, 19),
        _point(4, 30),
        _point(8, 31, saturated=True),
        _point(16, 40, oom=2),
        _point(32, 50, over_budget=VRAM_BUDGET),
    ]
    assert best_point(points).load == 4
    with_slo = [_point(1, 10, goodput_rps=10, slo_verdict="pass"), _point(2, 19, goodput_rps=3)]
    with_slo[1].slo_verdict = "fail"
    assert best_point(with_slo).load == 1
    assert best_point([_point(1, 10, oom=1)]) is None
    # a point whose client could not keep up measured the client: only when nothing else is
    client_bound = [_point(1, 10), _point(2, 19, client_saturated=True)]
    assert best_point(client_bound).load == 1
    assert best_point(client_bound[1:]).load == 2


def test_relative_slos_are_checked_up_front() -> None:
    assert _relative_bounds("ttft_p99=2x,e2e_p95=30s") == {"ttft_p99": 2.0}
    for spec, message in (("ttft_p99=twox", "write a multiple"), ("ttft_p99=0x", "positive")):
        with pytest.raises(UserError, match=message):
            _relative_bounds(spec)
    with pytest.raises(UserError, match="unknown metric"):
        _relative_bounds("speed_p99=2x")


def test_pareto_front_and_figure() -> None:
    # (throughput, latency): c is dominated by b (more throughput, less latency)
    assert pareto_front([(10, 1.0), (20, 1.5), (15, 2.0), (30, 3.0)]) == [0, 1, 3]
    document = {
        "points": [orjson.loads(orjson.dumps(p.__dict__)) | {"usable": True} for p in
                   (_point(1, 10), _point(2, 19), _point(4, 30))],
        "best": {"load": 4},
        "axis": "concurrency",
        "stop": {"reason": SATURATED},
        "vram_budget_bytes": 10 * GIB,
        "ram_budget_bytes": None,
    }  # fmt: skip
    figure = sweep_figure(document)
    assert figure is not None and len(figure.axes) == 4  # three panels and RAM's right axis
    assert sweep_figure({**document, "points": []}) is None


def test_cli_rejects_bad_input(capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", "--concurrency", "4,4", "--run-dir", "/nonexistent/x"]) == 2
    assert "distinct" in capsys.readouterr().err
    assert main(["sweep", "--concurrency", "1.5,4", "--run-dir", "/nonexistent/x"]) == 2
    assert "whole numbers" in capsys.readouterr().err
    assert main(["sweep", "--target", "http://127.0.0.1:1", "--set", "max_num_seqs=8"]) == 2
    assert "embedded server" in capsys.readouterr().err
    assert main(["sweep", "--slo", "ttft_p99=2 fortnights"]) == 2
    assert "positive duration" in capsys.readouterr().err
    assert main(["sweep", "--vram-budget", "lots"]) == 2
    assert "is not a size" in capsys.readouterr().err


# -- real sweeps against the embedded server --------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("datasets"))


def _sweep(tmp_path: Path, cache_dir: str, server_args: tuple[str, ...], **settings) -> dict:
    base = ScaleConfig(
        runs_root=str(tmp_path),
        cache_dir=cache_dir,
        speed=settings.pop("speed", 40.0),
        server_args=server_args,
        sample_interval=0.1,
        ready_timeout_s=30.0,
    )
    config = SweepConfig(base=base, run_dir=str(tmp_path / "sweep"), **settings)
    out = io.StringIO()
    document = run_sweep(config, out=out)
    assert (tmp_path / "sweep" / "sweep.json").exists()
    return document


def test_a_sweep_finds_the_knee_of_the_embedded_server(tmp_path: Path, cache_dir: str) -> None:
    """Four sequences run at once (max_num_seqs=4): up to 4 the throughput grows with the load;
    past it requests queue, so throughput stays flat while latency grows, and the sweep stops."""
    document = _sweep(
        tmp_path,
        cache_dir,
        ("--set=max_num_seqs=4",),
        grid=(1, 2, 4, 8, 16, 32),
        n_per_point=160,
    )
    stop = document["stop"]
    assert stop["reason"] == SATURATED and stop["at"] in (8, 16), stop
    assert document["best"]["load"] in (4, 8)
    loads = [p["load"] for p in document["points"]]
    assert 32 not in loads  # it stopped, not just ran out of grid
    rates = {p["load"]: p["requests_per_s"] for p in document["points"]}
    assert rates[4] > 2.5 * rates[1]  # below the knee, more load was more throughput
    best = document["best"]
    assert best["predicted_target_s"] == pytest.approx(170_000 / best["requests_per_s"])
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 10_000
    assert "Capacity sweep" in (tmp_path / "sweep" / "report.html").read_text()


def test_a_sweep_drives_each_point_with_up_to_its_concurrency_in_processes(
    tmp_path: Path, cache_dir: str
) -> None:
    """--processes 2: concurrency 1 runs one driver process (it cannot be split), 4 runs two."""
    base = ScaleConfig(
        runs_root=str(tmp_path), cache_dir=cache_dir, processes=2, sample_interval=0.1
    )
    config = SweepConfig(
        base=base, grid=(1, 4), n_per_point=120, full_grid=True, run_dir=str(tmp_path / "sweep")
    )
    document = run_sweep(config, out=io.StringIO())
    used = {}
    for point in document["points"]:
        [run_dir] = point["run_dirs"]
        manifest = orjson.loads((tmp_path / "sweep" / run_dir / "manifest.json").read_bytes())
        used[point["load"]] = manifest["outcome"]["processes"]
    assert used == {1: 1, 4: 2}


def test_a_point_whose_client_was_starved_stops_the_sweep(tmp_path: Path) -> None:
    """A load generator that could not keep up measured itself: the point is marked, the sweep
    stops there (higher loads would measure the client) and says to add processes."""
    sweep_dir = tmp_path / "sweep"
    points = ["--concurrency", "8,16", "--n", "1500", "--speed", "100"]
    where = ["--run-dir", str(sweep_dir), "--runs-root", str(tmp_path)]
    sweep = subprocess.Popen(
        [str(Path(sys.executable).with_name("harness")), "sweep", *points, *where],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = sweep_dir / "c8" / "results.jsonl"
    deadline = time.monotonic() + 120
    while not (results.exists() and results.stat().st_size > 20_000):
        assert sweep.poll() is None and time.monotonic() < deadline, "no results from c8"
        time.sleep(0.02)
    starve(sweep.pid)  # the driver's loop runs on the sweep's main thread
    _, stderr = sweep.communicate(timeout=180)
    document = orjson.loads((sweep_dir / "sweep.json").read_bytes())
    [point] = document["points"]  # 16 was not run
    assert point["load"] == 8 and point["client_saturated"] is True
    assert document["stop"]["reason"] == CLIENT_SATURATED and document["stop"]["at"] == 8
    assert "CLIENT SATURATED" in stderr and "--processes" in stderr


def test_a_sweep_stops_before_the_vram_budget(tmp_path: Path, cache_dir: str) -> None:
    """No queue (64 sequences at once): the simulated KV cache grows with each request in flight,
    so the two lowest points predict the VRAM of the next, which would pass the budget."""
    # peaks as the memory model gives them at --speed 40: 8.2-8.5 GB at 1 in flight, 9.7-10.3 GB
    # at 4, so 16 is predicted near 16 GB, far past the budget, which 4 is far below
    budget = int(12 * GIB)
    document = _sweep(
        tmp_path,
        cache_dir,
        ("--set=max_num_seqs=64",),
        grid=(1, 4, 16),
        n_per_point=80,
        vram_budget=budget,
    )
    stop = document["stop"]
    assert stop["reason"] == VRAM_BUDGET and stop["predicted_bytes"] > budget, stop
    measured = [p for p in document["points"]]
    assert all(p["peak_vram_bytes"] <= budget for p in measured)
    assert stop["at"] > max(p["load"] for p in measured)
    assert document["best"]["load"] == max(p["load"] for p in measured)


def test_a_sweep_stops_at_an_oom(tmp_path: Path, cache_dir: str) -> None:
    """A GPU with room for about four sequences at once: eight in flight run it out of memory,
    the server is killed as the kernel would, and the sweep goes no higher."""
    # peaks at --speed 40: 8.6-9.1 GB with two in flight, 12.3-13.3 GB with eight
    vram = 10_500_000_000
    document = _sweep(
        tmp_path,
        cache_dir,
        ("--set=max_num_seqs=64", f"--set=vram_total_bytes={vram}"),
        grid=(2, 8, 16),
        n_per_point=60,
    )
    stop = document["stop"]
    assert stop["reason"] == OOM and stop["at"] == 8, stop
    assert [p["load"] for p in document["points"]] == [2, 8]
    assert document["points"][1]["oom"] >= 1 and not document["points"][1]["usable"]
    assert document["best"]["load"] == 2
