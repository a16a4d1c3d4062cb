"""Arrival figures: the schedules' statistics, and how closely real Locust runs keep them.

Run: .venv/bin/python benchmarks/bench_arrivals.py [--rate 50] [--seconds 20] [--rounds 2]

1. Schedules (harness/arrivals.py, pure): 10,000 Poisson arrivals at 50 req/s over five seeds,
   achieved rate within 3% of 50 and inter-arrival CV 1 +- 0.1; gamma with burstiness 0.5, CV
   sqrt(2) +- 10% (vLLM bench's definition: shape B, scale 1/(rate*B), CV 1/sqrt(B)).
2. Locust: open-loop runs of ChatUser against one `harness serve --speed max`, Poisson (A) and
   gamma 0.5 (B) alternating ABBA. The baseline is each run's own schedule: what was actually
   sent is compared with what was due, as ratios (actual/scheduled rate and CV), with the
   schedule lag p50/p99 the client reported.
3. The driver: `harness scale --rate 50` (Poisson, A) and `--arrival gamma --burstiness 0.5`
   (B), ABBA, 3,000 requests each against its embedded server at max speed: the achieved rate
   within 3% of 50 and the inter-arrival CV 1 +- 0.1 (B: sqrt(2) +- 10%), of what was actually
   sent; the ratios to the run's own schedule; the schedule lag p99.
4. Streaming fidelity: `harness scale --stream` at concurrency 1 against `harness serve --speed 1`
   (the default profile: 12 ms inter-token latency, +-15% uniform jitter; 30 ms prefill
   overhead, 0.1 ms a prompt token; every step slowed by attention(t) = 1 + t x KV bytes per
   token / weight bytes for the t tokens it attends to). Time to second token against its
   configured truth (prefill of the request's P prompt tokens x attention(P) + one step at
   attention(P + 1)), and the p50/p99 of every single gap against those of the configured gap
   distribution, 12 ms x attention(P + i) x (1 +- 0.15), worked out exactly over the gaps
   measured: both within 5%.
5. AIPerf (`--aiperf PATH` to its executable, installed in a throwaway venv: `aiperf profile
   --streaming --use-server-token-count`) against the same server with the prompt cost set to
   zero, so prompts of any length take the same 30 ms: its TTFT and ITL beside the driver's.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from harness.arrivals import rate_offsets
from harness.net import free_port
from harness.rundir import read_jsonl
from harness.server.simulator import DEFAULT_PROFILE, PROFILES

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(5)
ARRIVALS = {"poisson": ("poisson", 1.0), "gamma 0.5": ("gamma", 0.5)}


def rate_and_cv(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return len(gaps) / (times[-1] - times[0]), statistics.pstdev(gaps) / statistics.fmean(gaps)


def schedules(rate: float) -> None:
    print(f"schedules: 10,000 arrivals at {rate:g} req/s, seeds {SEEDS.start}-{SEEDS.stop - 1}")
    for label, (arrival, burstiness) in ARRIVALS.items():
        expected_cv = 1 / math.sqrt(burstiness)
        for seed in SEEDS:
            started = time.perf_counter()
            offsets = list(itertools.islice(rate_offsets(rate, arrival, burstiness, seed), 10_001))
            draw_us = (time.perf_counter() - started) / 10_000 * 1e6
            achieved, cv = rate_and_cv(offsets)
            ok = abs(achieved / rate - 1) <= 0.03 and abs(cv / expected_cv - 1) <= 0.1
            print(
                f"  {label:9s} seed {seed}: rate {achieved / rate:.4f}x, CV {cv:.3f} "
                f"({cv / expected_cv:.3f}x of {expected_cv:.3f}), {draw_us:.2f} us per arrival: "
                f"{'PASS' if ok else 'FAIL'}"
            )


@contextmanager
def serve() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        command = [sys.executable, "-m", "harness", "serve", "--port", str(port)]
        server = subprocess.Popen(
            [*command, "--data-dir", data, "--speed", "max"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("harness serve did not start")
                time.sleep(0.05)
            yield url
        finally:
            server.terminate()
            server.wait(10)


def locust_run(url: str, rate: float, label: str, seconds: int, out: Path) -> dict[str, float]:
    arrival, burstiness = ARRIVALS[label]
    command = [sys.executable, "-m", "locust", "-f", "scenarios/", "--headless", "--only-summary"]
    command += ["ChatUser", "--host", url, "--run-dir", str(out), "-u", "2", "-r", "2"]
    command += ["-t", f"{seconds}s", "--rate", str(rate), "--arrival", arrival]
    command += ["--burstiness", str(burstiness), "--max-tokens", "16", "--candidates", "40"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = list(read_jsonl(out / "requests.jsonl"))
    if done.returncode != 0 or not lines or not all(line["ok"] for line in lines):
        raise SystemExit(f"locust run failed ({done.returncode}): {done.stderr[-2000:]}")
    due_rate, due_cv = rate_and_cv([line["scheduled_t"] for line in lines])
    sent_rate, sent_cv = rate_and_cv([line["t"] for line in lines])
    lags = sorted(line["schedule_lag_s"] for line in lines)
    return {
        "n": len(lines),
        "due_rate": due_rate,
        "due_cv": due_cv,
        "rate_ratio": sent_rate / due_rate,
        "cv_ratio": sent_cv / due_cv,
        "lag_p50": lags[len(lags) // 2],
        "lag_p99": lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)],
    }


def locust_fidelity(rate: float, seconds: int, rounds: int) -> None:
    print(f"locust: ChatUser open loop at {rate:g} req/s for {seconds} s, harness serve max speed")
    results: dict[str, list[dict[str, float]]] = {label: [] for label in ARRIVALS}
    with serve() as url, tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            order = list(ARRIVALS) if k % 2 == 0 else list(reversed(ARRIVALS))  # ABBA
            for label in order:
                out = Path(tmp) / f"{label.replace(' ', '-')}-{k}"
                figures = locust_run(url, rate, label, seconds, out)
                results[label].append(figures)
                print(
                    f"  round {k + 1} {label:9s}: {figures['n']} sent; schedule "
                    f"{figures['due_rate']:.2f} req/s CV {figures['due_cv']:.3f}; "
                    "sent/scheduled rate "
                    f"{figures['rate_ratio']:.4f}x, CV {figures['cv_ratio']:.4f}x; lag p50 "
                    f"{figures['lag_p50'] * 1000:.2f} ms, p99 {figures['lag_p99'] * 1000:.2f} ms"
                )
    for label, runs in results.items():
        rate_ratio = statistics.mean(r["rate_ratio"] for r in runs)
        cv_ratio = statistics.mean(r["cv_ratio"] for r in runs)
        p99 = max(r["lag_p99"] for r in runs)
        print(
            f"  {label:9s}: sent/scheduled rate {rate_ratio:.4f}x, CV {cv_ratio:.4f}x, "
            f"worst lag p99 {p99 * 1000:.2f} ms"
        )


def scale(out: Path, *args: str) -> list[dict]:
    command = [sys.executable, "-m", "harness", "scale", "--no-report", "--run-dir", str(out)]
    command += ["--runs-root", str(out.parent / "runs"), *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"harness scale failed ({done.returncode}): {done.stderr[-2000:]}")
    return list(read_jsonl(out / "requests.jsonl"))


def driver_open_loop(rate: float, n: int, rounds: int) -> None:
    print(f"driver: harness scale --rate {rate:g}, {n:,} requests, embedded server at max speed")
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            order = list(ARRIVALS) if k % 2 == 0 else list(reversed(ARRIVALS))  # ABBA
            for label in order:
                arrival, burstiness = ARRIVALS[label]
                out = Path(tmp) / f"{label.replace(' ', '-')}-{k}"
                args = ["--n", str(n), "--rate", str(rate), "--arrival", arrival]
                if arrival == "gamma":
                    args += ["--burstiness", str(burstiness)]
                lines = [x for x in scale(out, *args, "--concurrency", "256") if x["attempt"] == 1]
                sent_rate, sent_cv = rate_and_cv([x["t"] for x in lines])
                due_rate, due_cv = rate_and_cv([x["scheduled_t"] for x in lines])
                lags = sorted(x["schedule_lag_s"] for x in lines)
                p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)]
                expected_cv = 1 / math.sqrt(burstiness)
                ok = abs(sent_rate / rate - 1) <= 0.03 and abs(sent_cv / expected_cv - 1) <= 0.1
                print(
                    f"  round {k + 1} {label:9s}: sent {sent_rate:.2f} req/s "
                    f"({sent_rate / rate:.4f}x of {rate:g}), CV {sent_cv:.3f} "
                    f"({sent_cv / expected_cv:.3f}x of {expected_cv:.3f}); sent/scheduled rate "
                    f"{sent_rate / due_rate:.4f}x, CV {sent_cv / due_cv:.4f}x; lag p99 "
                    f"{p99 * 1000:.2f} ms: {'PASS' if ok else 'FAIL'}"
                )


@contextmanager
def reference_server(*settings: str, speed: str = "1") -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        command = [sys.executable, "-m", "harness", "serve", "--port", str(port), "--data-dir"]
        command += [data, "--speed", speed, *(f"--set={item}" for item in settings)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("harness serve did not start")
                time.sleep(0.05)
            yield url
        finally:
            server.terminate()
            server.wait(10)


PROFILE = PROFILES[DEFAULT_PROFILE]  # what `harness serve` runs with no --profile


def attention(tokens: int) -> float:
    """The server's slowdown from attending to `tokens` of KV (its profile's own figures)."""
    return 1 + tokens * PROFILE.kv_bytes_per_token / PROFILE.weights_bytes


def truth_gap_quantile(requests: list[tuple[int, int]], q: float) -> float:
    """The q-quantile of the gaps the server was configured to make, for requests given as
    (prompt tokens, gaps measured): gap i of a request of P prompt tokens is itl x attention(P + i)
    x (1 + u), u uniform within +-itl_jitter; solved on the mixture's distribution function."""
    bases = [
        PROFILE.itl_s * attention(prompt + i)
        for prompt, count in requests
        for i in range(1, count + 1)
    ]
    width = 2 * PROFILE.itl_jitter

    def share_below(gap: float) -> float:
        return statistics.fmean(
            min(1.0, max(0.0, (gap / base - 1 + PROFILE.itl_jitter) / width)) for base in bases
        )

    low, high = min(bases) * (1 - PROFILE.itl_jitter), max(bases) * (1 + PROFILE.itl_jitter)
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if share_below(middle) < q else (low, middle)
    return (low + high) / 2


