"""learn -> gen --like round trips on shapes unlike ours, k-anonymity, no PII copied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from unittest import mock

import hypothesis
import jsonschema
import orjson
import pytest
from hypothesis import strategies as st

from generators import read_candidates, write_dataset
from generators.learn import ProfileBuilder, generate, learn_profile, read_sample, sample_pii
from generators.learn.sample import Sample, SampleError
from generators.learn.schema_out import profile_schema

from .samples import STATUSES, orders

ROOT = Path(__file__).resolve().parents[2]


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True
    )


def write_jsonl(path: Path, records: list) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("sample") / "orders.jsonl", orders(400))


@pytest.fixture(scope="module")
def learned(sample_file, tmp_path_factory) -> tuple[Path, Path, dict]:
    out = tmp_path_factory.mktemp("profile")
    result = harness(
        "learn",
        str(sample_file),
        "--out",
        str(out / "p.json"),
        "--emit-schema",
        str(out / "s.json"),
    )
    assert result.returncode == 0, result.stderr
    return out / "p.json", out / "s.json", orjson.loads((out / "p.json").read_bytes())


def kind(profile: dict, *path: str) -> str:
    node = profile["root"]
    for key in path:
        node = node["items"] if key == "*" else node["fields"][key]
    return node["string"]["kind"]


def test_kinds_locale_and_rules_are_learned(learned):
    _, _, profile = learned
    assert profile["locale"] == "de_DE"
    assert kind(profile, "customer", "name", "first") == "first_name"
    assert kind(profile, "customer", "email") == "email"
    assert kind(profile, "customer", "phone") == "phone"
    assert kind(profile, "customer", "address", "street") == "street_address"
    assert kind(profile, "customer", "address", "postal_code") == "postal_code"
    assert kind(profile, "items", "*", "price") == "numeric_string"
    assert kind(profile, "period", "start") == "date"
    assert kind(profile, "note") == "text"
    status = profile["root"]["fields"]["status"]["string"]
    assert {v for v, _ in status["values"]} == set(STATUSES)
    assert 0.3 < profile["root"]["fields"]["coupon"]["presence"] < 0.7
    rules = {(r["rule"], r["object"]) for r in profile["rules"]}
    assert ("date_order", "/period") in rules
    assert ("sorted", "") in rules
    assert ("email_from_name", "/customer") in rules


def test_generated_records_keep_shape_rules_and_schema(learned, tmp_path):
    profile_path, schema_path, profile = learned
    out = tmp_path / "gen.jsonl"
    result = harness(
        "gen",
        "--like",
        str(profile_path),
        "--n",
        "600",
        "--out",
        str(out),
        "--format",
        "jsonl",
        "--schema",
        str(schema_path),
    )
    assert result.returncode == 0, result.stderr
    assert "validate against the schema" in result.stdout
    records = list(read_candidates(out))
    assert len(records) == 600
    validator = jsonschema.Draft202012Validator(orjson.loads(schema_path.read_bytes()))
    assert all(validator.is_valid(r) for r in records)
    derived = 0
    for r in records:
        assert r["period"]["start"] <= r["period"]["end"]
        assert r["events"] == sorted(r["events"])
        assert r["status"] in STATUSES
        float(r["items"][0]["price"]) if r["items"] else None
        name = r["customer"]["name"]
        derived += r["customer"]["email"].startswith(f"{name['first'].lower()}.")
    assert derived > 0.8 * len(records)
    coupons = sum("coupon" in r for r in records) / len(records)
    assert abs(coupons - profile["root"]["fields"]["coupon"]["presence"]) < 0.1


def test_no_sample_pii_string_reaches_profile_or_output(sample_file, tmp_path):
    out = tmp_path / "like.json"
    result = harness("gen", "--like", str(sample_file), "--n", "2000", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "exact match 0.00%" in result.stdout and "near duplicate 0.00%" in result.stdout
    sample = read_sample([sample_file])
    text = out.read_text()
    pii = set()
    for r in sample.records:
        c = r["customer"]
        pii |= {
            c["email"],
            c["phone"],
            c["address"]["street"],
            r["order_id"],
            f"{c['name']['first']} {c['name']['last']}",
        }
    assert [v for v in pii if v in text] == []


def test_k_anonymity_rule(tmp_path):
    records = [{"tag": "common", "text": "alpha beta gamma delta epsilon."} for _ in range(5)]
    records += [{"tag": f"rare{i}", "text": f"alpha beta zeta{i} unique{i}."} for i in range(4)]
    records.append({"tag": "almost", "text": "alpha beta gamma."})
    profile = learn_profile(Sample(records * 1, None, None, None), k=5)
    words = {w for w, _ in profile["text"]["words"]}
    assert {"alpha", "beta"} <= words
    assert not any(w.startswith(("zeta", "unique")) for w in words)
    text = orjson.dumps(profile).decode()
    assert "rare0" not in text and "almost" not in text
    tags = profile["root"]["fields"]["tag"]["string"]
    assert tags.get("values", []) in ([], [["common", 5]])


def test_output_is_identical_for_any_worker_count(learned, tmp_path):
    _, _, profile = learned
    builder = ProfileBuilder(profile, seed=3)
    one = write_dataset(
        tmp_path / "a.jsonl", 450, fmt="jsonl", workers=1, source=builder, chunk_size=50
    )
    three = write_dataset(
        tmp_path / "b.jsonl", 450, fmt="jsonl", workers=3, source=builder, chunk_size=50
    )
    assert one.sha256 == three.sha256
    assert builder.build_json(17) == ProfileBuilder(profile, seed=3).build_json(17)
    assert builder.build_json(17) != ProfileBuilder(profile, seed=4).build_json(17)


def test_pooled_parts_leave_ids_and_texts_per_record(learned):
    """Lists and objects without identifying kinds come from per-seed pools; ids, names and
    scalar text do not, so they stay (nearly) as distinct as independent draws make them."""
    _, _, profile = learned
    builder = ProfileBuilder(profile, seed=5)
    records = [orjson.loads(builder.build_json(i)) for i in range(3000)]
    skus = [item["sku"] for r in records for item in r["items"]]
    notes = [r["note"] for r in records]
    geos = [orjson.dumps(r["customer"]["address"]["geo"]) for r in records]
    assert len(skus) > 4000 and len(set(skus)) > 0.95 * len(skus)  # a pool would cap them
    assert len(set(notes)) > 0.95 * len(notes)
    assert 0.5 * len(geos) < len(set(geos)) < len(geos)  # geo is pooled, and varied
    for note in notes:  # text is cut at a word and ends a sentence
        assert note == "" or (note.endswith(".") and "  " not in note)


def test_names_and_email_one_object_down_are_derived_as_in_the_sample(tmp_path):
    """The built-in candidates: name {first, last, full} and contact {email: first.last.N@...},
    siblings under the record: the full name and the email are learned as derived, and kept."""
    from generators.learn.profile import normalize

    sample = write_dataset(tmp_path / "c.jsonl", 300, fmt="jsonl", seed=4).path
    profile = learn_profile(read_sample([sample]), k=5)
    rules = {(r["rule"], r["object"]): r for r in profile["rules"]}
    assert rules[("full_name", "/name")]["share"] == 1.0
    assert rules[("email_from_name", "")]["style"] == "first.last"
    builder = ProfileBuilder(profile, seed=2)
    made = [orjson.loads(builder.build_json(i)) for i in range(300)]
    full = sum(r["name"]["full"] == f"{r['name']['first']} {r['name']['last']}" for r in made)
    derived = sum(
        r["contact"]["email"].startswith(
            f"{normalize(r['name']['first'])}.{normalize(r['name']['last'])}"
        )
        for r in made
    )
    assert full > 0.95 * len(made) and derived > 0.9 * len(made)
    # drawn unchecked, rewritten by the rules, checked there: no sample's name or email comes out
    written = b"".join(builder.build_json(i) for i in range(3000)).decode()
    people = [orjson.loads(line) for line in sample.read_bytes().splitlines()]
    identifying = {p["name"]["full"] for p in people} | {p["contact"]["email"] for p in people}
    assert [v for v in identifying if v in written] == []


def test_pools_keep_to_their_memory_budget():
    """A list of 200 long items a record: its pool would hold 6,144 such lists (~100 MB), so the
    lists are made per record from pooled items, and building stays small."""
    import random
    import tracemalloc

    rng = random.Random(2)
    vocabulary = [f"word{i}" for i in range(40)]

    def text() -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(12)) + "."

    records = [{"rows": [{"a": text(), "b": text()} for _ in range(200)]} for _ in range(12)]
    profile = learn_profile(Sample(records, None, None, None), k=5)
    tracemalloc.start()
    try:
        builder = ProfileBuilder(profile, seed=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60 << 20
    made = [orjson.loads(builder.build_json(i)) for i in range(20)]
    assert all(len(r["rows"]) >= 100 for r in made)
    assert len({orjson.dumps(r["rows"]) for r in made}) == len(made)


def test_fields_without_vocabulary_are_filled_with_letters():
    """A profile edited to have no vocabulary and an opaque string kind: letters of the
    profile's lengths, not a failure."""
    records = [{"blob": f"x{i:05d}", "note": "alpha beta gamma."} for i in range(20)]
    profile = learn_profile(Sample(records, None, None, None), k=5)
    profile["root"]["fields"]["blob"]["string"] = {"kind": "string", "length": {"counts": {"9": 1}}}
    profile["text"] = {"words": [], "next": {}}
    builder = ProfileBuilder(profile, seed=1)
    made = [orjson.loads(builder.build_json(i)) for i in range(200)]
    assert all(r["blob"].isalpha() and len(r["blob"]) == 9 for r in made)
    assert all(r["note"].isalpha() and len(r["note"]) == len("alpha beta gamma.") for r in made)


