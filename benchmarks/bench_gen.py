"""Generator figures: 170K production batch wall time, ratio to naive Faker, flat peak RSS.

Run: .venv/bin/python benchmarks/bench_gen.py [--n 170000] [--workers 2]
Prints the rate of `harness gen` next to naive per-record Faker generation of the same profile
shape measured in the same run, peak RSS at two sizes, and a worker-count determinism check.
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


def naive_rate(count: int) -> tuple[float, float]:
    fake = Faker("en_US")
    fake.seed_instance(0)
    started = time.perf_counter()
    total = sum(len(orjson.dumps(naive_candidate(fake, i))) for i in range(count))
    elapsed = time.perf_counter() - started
    return count / elapsed, total / count


def gen_in_subprocess(n: int, workers: int, out: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the largest process) of `harness gen` in a fresh process."""
    code = (
        "import resource, sys, time, generators;"
        "t = time.perf_counter();"
        f"generators.write_dataset({str(out)!r}, {n}, workers={workers});"
        "print(time.perf_counter() - t);"
        "own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(max(own, kids) * 1024)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    seconds, peak = result.stdout.split()
    return float(seconds), int(peak)


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
    parser.add_argument("--naive", type=int, default=300, help="records for the naive baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        out = Path(tmp)
        baseline, naive_bytes = naive_rate(args.naive)
        print(f"naive Faker per record: {baseline:,.0f} candidates/s ({naive_bytes:,.0f} B each)")

        seconds, peak = gen_in_subprocess(args.n, args.workers, out / "big.json")
        size = (out / "big.json").stat().st_size
        rate = args.n / seconds
        print(
            f"harness gen --n {args.n} (json, {args.workers} workers): {seconds:.2f} s, "
            f"{rate:,.0f} candidates/s, {size / 1e9:.2f} GB, {size / args.n:,.0f} B each"
        )
        print(f"ratio vs naive Faker: {rate / baseline:,.0f}x (goal >= 100x)")
        print(f"goal 170K in <= 7 s on 2 cores: {'met' if seconds <= 7 else 'NOT met'}")
        (out / "big.json").unlink()

        small_n = max(args.n // 17, 1000)
        _, small_peak = gen_in_subprocess(small_n, args.workers, out / "small.json")
        print(
            f"peak RSS: {small_peak / 1e6:.0f} MB at N={small_n:,}, {peak / 1e6:.0f} MB at "
            f"N={args.n:,} (goal <= 200 MB, flat): growth {(peak - small_peak) / 1e6:+.0f} MB"
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
