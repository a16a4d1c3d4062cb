"""Open-loop arrivals in real Locust runs: the seeded schedule is what was sent, by one process
or two, a trace replays and ends the test, and a starved client is caught behind schedule."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from scenario_runs import FAST, ROOT, Run, count, locust

from harness.arrivals import rate_offsets, trace_offsets

CHAT = ("ChatUser", "StreamingChatUser")


def _offsets(lines: list[dict]) -> list[float]:
    scheduled = sorted(line["scheduled_t"] for line in lines)
    return [t - scheduled[0] for t in scheduled]


def _assert_is_the_schedule(run: Run, expected: list[float], in_flight_at_stop: int = 30) -> None:
    """Every line is one of the schedule's arrivals, each once, and few of those due are missing
    (requests still in flight when the test stopped are not recorded)."""
    sent = _offsets(run.requests())
    assert len(sent) > in_flight_at_stop
    j = missing = 0
    for offset in sent:  # both in time order: walk the schedule, skipping what was not sent
        while j < len(expected) and expected[j] < offset - 1e-4:
            j, missing = j + 1, missing + 1
        assert j < len(expected) and abs(expected[j] - offset) <= 1e-4, offset
        j += 1
    assert missing <= in_flight_at_stop


def _max_in_flight(lines: list[dict]) -> int:
    edges = sorted([(line["t"], 1) for line in lines] + [(line["t_end"], -1) for line in lines])
    return max(itertools.accumulate(step for _, step in edges))


@pytest.fixture(scope="module")
def poisson(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run_dir = tmp_path_factory.mktemp("poisson")
    return locust(run_dir, "-u", "1", "-t", "5s", *FAST, "--rate", "50", "--seed", "3", *CHAT)


def test_one_user_sends_the_seeded_poisson_schedule_without_waiting(poisson: Run) -> None:
    assert poisson.returncode == 0, poisson.output[-3000:]
    lines = poisson.requests()
    assert all(line["ok"] for line in lines)
    expected = list(itertools.islice(rate_offsets(50.0, "poisson", seed=3), 1000))
    _assert_is_the_schedule(poisson, expected)
    # one user, yet requests overlap: arrivals do not wait for answers
    assert _max_in_flight(lines) > 1
    actual = sorted(line["t"] for line in lines)
    assert (len(actual) - 1) / (actual[-1] - actual[0]) == pytest.approx(50, rel=0.25)


def test_the_load_generator_check_times_the_wake_ups_for_arrivals(poisson: Run) -> None:
    """The process's saturation check counts how late it woke for the arrivals it waited for,
    not how late they left (the cap or the target may hold them: behind schedule, not busy)."""
    [verdict] = poisson.events("load_generator")
    timers = verdict["timer_lag"]
    assert 0 < timers["arrivals"] <= len(poisson.requests())
    assert timers["behind"] is False


def test_every_request_is_timed_from_its_schedule_too(poisson: Run) -> None:
    lines = poisson.requests()
    for line in lines:
        assert line["schedule_lag_s"] == pytest.approx(line["t"] - line["scheduled_t"])
        assert line["scheduled_latency_s"] == pytest.approx(
            line["t_end"] - line["scheduled_t"], abs=1e-6
        )
        assert line["scheduled_latency_s"] >= line["latency_s"] - 0.002  # clock reads apart
    [verdict] = poisson.events("schedule_kept") + poisson.events("behind_schedule")
    assert verdict["arrivals"] == len(lines)
    exact = sorted(max(0.0, line["schedule_lag_s"]) for line in lines)
    assert verdict["lag_max_s"] == pytest.approx(exact[-1])
    assert verdict["lag_p50_s"] == pytest.approx(exact[len(exact) // 2], rel=0.05, abs=1e-4)
    assert count(poisson, "LAG", "schedule") == len(lines)
    for endpoint in {line["endpoint"] for line in lines}:
        sent = sum(line["endpoint"] == endpoint for line in lines)
        assert count(poisson, "SCHEDULED", endpoint) == count(poisson, "POST", endpoint) == sent
    manifest = orjson.loads((poisson.run_dir / "manifest.json").read_bytes())
    assert manifest["locust"]["arrivals"]["rate"] == 50.0


def test_two_processes_send_one_gamma_schedule_between_them(tmp_path: Path) -> None:
    run = locust(
        tmp_path,
        "--processes",
        "2",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "5s",
        *FAST,
        "--rate",
        "40",
        "--arrival",
        "gamma",
        "--burstiness",
        "0.5",
        *CHAT,
    )
    assert run.returncode == 0, run.output[-3000:]
    expected = list(itertools.islice(rate_offsets(40.0, "gamma", 0.5, seed=0), 1000))
    _assert_is_the_schedule(run, expected)
    assert len(run.events("schedule_kept") + run.events("behind_schedule")) == 1


def test_a_trace_replays_its_times_and_ends_the_test(tmp_path: Path) -> None:
    trace = tmp_path / "mooncake.jsonl"
    times_ms = [0, 0, 40, 90, 100, 350, 400, 410, 700, 1200] * 3
    times_ms = [ms + 1500 * (i // 10) for i, ms in enumerate(times_ms)]
    trace.write_bytes(
        b"".join(orjson.dumps({"timestamp": ms, "input_length": 9}) + b"\n" for ms in times_ms)
    )
    run = locust(tmp_path / "run", "-u", "2", *FAST, "--trace", str(trace), *CHAT)
    assert run.returncode == 0, run.output[-3000:]
    assert "The trace is over: 30 arrivals sent" in run.output
    assert _offsets(run.requests()) == pytest.approx(list(trace_offsets(trace)), abs=1e-4)
    assert "No --run-time given: the test ends when the trace does" in run.output


def test_a_starved_client_is_flagged_behind_schedule(tmp_path: Path) -> None:
    hog = str(ROOT / "tests" / "scenarios" / "programs" / "hog_users.py")
    run = locust(
        tmp_path,
        "-u",
        "2",
        "-t",
        "4s",
        *FAST,
        "--rate",
        "50",
        "ChatUser",
        "CPUHog",
        locustfiles=f"scenarios/,{hog}",
    )
    assert run.returncode == 0, run.output[-3000:]
    [flag] = run.events("behind_schedule")
    assert flag["behind"] and flag["lag_p99_s"] > 0.1 > flag["limit_s"]
    assert "Behind schedule: schedule lag p50" in run.output
    lags = [line["schedule_lag_s"] for line in run.requests()]
    assert max(lags) > 0.1
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["events"]["counts"]["behind_schedule"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "5", "--trace", "x.jsonl"], "is not a file"),
        (["--rate", "5", "--burstiness", "0.5"], "needs arrival gamma"),
        (["--arrival", "gamma"], "give --rate"),
        (["--rate", "5", "--load-shape", "ramp"], "drop --load-shape"),
        (["--rate", "0"], "must be above 0"),
    ],
)
def test_impossible_arrival_options_are_refused(tmp_path: Path, args: list, message: str) -> None:
    run = locust(tmp_path, "-t", "1s", *args, timeout=30)
    assert run.returncode == 2
    assert message in run.output