def stream_fidelity(n: int) -> None:
    print(f"streaming: {n} requests at concurrency 1, harness serve --speed 1 (truth below)")
    with reference_server() as url, tempfile.TemporaryDirectory() as tmp:
        lines = scale(
            Path(tmp) / "s", "--n", str(n), "--concurrency", "1", "--stream", "--target", url
        )
    lines = [x for x in lines if x["ok"]]
    p = PROFILE
    ratios = sorted(
        x["ttst_s"]
        / (
            p.prefill_overhead_s
            + x["prompt_tokens"] * p.prefill_per_token_s * attention(x["prompt_tokens"])
            + p.itl_s * attention(x["prompt_tokens"] + 1)
        )
        for x in lines
    )
    gaps = sorted(g / 1000 for x in lines for g in x["itl_gaps_ms"])
    ttst = statistics.median(ratios)
    print(
        f"  time to second token: median {ttst:.4f}x its truth (prefill of the prompt + one "
        f"step, each slowed by attention to the KV): {'PASS' if abs(ttst - 1) <= 0.05 else 'FAIL'}"
    )
    for q in (0.5, 0.99):
        measured = gaps[min(len(gaps) - 1, math.ceil(q * len(gaps)) - 1)]
        truth = truth_gap_quantile([(x["prompt_tokens"], len(x["itl_gaps_ms"])) for x in lines], q)
        verdict = "PASS" if abs(measured / truth - 1) <= 0.05 else "FAIL"
        print(
            f"  every gap ({len(gaps):,}) p{q * 100:g}: {measured * 1000:.2f} ms, truth "
            f"{truth * 1000:.2f} ms: {measured / truth:.4f}x: {verdict}"
        )


