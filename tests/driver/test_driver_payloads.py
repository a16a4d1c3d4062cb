"""The bytes the driver sends: sliced from compact OpenAI Batch lines, parsed from anything else."""

from __future__ import annotations

import gzip
import itertools

import orjson
import pytest

import generators
from harness.driver.dataset import generated
from harness.driver.payloads import iter_payloads, pending


def _line(custom_id: str, body: dict, **extra) -> bytes:
    record = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return orjson.dumps({**record, **extra}) + b"\n"


def test_generated_lines_are_sliced_to_exactly_the_bodies_the_reader_parses(tmp_path):
    dataset, _ = generated(300, 7, tmp_path)
    sent = list(iter_payloads(dataset.path))
    parsed = list(generators.iter_requests(dataset.path))
    assert [custom_id for custom_id, _ in sent] == [custom_id for custom_id, _ in parsed]
    assert all(
        orjson.loads(body) == want for (_, body), (_, want) in zip(sent, parsed, strict=True)
    )
    raw = dataset.path.read_bytes()
    assert all(body in raw for _, body in sent[:20])  # the file's own bytes, not re-encoded


def test_escaped_ids_blank_lines_and_a_last_line_without_newline(tmp_path):
    path = tmp_path / "batch.jsonl"
    last = _line("c", {"n": 3}).rstrip(b"\n")
    path.write_bytes(_line('a"1\\', {"n": 1}) + b"\n" + _line("b", {"n": 2}) + last)
    assert list(iter_payloads(path)) == [
        ('a"1\\', b'{"n":1}'),
        ("b", b'{"n":2}'),
        ("c", b'{"n":3}'),
    ]


def test_a_writer_that_puts_keys_after_the_body_is_read_the_slow_way(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"".join(_line(f"r{i}", {"n": i}, extra={"k": i}) for i in range(3)))
    assert list(iter_payloads(path)) == [(f"r{i}", b'{"n":%d}' % i) for i in range(3)]


def test_spaced_and_gzipped_lines_and_overrides_are_parsed_and_encoded(tmp_path):
    path = tmp_path / "batch.jsonl.gz"
    spaced = b'{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", '
    spaced += b'"body": {"model": "m", "max_tokens": 5}}\n'
    path.write_bytes(gzip.compress(spaced + _line("y", {"model": "m", "max_tokens": 5})))
    assert [orjson.loads(b) for _, b in iter_payloads(path)] == [
        {"model": "m", "max_tokens": 5}
    ] * 2
    overridden = list(iter_payloads(path, model="other", max_tokens=9))
    assert [orjson.loads(b) for _, b in overridden] == [{"model": "other", "max_tokens": 9}] * 2


def test_a_line_that_is_no_request_names_its_line(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_bytes(_line("a", {"n": 1}) + b'{"custom_id": "b"}\n')
    with pytest.raises(generators.DatasetError, match=r"batch.jsonl: line 2: not an OpenAI Batch"):
        list(iter_payloads(path))


def test_pending_skips_completed_ids_within_the_first_n(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"".join(_line(f"r{i}", {"n": i}) for i in range(10)))
    assert [c for c, _ in pending(path, 6, {"r1", "r4", "r8"})] == ["r0", "r2", "r3", "r5"]
    assert len(list(itertools.islice(pending(path, 100), 50))) == 10
