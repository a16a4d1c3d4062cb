"""Generators: schema validity, determinism, uniqueness, consistency and production sizing."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import orjson
import pytest

import generators
from generators import candidates, writers
from generators._pools import slug
from generators.candidates import CandidateBuilder

# The team's files: candidates-batch-N.json and their sizes in bytes (as `ls -lh` showed them).
PRODUCTION_SIZES = {10: 91_000, 100: 822_000, 1_000: 7_700_000, 5_000: 41_000_000}


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "batch.json"
    generators.write_dataset(path, 1_000, workers=2, chunk_size=250)
    return path


@pytest.mark.parametrize("fmt", generators.FORMATS)
def test_every_format_is_schema_valid(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / generators.default_filename(120, fmt)
    info = generators.write_dataset(path, 120, fmt=fmt, workers=2, chunk_size=50)
    assert info.count == 120 and info.bytes == path.stat().st_size
    report = generators.validate_file(path, workers=2)
    assert report.format == fmt
    assert report.count == 120
    assert report.errors == [] and report.ok


def test_whole_batch_document_validates_against_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "small.json"
    generators.write_dataset(path, 20)
    document = json.loads(path.read_text())
    errors = list(generators.validator().iter_errors(document))
    assert errors == []
    assert document["schema_version"] == generators.SCHEMA_VERSION
    assert len(document["candidates"]) == document["candidate_count"] == 20


def test_bytes_identical_for_any_worker_count_and_chunking(tmp_path: Path) -> None:
    digests = set()
    for workers, chunk in ((1, 1_000), (2, 250), (2, 333), (3, 97)):
        info = generators.write_dataset(
            tmp_path / f"w{workers}-{chunk}.jsonl",
            1_000,
            fmt="jsonl",
            seed=7,
            workers=workers,
            chunk_size=chunk,
        )
        digests.add(info.sha256)
    assert len(digests) == 1


def test_record_depends_only_on_seed_and_index(batch: Path) -> None:
    candidates = list(generators.read_candidates(batch))
    assert candidates[637] == generators.candidate(637)
    assert generators.candidate(637, seed=1) != candidates[637]
    # generated out of order, record i is still record i
    builder = CandidateBuilder(0)
    assert [builder.build(i) for i in (999, 3, 500)] == [candidates[i] for i in (999, 3, 500)]


def test_ids_and_emails_are_unique_and_people_vary(batch: Path) -> None:
    candidates = list(generators.read_candidates(batch))
    assert len({c["id"] for c in candidates}) == len(candidates)
    assert len({c["contact"]["email"] for c in candidates}) == len(candidates)
    assert len({c["summary"] for c in candidates}) == len(candidates)
    assert len({c["resume_text"] for c in candidates}) == len(candidates)
    # no single name dominates a batch
    names = Counter(c["name"]["full"] for c in candidates)
    assert names.most_common(1)[0][1] <= 5


def test_contact_data_uses_reserved_domains_only(batch: Path) -> None:
    for c in generators.read_candidates(batch):
        domain = c["contact"]["email"].rsplit("@", 1)[1]
        assert domain in ("example.com", "example.org", "example.net")
        for url in filter(None, c["links"].values()):
            host = url.split("/")[2]
            assert host.endswith((".example.com", ".example.org", ".example.net")), url
        if c["location"]["country"] == "United States":
            assert "-555-01" in c["contact"]["phone"]  # the reserved fictional range


def _months(text: str) -> int:
    year, month = text.split("-")
    return int(year) * 12 + int(month) - 1


def test_profiles_are_internally_consistent(batch: Path) -> None:
    for c in generators.read_candidates(batch):
        roles = list(reversed(c["experience"]))  # oldest first
        worked = 0
        previous_end = None
        for role in roles:
            start = _months(role["start_date"])
            end = _months(role["end_date"]) if role["end_date"] else _months("2026-01")
            assert start < end or (role["current"] and start <= end)
            if previous_end is not None:
                assert start >= previous_end, "roles overlap"
            previous_end = end
            worked += end - start
        assert c["years_experience"] == pytest.approx(worked / 12, abs=0.1)
        assert sum(r["current"] for r in roles) <= 1
        assert (c["current_title"] is not None) == roles[-1]["current"]
        career_start_year = int(roles[0]["start_date"][:4])
        for edu in c["education"]:
            assert edu["start_year"] < edu["end_year"] <= career_start_year
        for skill in c["skills"]:
            assert skill["years"] <= max(c["years_experience"], 0.1) + 1e-9
        salary = c["salary_expectation"]
        assert salary["min"] < salary["max"]
        assert c["applied_at"] <= generators.DEFAULT_AS_OF


@pytest.mark.parametrize("seed", [0, 2])
def test_sizes_match_the_production_files_within_ten_percent(tmp_path: Path, seed: int) -> None:
    for n, production_bytes in PRODUCTION_SIZES.items():
        path = tmp_path / f"candidates-batch-{n}.json"
        info = generators.write_dataset(path, n, seed=seed, workers=2)
        assert abs(info.bytes / production_bytes - 1) <= 0.10, (n, info.bytes)


def test_requests_are_the_same_from_every_format(tmp_path: Path) -> None:
    requests = {}
    for fmt in generators.FORMATS:
        path = tmp_path / generators.default_filename(30, fmt)
        generators.write_dataset(path, 30, fmt=fmt, seed=3)
        requests[fmt] = list(generators.iter_requests(path))
    assert requests["json"] == requests["jsonl"]
    for (id_a, body_a), (id_b, body_b) in zip(
        requests["json"], requests["openai-batch"], strict=True
    ):
        assert id_a == id_b
        assert body_a["messages"] == body_b["messages"]
        assert body_a["model"] == body_b["model"] == generators.DEFAULT_MODEL
    system, user = requests["json"][0][1]["messages"]
    assert "EVALUATION CRITERIA" in system["content"]
    assert orjson.loads(user["content"])["id"] == requests["json"][0][0]


def test_reads_a_pretty_printed_production_style_file(tmp_path: Path, batch: Path) -> None:
    document = orjson.loads(batch.read_bytes())
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(document, indent=2))
    assert generators.detect_format(pretty) == "json"
    assert generators.read_header(pretty)["job"] == document["job"]
    assert next(iter(generators.read_candidates(pretty))) == document["candidates"][0]


def test_validate_reports_errors_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    good = [generators.candidate(i) for i in range(5)]
    broken = dict(good[1], years_experience="ten")
    del broken["skills"]
    lines = [good[0], broken, good[2], good[2], good[4]]
    path.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in lines))
    report = generators.validate_file(path)
    assert report.count == 5
    assert report.error_count == 1 and "cand-0000001" in report.errors[0]
    assert report.duplicate_ids == 1 and report.duplicate_emails == 1
    assert not report.ok


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    path.write_text("previous content")

    def fail_midway(_count: int) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        generators.write_dataset(path, 3_000, workers=2, chunk_size=1_000, progress=fail_midway)
    assert path.read_text() == "previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["batch.json"]


@pytest.mark.parametrize("locale", ["en_US", "ja_JP", "de_DE"])
def test_records_are_exactly_what_orjson_writes(locale: str) -> None:
    # build_json assembles JSON text from pieces escaped once; it must be orjson's own output
    builder = CandidateBuilder(0, locale)
    for i in range(300):
        data = builder.build_json(i)
        assert orjson.dumps(orjson.loads(data)) == data


def test_pool_values_are_escaped_wherever_they_appear(monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = ('Zoë "Z" O\'Neil', "back\\slash", "two\nlines", "tab\tand\x07bell", "東京", "a/b")
    base = candidates.pools(0, "en_US")
    tricky = dataclasses.replace(
        base,
        first_names=hostile,
        last_names=hostile[::-1],
        first_slugs=tuple(map(slug, hostile)),
        last_slugs=tuple(map(slug, hostile[::-1])),
        cities=hostile,
        companies=hostile,
        streets=hostile,
        regions=hostile,
    )
    monkeypatch.setattr(candidates, "pools", lambda seed, locale: tricky)
    candidates._tables.cache_clear()
    try:
        builder = CandidateBuilder(0)
        validator = generators.validator()
        for i in range(200):
            data = builder.build_json(i)
            record = orjson.loads(data)
            assert orjson.dumps(record) == data
            name = record["name"]
            assert name["first"] in hostile and name["full"] == f"{name['first']} {name['last']}"
            assert record["resume_text"].startswith(f"{name['full'].upper()}\n")
            assert record["experience"][0]["company"] in hostile
            assert not list(validator.iter_errors(_as_batch(record)))
    finally:
        candidates._tables.cache_clear()


def _as_batch(record: dict) -> dict:
    header = generators.writers.batch_header(1, 0, "en_US", generators.DEFAULT_AS_OF, "m", 64)
    return {**header, "candidates": [record]}


def _refuse_direct_writes(real):
    def pwrite_all(fd: int, data, offset: int) -> None:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, data, offset)

    return pwrite_all


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux-only")
@pytest.mark.parametrize("io", ["direct", "page-cache", "direct-refused"])
def test_parts_and_io_paths_give_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, io: str
) -> None:
    reference = generators.write_dataset(tmp_path / "ref.jsonl", 600, fmt="jsonl", seed=4)
    # parts of ~40 KB: several per chunk, and block edges at every part boundary
    monkeypatch.setattr(writers, "PART_BYTES", 40_000)
    if io == "page-cache":
        monkeypatch.setattr(writers, "_open_direct", lambda path: None)
    if io == "direct-refused":
        monkeypatch.setattr(writers, "_pwrite_all", _refuse_direct_writes(writers._pwrite_all))
    for workers, chunk in ((1, 600), (2, 37), (3, 100)):
        path = tmp_path / f"{io}-{workers}-{chunk}.jsonl"
        info = generators.write_dataset(
            path, 600, fmt="jsonl", seed=4, workers=workers, chunk_size=chunk
        )
        assert info.sha256 == reference.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert info.bytes == reference.bytes == path.stat().st_size