def aiperf_comparison(aiperf: str, n: int) -> None:
    """Both tools against one server, each beside the truth for its own requests (the prompts
    differ, and the server's steps slow with the context): TTFT, the first decode step (TTST -
    TTFT; AIPerf's `time_to_second_token`: one jittered gap a request, so its median over 40
    requests strays by ~4% from the truth's either way), the per-request ITL and every gap."""
    print(
        f"AIPerf: {aiperf} profile against the same server, prompt cost 0 (TTFT 30 ms), "
        f"{n} requests each"
    )
    with (
        reference_server("prefill_per_token_s=0") as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        ours = [
            x
            for x in scale(
                Path(tmp) / "ours", "--n", str(n), "--concurrency", "1", "--stream", "--target", url
            )
            if x["ok"]
        ]
        home = _offline_tokenizer(aiperf, Path(tmp) / "hf")
        artifacts = Path(tmp) / "aiperf"
        command = [aiperf, "profile", "--model", "llama3.1:8b", "--url", url, "--endpoint-type"]
        command += ["chat", "--streaming", "--use-server-token-count", "--tokenizer", _TOKENIZER]
        command += ["--concurrency", "1", "--request-count", str(n), "--output-tokens-mean"]
        command += ["120", "--synthetic-input-tokens-mean", "200", "--artifact-dir", str(artifacts)]
        env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        exports = sorted(artifacts.rglob("profile_export.jsonl"))
        if done.returncode != 0 or not exports:
            print(
                f"  AIPerf did not complete ({done.returncode}): "
                f"{(done.stderr or done.stdout)[-600:]}"
            )
            return
        theirs = [orjson.loads(line)["metrics"] for line in exports[0].read_bytes().splitlines()]
    theirs = [m for m in theirs if "inter_chunk_latency" in m]

    def value(metrics: dict, key: str) -> Any:
        return metrics[key]["value"]

    sides = {
        "ours": {
            "prompts": [(x["prompt_tokens"], len(x["itl_gaps_ms"])) for x in ours],
            "TTFT": [x["ttft_s"] * 1000 for x in ours],
            "first step": [(x["ttst_s"] - x["ttft_s"]) * 1000 for x in ours],
            "ITL per request": [x["itl_mean_s"] * 1000 for x in ours],
            "every gap": [g for x in ours for g in x["itl_gaps_ms"]],
        },
        "AIPerf": {
            "prompts": [
                (value(m, "usage_prompt_tokens"), len(value(m, "inter_chunk_latency")))
                for m in theirs
            ],
            "TTFT": [value(m, "time_to_first_token") for m in theirs],
            "first step": [value(m, "time_to_second_token") for m in theirs],
            "ITL per request": [value(m, "inter_token_latency") for m in theirs],
            "every gap": [g for m in theirs for g in value(m, "inter_chunk_latency")],
        },
    }
    p = PROFILE
    for side, figures in sides.items():
        prompts = figures["prompts"]
        truths = {
            "TTFT": lambda q: p.prefill_overhead_s * 1000,
            "first step": lambda q, prompts=prompts: (
                statistics.median(p.itl_s * attention(prompt + 1) for prompt, _ in prompts) * 1000
            ),
            "ITL per request": lambda q, prompts=prompts: (
                statistics.median(
                    p.itl_s * statistics.fmean(attention(prompt + i) for i in range(1, count + 1))
                    for prompt, count in prompts
                    if count
                )
                * 1000
            ),
            "every gap": lambda q, prompts=prompts: truth_gap_quantile(prompts, q / 100) * 1000,
        }
        print(
            f"  {side}: {len(prompts)} requests, prompts of "
            f"{statistics.median(x for x, _ in prompts):,.0f} server tokens (median)"
        )
        for name, truth in truths.items():
            cells = []
            for q in (50, 99) if name in ("TTFT", "every gap") else (50,):
                measured = _percentile(figures[name], q)
                expected = truth(q)
                cells.append(
                    f"p{q} {measured:.2f} ms (truth {expected:.2f}, {measured / expected:.3f}x)"
                )
            print(f"    {name}: {'; '.join(cells)}")


_TOKENIZER = "local/tiny-bpe"  # AIPerf needs a tokenizer to make prompts; none can be fetched here


def _offline_tokenizer(aiperf: str, home: Path) -> Path:
    """A 2,000-token byte-level BPE, trained on this repository's docs by AIPerf's own Python
    and laid out as the Hugging Face cache AIPerf reads offline: its prompts need a tokenizer,
    and the built-in one downloads its vocabulary. With --use-server-token-count it only shapes
    prompts; every count is the server's."""
    snapshot = home / "hub" / f"models--{_TOKENIZER.replace('/', '--')}"
    commit = "0" * 40
    (snapshot / "refs").mkdir(parents=True, exist_ok=True)
    (snapshot / "refs" / "main").write_text(commit)
    docs = [str(path) for path in (ROOT / "docs").glob("*.md")]
    script = f"""
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["[UNK]", "<s>", "</s>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
bpe.train_from_iterator([open(p).read() for p in {docs!r}], trainer)
PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                        unk_token="[UNK]").save_pretrained({str(snapshot / "snapshots" / commit)!r})
"""
    python = Path(aiperf).with_name("python")
    subprocess.run([str(python), "-c", script], check=True, capture_output=True)
    return home


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, math.ceil(q / 100 * len(values)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--driver-n", type=int, default=3000)
    parser.add_argument("--stream-n", type=int, default=40)
    parser.add_argument("--aiperf", metavar="PATH", help="AIPerf's executable (optional)")
    parser.add_argument("--only", choices=("schedules", "locust", "driver", "stream", "aiperf"))
    args = parser.parse_args()
    steps = {
        "schedules": lambda: schedules(args.rate),
        "locust": lambda: locust_fidelity(args.rate, args.seconds, args.rounds),
        "driver": lambda: driver_open_loop(args.rate, args.driver_n, args.rounds),
        "stream": lambda: stream_fidelity(args.stream_n),
        "aiperf": lambda: aiperf_comparison(args.aiperf, args.stream_n) if args.aiperf else None,
    }
    for name, step in steps.items():
        if args.only in (None, name):
            step()


if __name__ == "__main__":
    main()
