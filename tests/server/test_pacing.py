"""The reference server's pacer: sleepers wake at their deadlines, in order, never early."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from harness.server import pacing
from harness.server.pacing import Pacer


async def _sleep_all(pacer: Pacer, deadlines: list[float]) -> list[tuple[float, float]]:
    """(deadline, woken at) for sleepers started together, in the order they woke."""
    woken: list[tuple[float, float]] = []

    async def sleeper(deadline: float) -> None:
        await pacer.sleep_until(deadline)
        woken.append((deadline, time.monotonic()))

    await asyncio.gather(*(sleeper(d) for d in deadlines))
    return woken


@pytest.mark.parametrize("timerfd", [True, False], ids=["timerfd", "loop-sleep"])
def test_sleepers_wake_in_deadline_order_and_never_early(timerfd, monkeypatch):
    if not timerfd:
        monkeypatch.setattr(pacing, "_LIBC", None)
    elif pacing._LIBC is None:
        pytest.skip("no timerfd on this platform")
    pacer = Pacer()

    async def main() -> list[tuple[float, float]]:
        start = time.monotonic() + 0.02
        deadlines = [start + 0.003 * ((i * 7) % 40) for i in range(40)]  # shuffled, some tied
        return await _sleep_all(pacer, deadlines)

    woken = asyncio.run(main())
    pacer.close()
    assert len(woken) == 40
    assert all(at >= deadline for deadline, at in woken)
    assert [d for d, _ in woken] == sorted(d for d, _ in woken)


def test_a_passed_deadline_returns_at_once_and_a_cancelled_sleeper_spares_the_others():
    pacer = Pacer()

    async def main() -> tuple[float, list[tuple[float, float]]]:
        before = time.monotonic()
        await pacer.sleep_until(before - 1.0)
        passed = time.monotonic() - before
        doomed = asyncio.create_task(pacer.sleep_until(time.monotonic() + 0.01))
        await asyncio.sleep(0)
        doomed.cancel()
        woken = await _sleep_all(pacer, [time.monotonic() + 0.01, time.monotonic() + 0.02])
        return passed, woken

    passed, woken = asyncio.run(main())
    pacer.close()
    assert passed < 0.5  # no wait for a deadline in the past (a generous bound, not a timing)
    assert len(woken) == 2 and all(at >= d for d, at in woken)


def test_close_wakes_sleepers_and_releases_the_timer():
    pacer = Pacer()

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def main() -> bool:
        sleeper = asyncio.create_task(pacer.sleep_until(time.monotonic() + 3600))
        await asyncio.sleep(0)
        held = open_fds()
        pacer.close()
        await asyncio.wait_for(sleeper, timeout=5)
        return held

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc here")
    before = open_fds()
    held = asyncio.run(main())
    assert open_fds() <= before <= held


def test_a_pacer_rebinds_to_a_new_event_loop():
    pacer = Pacer()
    for _ in range(2):  # the first loop is closed when the second one starts
        woken = asyncio.run(_sleep_all(pacer, [time.monotonic() + 0.005]))
        assert len(woken) == 1 and woken[0][1] >= woken[0][0]
    pacer.close()
