"""One timed pass of a client over a dataset, in its own process; bench_driver.py runs it.

    python benchmarks/_drive_once.py KIND URL DATASET N CONCURRENCY RUN_DIR

KIND: `driver` (this tree's ClientDriver in this process), `old-driver` (an older tree's, when
PYTHONPATH puts it first, fed as its API was: parsed bodies, asyncio's loop), `processes-K` (K
driver processes under a ShardPool; CPU counts the pool's and its children's), `pair-K` (K plain
drivers in K processes at once, each on its share, CPU counted after their imports), or
`aiohttp` (a bare loop posting the same bytes, no checkpoint, logs or retries). Prints one JSON
line: requests, seconds, CPU seconds, peak RSS, and which tree's code ran. With
HARNESS_BENCH_CPU set, it (and every process it starts) runs on that CPU alone; with
HARNESS_BENCH_RATE set, the driver kinds send in an open loop at that many requests a second
(Poisson, seed 0; K processes share the one schedule, as `harness scale --rate` does).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import sys
import time

import orjson

PIN_ENV = "HARNESS_BENCH_CPU"  # the CPU this pass (and every process it starts) runs on
RATE_ENV = "HARNESS_BENCH_RATE"  # an open loop at this rate (req/s) instead of a closed one


def main() -> None:
    kind, url, dataset, n, concurrency, run_dir = sys.argv[1:7]
    if os.environ.get(PIN_ENV):
        os.sched_setaffinity(0, {int(os.environ[PIN_ENV])})
    n_requests, workers = int(n), int(concurrency)
    if kind == "aiohttp":
        seconds, cpu = _aiohttp(url, dataset, n_requests, workers)
    elif kind.startswith("processes-"):
        seconds, cpu = _pool(int(kind.split("-")[1]), url, dataset, n_requests, workers, run_dir)
    elif kind.startswith("pair-"):
        seconds, cpu = _pair(int(kind.split("-")[1]), url, dataset, n_requests, workers, run_dir)
    else:
        seconds, cpu = _driver(kind, url, dataset, n_requests, workers, run_dir)
    import harness

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        orjson.dumps(
            {
                "n": n_requests,
                "seconds": seconds,
                "cpu_s": cpu,
                "peak_rss": peak,
                "code": os.path.dirname(os.path.dirname(harness.__file__)),
            }
        ).decode()
    )


def _cpu() -> float:
    """CPU seconds of this process and of its children that have been waited for (getrusage:
    microseconds, where os.times counts 10 ms ticks)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _arrivals():
    """The open loop's schedule when RATE_ENV is set, else None (a closed loop)."""
    rate = os.environ.get(RATE_ENV)
    if not rate:
        return None
    from harness.arrivals import ArrivalSpec  # not in the old tree, which runs closed loops

    return ArrivalSpec(rate=float(rate))


def _pool(processes: int, url: str, dataset: str, n: int, workers: int, run_dir: str):
    from harness.driver.loop import run
    from harness.driver.payloads import request_end
    from harness.driver.shards import ShardPlan, ShardPool

    driver = {"url": url, "concurrency": workers, "health_url": url + "/health/ready"}
    # found before the clock starts: `harness scale` knows it from a generated dataset's size
    end = request_end(dataset, n)
    plan = ShardPlan(
        run_dir=run_dir,
        dataset=dataset,
        n=n,
        shards=processes,
        driver=driver,
        end=end,
        arrivals=_arrivals(),
    )
    started, cpu = time.monotonic(), _cpu()
    stats = run(ShardPool(plan).run())
    seconds, cpu = time.monotonic() - started, _cpu() - cpu
    if stats.ok != n:
        raise SystemExit(f"{processes} processes: {stats.ok} of {n} requests succeeded")
    return seconds, cpu


def _pair(processes: int, url: str, dataset: str, n: int, workers: int, run_dir: str):
    """K plain drivers in K processes at once, each on its share and its part of the
    concurrency, in a run directory of its own, clocks started after their imports: K processes
    with no pool, no progress messages, no shared logs and no start-up, so that `processes-K`
    against this is what sharding itself costs."""
    import subprocess

    from harness.driver.payloads import request_end

    end = str(request_end(dataset, n))
    children = []
    for index in range(processes):
        users = max(1, (workers + processes - 1 - index) // processes)
        command = [sys.executable, __file__, f"share-{index}-{processes}", url, dataset, str(n)]
        command += [str(users), f"{run_dir}-{index}", end]
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE))
    results = [orjson.loads(child.communicate()[0].splitlines()[-1]) for child in children]
    if any(child.returncode for child in children):
        raise SystemExit(f"pair-{processes}: a driver failed")
    return max(r["seconds"] for r in results), sum(r["cpu_s"] for r in results)


def _driver(kind: str, url: str, dataset: str, n: int, workers: int, run_dir: str):
    from harness.driver.checkpoint import Checkpoint
    from harness.driver.client import ClientDriver, DriverConfig
    from harness.rundir import RunDir

    directory = RunDir(run_dir)
    checkpoint = Checkpoint(run_dir)
    share = None
    arrivals = _arrivals()
    if kind == "old-driver":  # the API of the driver before issue 15: parsed bodies, asyncio
        import generators

        requests = itertools.islice(generators.iter_requests(dataset), n)
        run = asyncio.run
    else:
        from harness.driver.loop import run
        from harness.driver.payloads import Share, pending

        if kind.startswith("share-"):  # one of pair-K's drivers: share-INDEX-K, then its end
            _, index, count = kind.split("-")
            share = Share(int(index), int(count), int(sys.argv[7]))
        requests = pending(dataset, n, share=share)
    config = DriverConfig(url=url, concurrency=workers, health_url=url + "/health/ready")
    if arrivals is not None:
        part = arrivals.part(share.index, share.count) if share else arrivals.part(0, 1)
        config.schedule = (offset for _, offset in part)
    driver = ClientDriver(config, directory, checkpoint)
    started, cpu = time.monotonic(), _cpu()
    stats = run(driver.run(requests))
    seconds, cpu = time.monotonic() - started, _cpu() - cpu
    checkpoint.close()
    directory.close()
    if share is None and stats.ok != n:
        raise SystemExit(f"{kind}: {stats.ok} of {n} requests succeeded")
    return seconds, cpu


def _aiohttp(url: str, dataset: str, n: int, workers: int):
    import aiohttp

    from harness.driver.payloads import pending

    bodies = [body for _, body in pending(dataset, n)]  # read first: the loop only posts

    async def bare() -> None:
        connector = aiohttp.TCPConnector(limit=workers)
        headers = {"content-type": "application/json"}
        async with aiohttp.ClientSession(url, connector=connector) as session:
            queue = iter(bodies)

            async def worker() -> None:
                for body in queue:
                    async with session.post(
                        "/v1/chat/completions", data=body, headers=headers
                    ) as response:
                        await response.read()
                        response.raise_for_status()

            await asyncio.gather(*(worker() for _ in range(workers)))

    from harness.driver.loop import run  # the driver's loop (uvloop): the same footing

    started, cpu = time.monotonic(), _cpu()
    run(bare())
    return time.monotonic() - started, _cpu() - cpu


if __name__ == "__main__":
    main()