def test_openai_batch_takes_the_job_from_the_sample(tmp_path):
    system = "You screen tenants for flat 4B. Answer with one JSON object."
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "m",
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": orjson.dumps(r).decode()},
                ],
            },
        }
        for i, r in enumerate(orders(30))
    ]
    sample = write_jsonl(tmp_path / "batch.jsonl", lines)
    out = tmp_path / "out.openai-batch.jsonl"
    result = harness(
        "gen", "--like", str(sample), "--n", "20", "--format", "openai-batch", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    first = orjson.loads(out.read_bytes().splitlines()[0])
    assert first["body"]["messages"][0]["content"] == system
    assert "customer" in orjson.loads(first["body"]["messages"][1]["content"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b'[{"a": 1}, [1, 2], {"a": 2}]', "records of mixed types"),
        (b'[{"a": 1}, {"a": 2}]', "fewer than k=5"),
        (b"[" + b",".join([b'{"a": ' * 300 + b"1" + b"}" * 300] * 5) + b"]", "more than 64 deep"),
        (b"[" + b",".join([b'{"a": ' + b"[" * 900 + b"]" * 900 + b"}"] * 5) + b"]", "64 deep"),
    ],
)
def test_bad_samples_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    result = harness("learn", str(path), "--out", str(tmp_path / "p.json"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "p.json").exists()


def test_records_pointer_and_batch_documents(tmp_path):
    doc = {"meta": {"v": 1}, "payload": {"rows": orders(12)}}
    path = tmp_path / "doc.json"
    path.write_bytes(orjson.dumps(doc))
    assert len(read_sample([path], "/payload/rows").records) == 12
    assert len(read_sample([path]).records) == 12  # the longest list of objects, found alone
    with pytest.raises(SampleError, match="does not exist"):
        read_sample([path], "/payload/nope")


def test_sample_pii_lists_identifying_values(learned, sample_file):
    _, _, profile = learned
    found = sample_pii(read_sample([sample_file]), profile)
    assert {kind for kind, _ in found} >= {"email", "phone", "first_name", "street_address"}


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(st.text(alphabet=st.characters(max_codepoint=0x17F), max_size=24))
def test_normalize_and_the_filter_hash_match_their_unicode_definition(value):
    """The ASCII fast path gives what the regex form gives, so filters learned before it hold."""
    import hashlib
    import re

    from generators.learn.profile import normalize, pii_hasher

    reference = re.sub(r"[\W_]+", "", value.casefold())
    assert normalize(value) == reference
    keyed = hashlib.blake2b(reference.encode(), key=b"salt", digest_size=8)
    assert pii_hasher(b"salt", 1 << 20)(value) == int.from_bytes(keyed.digest(), "little") % (
        1 << 20
    )


def test_numbers_past_a_floats_range_and_lists_of_mixed_items_are_learned_and_made():
    """Found by fuzzing: 0 and 9e307 (interpolating overflowed to inf, written as null), an
    integer field whose range a float 1e300 stretches past 64 bits, and a list of dated objects
    mixed with strings (the sorted-list rule read every item as an object)."""
    records = [
        {
            "big": [0, 8.98e307 * (1 + i % 2)],
            "count": 7 if i % 3 else 1e300,
            "jobs": [{"start": f"20{10 + i % 9}-01"}, "n/a", {"start": "2009-05"}],
        }
        for i in range(12)
    ]
    profile = orjson.loads(orjson.dumps(learn_profile(Sample(records, None, None, None), k=2)))
    validator = jsonschema.Draft202012Validator(profile_schema(profile))
    builder = ProfileBuilder(profile, seed=4)
    for i in range(300):
        record = orjson.loads(builder.build_json(i))
        assert validator.is_valid(record), next(validator.iter_errors(record)).message
        assert all(isinstance(v, float | int) for v in record["big"] if v is not None)


SMALL_POOLS = {
    "POOL": 8,
    "FREE_POOL": 16,
    "BUCKETS": 2,
    "FREE": 16,
    "POOL_SIZE": 20,
    "_POOL_SIZES": {},
    "STREAM_WORDS": 512,
    "CORPUS_SENTENCES": 32,
    "CALIBRATION_RECORDS": 20,
}


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(
    st.lists(
        st.dictionaries(
            st.one_of(st.text(max_size=6), st.sampled_from(["a/b", "*", "", "start", "email"])),
            st.recursive(
                st.one_of(
                    st.none(),
                    st.booleans(),
                    st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20),
                    st.sampled_from(["2021-03-04", "2020-01", "jane@example.com", "Jane Doe"]),
                ),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=4)
                ),
                max_leaves=12,
            ),
            min_size=1,
            max_size=5,
        ),
        min_size=3,
        max_size=12,
    )
)
def test_any_json_records_learn_and_generate_records_valid_against_the_emitted_schema(records):
    """Whatever the shape: learning never fails on records that are JSON objects, the profile
    is JSON, and every generated record validates against the schema `learn --emit-schema`
    writes. Pools are made small here: the shapes are under test, not the pools' sizes."""
    profile = orjson.loads(orjson.dumps(learn_profile(Sample(records, None, None, None), k=1)))
    validator = jsonschema.Draft202012Validator(profile_schema(profile))
    with mock.patch.multiple(generate, **SMALL_POOLS):
        builder = ProfileBuilder(profile, seed=2)
        made = [orjson.loads(builder.build_json(i)) for i in range(20)]
    for record in made:
        assert validator.is_valid(record), next(validator.iter_errors(record)).message


@pytest.mark.parametrize(("kept", "names"), [(True, "lower"), (False, "plain")])
def test_an_email_keeps_the_hyphens_of_its_names_as_the_sample_does(kept: bool, names: str):
    """hans-peter.roth@ in the sample (the hyphen kept) or hanspeter.roth@ (dropped): learned,
    and generated so; names without a hyphen read alike either way and do not decide it."""
    records = orders(400)
    if not kept:
        for r in records:
            local, _, domain = r["customer"]["email"].partition("@")
            r["customer"]["email"] = f"{local.replace('-', '')}@{domain}"
    profile = learn_profile(Sample(records, None, None, None), k=5)
    [rule] = [r for r in profile["rules"] if r["rule"] == "email_from_name"]
    assert (rule["style"], rule["names"]) == ("first.last", names) and rule["share"] > 0.95
    builder = ProfileBuilder(profile, seed=3)
    made = [orjson.loads(builder.build_json(i)) for i in range(300)]
    hyphenated = [r["customer"] for r in made if "-" in r["customer"]["name"]["first"]]
    assert len(hyphenated) > 10
    written = sum(c["email"].startswith(c["name"]["first"].lower() + ".") for c in hyphenated)
    assert written > 0.8 * len(hyphenated) if kept else written == 0
