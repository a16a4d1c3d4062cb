"""The memory model's figures (issue 16), each measured in this run through `harness scale`.

Run: .venv/bin/python benchmarks/bench_memory.py [--n 1000] [--curve-n 8000]

1. preemption: the `vllm` profile with its KV pool undersized (gpu_memory_utilization 0.55,
   context_limit 6000) preempts (vllm:num_preemptions_total > 0); the default pool, 16 in
   flight, does not.
2. prefix cache: on candidate prompts that share a job, the share of the cacheable prefix
   tokens (the job's system prompt, in whole 16-token blocks) served from the cache (>= 90%);
   the token hit rate vLLM reports (hits / prompt tokens) is printed beside it.
3. time compression: the simulated-VRAM curve of the demo's memory model (a context per job,
   a leak, fragmentation) at --speed 100 and --speed 1000, aligned on simulated time and
   averaged over windows of 4 samples of the faster run (0.5 s of wall time is 8.3 simulated
   minutes at --speed 1000, a trim period many times over), correlate (Pearson r >= 0.95);
   sample by sample too.
Exits 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from generators.readers import iter_requests
from harness.server.memory import BLOCK_TOKENS, shared_prefix

ROOT = Path(__file__).resolve().parents[1]
VLLM = ["--server-arg=--profile=llama3.1-8b-16gb-vllm"]
UNDERSIZED = [
    "--server-arg=--set=gpu_memory_utilization=0.55",
    "--server-arg=--set=context_limit=6000",
]
DEMO_MEMORY = [  # the demo's memory model (Makefile), at a leak that stays under the VRAM
    "--server-arg=--context-per-job",
    "--server-arg=--vram-warning=0.875",
    "--server-arg=--leak-mb-per-1k-requests=400",
    "--server-arg=--fragmentation=0.0003",
]
SAMPLE_INTERVAL_S = 0.5  # the embedded server's sampling, in wall seconds
SAMPLES_PER_WINDOW = 4  # a window holds this many samples of the faster run


def scale(run_dir: Path, n: int, speed: float, extra: list[str], cache: Path) -> dict:
    """One `harness scale` run; its manifest."""
    command = [sys.executable, "-m", "harness", "scale", "--n", str(n), "--speed", str(speed)]
    command += ["--run-dir", str(run_dir), "--cache-dir", str(cache), "--no-report", *extra]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"scale failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return orjson.loads((run_dir / "manifest.json").read_bytes())


def server_samples(run_dir: Path) -> list[dict]:
    with open(run_dir / "samples.jsonl", "rb") as lines:
        return [row for row in map(orjson.loads, lines) if row.get("source") == "server"]


def last_counter(run_dir: Path, name: str) -> float:
    return max((row.get(name) or 0.0 for row in server_samples(run_dir)), default=0.0)


def cacheable_tokens(dataset: str) -> int:
    """The prefix tokens a perfect cache could serve: each prompt's shared system part in
    whole blocks, the first prompt of each job excluded (it fills the cache)."""
    total, seen = 0, set()
    for _, body in iter_requests(dataset):
        messages = [(m["role"], m["content"]) for m in body["messages"]]
        prefix = shared_prefix(messages)
        if prefix is None:
            continue
        key, tokens = prefix
        if key in seen:
            total += tokens // BLOCK_TOKENS * BLOCK_TOKENS
        seen.add(key)
    return total


def vram_curve(run_dir: Path, speed: float) -> list[tuple[float, float]]:
    """(simulated seconds since the first sample, simulated VRAM bytes)."""
    rows = [r for r in server_samples(run_dir) if r.get("sim_vram_bytes") is not None]
    start = rows[0]["t"]
    return [((r["t"] - start) * speed, r["sim_vram_bytes"]) for r in rows]


def binned(curve: list[tuple[float, float]], width: float) -> dict[int, float]:
    bins: dict[int, list[float]] = {}
    for t, value in curve:
        bins.setdefault(int(t // width), []).append(value)
    return {k: statistics.fmean(v) for k, v in bins.items()}


def at(curve: list[tuple[float, float]], t: float) -> float:
    """The curve's value at simulated time t (the latest sample at or before it)."""
    value = curve[0][1]
    for when, sample in curve:
        if when > t:
            break
        value = sample
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="candidates for figures 1 and 2")
    parser.add_argument("--curve-n", type=int, default=8000, help="candidates for figure 3")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    cache = work / "datasets"
    failures = []
    try:
        small = scale(work / "undersized", args.n, 100, [*VLLM, *UNDERSIZED], cache)
        preempted = last_counter(work / "undersized", "num_preemptions_total")
        default = scale(work / "default", args.n, 100, [*VLLM, "--concurrency", "16"], cache)
        calm = last_counter(work / "default", "num_preemptions_total")
        ok = preempted > 0
        failures += [] if ok else ["preemption"]
        print(
            f"{'PASS' if ok else 'FAIL'} preemption: {preempted:.0f} preemptions with the pool "
            f"undersized (gpu_memory_utilization 0.55, context_limit 6000), {calm:.0f} with the "
            f"default pool at 16 in flight ({args.n:,} candidates each; target > 0 undersized)"
        )
        hits = last_counter(work / "default", "prefix_cache_hits_total")
        queries = last_counter(work / "default", "prefix_cache_queries_total")
        possible = cacheable_tokens(default["dataset"]["path"])
        share = hits / possible if possible else 0.0
        ok = share >= 0.90
        failures += [] if ok else ["prefix cache"]
        print(
            f"{'PASS' if ok else 'FAIL'} prefix cache: {hits:,.0f} of {possible:,.0f} cacheable "
            f"prefix tokens served from the cache ({share:.1%}; target >= 90%); token hit rate "
            f"{hits / queries if queries else 0:.1%} of {queries:,.0f} prompt tokens (the job "
            f"is that share of a candidate prompt)"
        )
        del small

        curves = {}
        for speed in (100, 1000):
            story = scale(work / f"curve-{speed}", args.curve_n, speed, DEMO_MEMORY, cache)
            curves[speed] = vram_curve(work / f"curve-{speed}", speed)
            simulated = story.get("simulated") or {}
            print(
                f"  --speed {speed}: {simulated.get('hours')} simulated hours in "
                f"{simulated.get('wall_s')} s of wall time, {len(curves[speed])} VRAM samples"
            )
        window = SAMPLES_PER_WINDOW * SAMPLE_INTERVAL_S * 1000  # simulated seconds
        slow, fast = binned(curves[100], window), binned(curves[1000], window)
        common = sorted(set(slow) & set(fast))
        r_binned = statistics.correlation([slow[k] for k in common], [fast[k] for k in common])
        grid = [t for t, _ in curves[1000] if t <= min(curves[100][-1][0], curves[1000][-1][0])]
        r_samples = statistics.correlation(
            [at(curves[100], t) for t in grid], [at(curves[1000], t) for t in grid]
        )
        ok = r_binned >= 0.95
        failures += [] if ok else ["time compression"]
        low = min(v for _, v in curves[100]) / 2**30
        high = max(v for _, v in curves[100]) / 2**30
        print(
            f"{'PASS' if ok else 'FAIL'} time compression: simulated VRAM at --speed 100 vs "
            f"1000 ({args.curve_n:,} candidates, {low:.1f}-{high:.1f} GiB): r = {r_binned:.3f} "
            f"over {len(common)} means of {window / 60:.0f} simulated minutes (target >= 0.95), "
            f"r = {r_samples:.3f} sample by sample ({len(grid)} samples)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
