"""An OOM nobody injected: the embedded server leaks until an allocation no longer fits, dies of
SIGKILL by itself at the request the memory model predicts, and the run still ends exactly once."""

from __future__ import annotations

import io
from pathlib import Path

import orjson

from harness.rundir import read_jsonl
from harness.scale import ScaleConfig, run_scale
from harness.scale.story import trim_counts
from harness.server.memory import blocks_for
from harness.server.simulator import PROFILES

PROFILE = PROFILES["qwen2.5-0.5b-1.5gb"]
LEAK_MB_PER_1K = 30_000  # 30 MB per finished request
N = 16


def _predicted_death(results: dict[str, tuple[int, int]], order: list[str]) -> int:
    """The 1-based request that cannot fit: every earlier one left its leak behind, and a request
    needs its prompt's blocks plus one prefill chunk's activations, then its whole sequence's
    blocks (the simulator's arithmetic, seed kind, no context)."""
    p = PROFILE
    room = p.vram_total_bytes - p.weights_bytes - p.runtime_overhead_bytes
    leak = int(LEAK_MB_PER_1K * 1_000_000 / 1000)
    for i, custom_id in enumerate(order):
        prompt, output = results[custom_id]
        prefill = blocks_for(prompt) * p.block_bytes
        prefill += min(prompt, p.prefill_chunk_tokens) * p.activation_bytes_per_token
        need = max(prefill, blocks_for(prompt + output) * p.block_bytes)
        if i * leak + need > room:
            return i + 1
    raise AssertionError("the model predicts no OOM for this dataset")


def test_the_server_dies_of_its_own_oom_at_the_predicted_request(tmp_path: Path):
    config = ScaleConfig(
        n=N,
        concurrency=1,  # one request at a time: the dataset's order is the server's
        speed=1000.0,
        model=PROFILE.model,
        server_args=(
            f"--profile={PROFILE.name}",
            f"--leak-mb-per-1k-requests={LEAK_MB_PER_1K}",
        ),
        runs_root=str(tmp_path),
        cache_dir=str(tmp_path / "datasets"),
        report=False,
        sample_interval=0.1,
        ready_timeout_s=30.0,
    )
    outcome = run_scale(config, out=io.StringIO())
    run_dir = outcome.run_dir
    assert outcome.ok and outcome.verification["lost"] == outcome.verification["duplicated"] == 0
    results: dict[str, tuple[int, int]] = {}
    for line in read_jsonl(run_dir / "results.jsonl"):
        usage = line["response"]["body"]["usage"]
        results[line["custom_id"]] = (usage["prompt_tokens"], usage["completion_tokens"])
    order = sorted(results)
    predicted = _predicted_death(results, order)
    assert 2 < predicted < N

    deaths = [e for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == "exited"]
    ooms = [e for e in deaths if e["cause"] == "oom_kill"]
    assert len(ooms) == 1 and ooms[0]["injected"] is False
    assert "CUDA out of memory" in ooms[0]["oom_line"]
    assert not [e for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == "fault_injected"]
    attempts = list(read_jsonl(run_dir / "requests.jsonl"))
    first_failure = next(a for a in attempts if not a["ok"])
    assert first_failure["id"] == order[predicted - 1]
    assert sum(1 for a in attempts if a["ok"] and a["t_end"] <= ooms[0]["t"]) == predicted - 1

    story = outcome.simulated
    (oom,) = story["ooms"]
    assert oom["injected"] is False and oom["after_requests"] == predicted - 1
    assert story["speed"] == 1000.0 and 0 <= oom["hour"] <= story["hours"]
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert manifest["simulated"] == story and manifest["outcome"]["oom_kills"] == 1


def test_trims_add_up_across_a_restart():
    periodic, vram = 'context_trims_total{reason="periodic"}', 'context_trims_total{reason="vram"}'
    samples = [
        {"context_trims_total": 2.0},  # one reason so far: scraped without its label
        {periodic: 5.0, vram: 1.0},
        {"context_trims_total": 1.0},  # a new server lifetime
        {periodic: 3.0, vram: 0.0, "sim_vram_bytes": 1.0},
        {"sim_vram_bytes": 1.0},
    ]
    assert trim_counts(samples) == {"total": 9, "by_reason": {"periodic": 8, "vram": 1}}
    # a death between two samples starts the counters again, even where they did not fall
    timed = [{"t": 1.0, periodic: 2.0, vram: 0.0}, {"t": 3.0, periodic: 4.0, vram: 0.0}]
    assert trim_counts(timed, deaths=[2.0]) == {"total": 6, "by_reason": {"periodic": 6, "vram": 0}}
