"""Generator figures: 170K production batch wall time, ratio to naive Faker, flat peak RSS.

Run: .venv/bin/python benchmarks/bench_gen.py [--n 170000] [--workers 2]
Prints the rate of `harness gen` next to naive per-record Faker generation of the same profile
shape measured in the same run, peak RSS at two sizes, and a worker-count determinism check.

The naive baseline runs in rounds, half before and half after `harness gen`: on a shared machine
whose speed drifts, its rate over all rounds stands for the moment gen ran, and the ratio to its
fastest round is printed too (any doubt goes to the baseline). A second ratio compares CPU time
per record (all of gen's processes summed), which does not depend on the number of cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import orjson
from faker import Faker

import generators


def naive_candidate(fake: Faker, i: int) -> dict:
    """The same profile shape, built the obvious way: one Faker call per field."""
    roles = []
    for _ in range(fake.random_int(1, 6)):
        start = fake.date_between("-15y", "-1y")
        roles.append(
            {
                "title": fake.job(),
                "company": fake.company(),
                "location": f"{fake.city()}, {fake.country()}",
                "employment_type": "full_time",
                "start_date": start.strftime("%Y-%m"),
                "end_date": fake.date_between(start, "today").strftime("%Y-%m"),
                "current": False,
                "description": fake.paragraph(nb_sentences=5),
                "highlights": [fake.sentence(nb_words=18) for _ in range(fake.random_int(2, 4))],
                "skills_used": [fake.word(), fake.word()],
            }
        )
    record = {
        "id": f"cand-{i:07d}",
        "name": {"first": fake.first_name(), "last": fake.last_name(), "full": fake.name()},
        "contact": {
            "email": fake.email(domain="example.com"),
            "phone": fake.phone_number(),
            "address": fake.address(),
        },
        "location": {"city": fake.city(), "region": fake.state(), "country": fake.country()},
        "headline": fake.job(),
        "summary": fake.paragraph(nb_sentences=5),
        "current_title": fake.job(),
        "current_company": fake.company(),
        "years_experience": fake.random_int(1, 30),
        "skills": [
            {"name": fake.word(), "level": "advanced", "years": fake.random_int(1, 10)}
            for _ in range(fake.random_int(8, 18))
        ],
        "experience": roles,
        "education": [
            {
                "institution": f"University of {fake.city()}",
                "degree": "Bachelor of Science",
                "field": fake.word(),
                "start_year": int(fake.year()),
                "end_year": int(fake.year()),
            }
        ],
        "certifications": [{"name": fake.catch_phrase(), "issuer": fake.company(), "year": 2020}],
        "languages": [{"language": fake.language_name(), "proficiency": "native"}],
        "links": {"linkedin": fake.url(), "github": fake.url(), "portfolio": None},
        "availability": {"status": "immediately", "notice_period_days": 30},
        "salary_expectation": {"currency": "USD", "min": fake.random_int(40, 90) * 1000},
        "work_authorization": {"country": fake.country(), "status": "citizen"},
        "source": "job_board",
        "applied_at": fake.iso8601(),
        "screening_answers": [{"question": fake.sentence(), "answer": fake.paragraph()}],
    }
    record["resume_text"] = "\n".join(
        [fake.name(), fake.paragraph(nb_sentences=8)]
        + [
            f"{r['title']} - {r['company']}\n{r['description']}\n" + "\n".join(r["highlights"])
            for r in roles
        ]
        + [fake.paragraph(nb_sentences=6), ", ".join(fake.words(nb=20))]
    )
    return record


class NaiveRound(NamedTuple):
    rate: float  # candidates per second, wall clock
    cpu: float  # CPU seconds per candidate
    bytes: float  # JSON bytes per candidate


def naive_round(count: int) -> NaiveRound:
    """One round of `count` naive records (the same records every round)."""
    fake = Faker("en_US")
    fake.seed_instance(0)
    started, cpu = time.perf_counter(), time.process_time()
    total = sum(len(orjson.dumps(naive_candidate(fake, i))) for i in range(count))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return NaiveRound(count / elapsed, cpu / count, total / count)


class GenRun(NamedTuple):
    seconds: float  # wall clock of write_dataset
    cpu: float  # CPU seconds of write_dataset, this process and its workers
    peak: int  # peak RSS bytes of the largest process


def gen_in_subprocess(n: int, workers: int, out: Path) -> GenRun:
    """Wall time, CPU time and peak RSS of `harness gen` in a fresh process."""
    code = (
        "import resource, sys, time, generators;"
        "R = resource;"
        "cpu = lambda: sum(R.getrusage(w).ru_utime + R.getrusage(w).ru_stime"
        " for w in (R.RUSAGE_SELF, R.RUSAGE_CHILDREN));"
        "c, t = cpu(), time.perf_counter();"
        f"generators.write_dataset({str(out)!r}, {n}, workers={workers});"
        "print(time.perf_counter() - t, cpu() - c);"
        "own = R.getrusage(R.RUSAGE_SELF).ru_maxrss;"
        "kids = R.getrusage(R.RUSAGE_CHILDREN).ru_maxrss;"
        "print(max(own, kids) * 1024)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    seconds, cpu, peak = result.stdout.split()
    return GenRun(float(seconds), float(cpu), int(peak))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=170_000)
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--naive", type=int, default=150, help="naive records per round")
    parser.add_argument("--naive-rounds", type=int, default=4, help="half before, half after")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        out = Path(tmp)
        before = args.naive_rounds // 2
        rounds = [naive_round(args.naive) for _ in range(before)]
        gen = gen_in_subprocess(args.n, args.workers, out / "big.json")
        rounds += [naive_round(args.naive) for _ in range(args.naive_rounds - before)]
        baseline = len(rounds) / sum(1 / r.rate for r in rounds)  # all rounds' records / time
        baseline_cpu = sum(r.cpu for r in rounds) / len(rounds)
        fastest = max(r.rate for r in rounds)
        print(
            f"naive Faker per record: {baseline:,.0f} candidates/s, {baseline_cpu * 1e3:.2f} ms "
            f"CPU each ({len(rounds)} rounds of {args.naive}, {before} before and "
            f"{len(rounds) - before} after harness gen: {min(r.rate for r in rounds):,.0f}-"
            f"{fastest:,.0f}/s; {rounds[0].bytes:,.0f} B each)"
        )
        size = (out / "big.json").stat().st_size
        rate = args.n / gen.seconds
        cpu = gen.cpu / args.n
        print(
            f"harness gen --n {args.n} (json, {args.workers} workers): {gen.seconds:.2f} s, "
            f"{rate:,.0f} candidates/s, {size / 1e9:.2f} GB, {size / args.n:,.0f} B each, "
            f"{cpu * 1e6:.0f} us CPU each (all processes)"
        )
        print(
            f"ratio vs naive Faker: {rate / baseline:,.0f}x (goal >= 100x; "
            f"{rate / fastest:,.0f}x against its fastest round); "
            f"{baseline_cpu / cpu:,.0f}x by CPU time per record"
        )
        print(f"goal 170K in <= 7 s on 2 cores: {'met' if gen.seconds <= 7 else 'NOT met'}")
        (out / "big.json").unlink()

        small_n = max(args.n // 17, 1000)
        small_peak = gen_in_subprocess(small_n, args.workers, out / "small.json").peak
        print(
            f"peak RSS: {small_peak / 1e6:.0f} MB at N={small_n:,}, {gen.peak / 1e6:.0f} MB at "
            f"N={args.n:,} (goal <= 200 MB, flat): growth {(gen.peak - small_peak) / 1e6:+.0f} MB"
        )
        check_n = 20_000
        digests = set()
        for workers in (1, 2):
            generators.write_dataset(
                out / f"w{workers}.jsonl", check_n, fmt="jsonl", workers=workers
            )
            digests.add(sha256(out / f"w{workers}.jsonl"))
        print(f"--workers 1 and 2 byte-identical over {check_n:,} records: {len(digests) == 1}")
    print(f"(ru_maxrss of this benchmark: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KB)")


if __name__ == "__main__":
    main()
