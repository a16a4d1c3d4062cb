"""The checkpoint file: torn-line repair, id reading, the exactly-once verification."""

from __future__ import annotations

import orjson

from harness.driver.checkpoint import Checkpoint, IdSet, read_ids, verify
from harness.rundir import repair_jsonl


def _line(custom_id: str, ok: bool = True) -> bytes:
    return (
        orjson.dumps({"custom_id": custom_id, "ok": ok, "response": {"status_code": 200}}) + b"\n"
    )


def test_repair_cuts_only_a_torn_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(_line("a") + _line("b") + b'{"custom_id":"c","ok":tr')
    assert repair_jsonl(path) == len(b'{"custom_id":"c","ok":tr')
    assert [i for i, _ in read_ids(path)] == ["a", "b"]
    assert repair_jsonl(path) == 0  # a clean file is left alone


def test_repair_of_a_single_torn_line_empties_the_file(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"x" * 100_000)  # longer than one read block, no newline at all
    assert repair_jsonl(path) == 100_000
    assert path.read_bytes() == b""


def test_checkpoint_appends_after_repair_and_lists_completed(tmp_path):
    (tmp_path / "results.jsonl").write_bytes(_line("a") + b'{"custom_id":"b"')
    checkpoint = Checkpoint(tmp_path)
    assert checkpoint.torn_bytes == len(b'{"custom_id":"b"')
    checkpoint.append("b", status=200, body={"choices": []}, request_id="r1")
    checkpoint.append("c", status=400, body=None, error={"code": "http_4xx", "message": "bad"})
    checkpoint.close()
    assert list(read_ids(tmp_path / "results.jsonl")) == [("a", True), ("b", True), ("c", False)]
    done = Checkpoint(tmp_path).completed()
    assert ("a" in done, "c" in done, "d" in done, len(done)) == (True, True, False, 3)


def test_read_ids_handles_escapes_and_foreign_key_order(tmp_path):
    path = tmp_path / "results.jsonl"
    foreign = {"id": "batch_req_1", "custom_id": "x", "response": None, "error": {"code": "e"}}
    path.write_bytes(_line('quote"d\\id') + orjson.dumps(foreign) + b"\n")
    assert list(read_ids(path)) == [('quote"d\\id', True), ("x", False)]


def test_verify_counts_lost_duplicated_unexpected_and_failed(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(_line("a") + _line("b", ok=False) + _line("b") + _line("zz"))
    report = verify(["a", "b", "c", "d"], path)
    assert report == {
        "expected": 4,
        "received": 3,
        "lost": 2,
        "duplicated": 1,
        "unexpected": 1,
        "failed": 1,
        "corrupt": 0,
    }


def test_a_corrupt_line_that_ends_in_a_newline_is_not_a_result(tmp_path):
    # what a short write followed by the next append used to leave: cand-1 cut, cand-2 inside it
    path = tmp_path / "results.jsonl"
    torn = _line("cand-1")[:30] + _line("cand-2")
    path.write_bytes(_line("cand-0") + torn + b'{"custom_id":"cand-3","ok":true,"x":[}\n')
    assert list(read_ids(path)) == [("cand-0", True)]
    report = verify(["cand-0", "cand-1", "cand-2", "cand-3"], path)
    assert (report["lost"], report["corrupt"], report["received"]) == (3, 2, 1)
    assert len(Checkpoint(tmp_path).completed()) == 1  # a resume sends the other three again


def test_idset_membership():
    ids = IdSet(f"cand-{i:07d}" for i in range(0, 1000, 2))
    assert len(ids) == 500
    assert all(f"cand-{i:07d}" in ids for i in range(0, 1000, 2))
    assert not any(f"cand-{i:07d}" in ids for i in range(1, 1000, 2))
