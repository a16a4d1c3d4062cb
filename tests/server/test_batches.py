"""Files + Batch API through the openai client; kill -9 mid-batch resumes exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from harness.rundir import repair_jsonl
from harness.server.batches import _scan_results

from .conftest import MODEL, wait_for

FINAL = ("completed", "failed", "cancelled", "expired")


def write_batch(path: Path, n: int, *, bad_model_every: int = 0) -> list[str]:
    ids = []
    with open(path, "wb") as out:
        for i in range(n):
            custom_id = f"req-{i:05d}"
            ids.append(custom_id)
            model = "no-such-model" if bad_model_every and i % bad_model_every == 0 else MODEL
            body = {"model": model, "messages": [{"role": "user", "content": f"Question {i}?"}]}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
            out.write(orjson.dumps({**line, "body": {**body, "max_tokens": 40}}) + b"\n")
    return ids


def client_for(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def run_batch(client: openai.OpenAI, path: Path, **kwargs):
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **kwargs,
    )


def wait_final(client: openai.OpenAI, batch_id: str, timeout: float = 30):
    return wait_for(
        lambda: (b := client.batches.retrieve(batch_id)).status in FINAL and b,
        timeout,
        f"batch {batch_id} to finish",
    )


def result_lines(client: openai.OpenAI, batch) -> list[dict]:
    lines = []
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            content = client.files.content(file_id).content
            assert content.endswith(b"\n")
            lines += [json.loads(line) for line in content.splitlines()]
    return lines


def test_files_upload_retrieve_content_list_delete(server, tmp_path):
    client = client_for(server)
    path = tmp_path / "in.jsonl"
    write_batch(path, 3)
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    assert uploaded.bytes == path.stat().st_size and uploaded.filename == "in.jsonl"
    assert client.files.retrieve(uploaded.id).purpose == "batch"
    assert client.files.content(uploaded.id).content == path.read_bytes()
    assert uploaded.id in [f.id for f in client.files.list()]
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_batch_completes_with_outputs_and_errors_in_openai_format(server, tmp_path):
    client = client_for(server)
    path = tmp_path / "in.jsonl"
    ids = write_batch(path, 40, bad_model_every=10)
    batch = run_batch(client, path, metadata={"job": "demo"})
    assert batch.status == "validating"
    batch = wait_final(client, batch.id)
    assert batch.status == "completed"
    assert batch.request_counts.total == 40
    assert (batch.request_counts.completed, batch.request_counts.failed) == (36, 4)
    lines = result_lines(client, batch)
    assert sorted(line["custom_id"] for line in lines) == ids
    ok = [line for line in lines if line["response"]["status_code"] == 200]
    assert len(ok) == 36
    assert ok[0]["response"]["body"]["object"] == "chat.completion"
    failed = [line for line in lines if line["response"]["status_code"] != 200]
    assert {line["response"]["status_code"] for line in failed} == {404}
    assert failed[0]["response"]["body"]["error"]["code"] == "model_not_found"
    assert batch.usage.output_tokens == 36 * 40
    assert batch.id in [b.id for b in client.batches.list()]
    assert client.batches.retrieve(batch.id).metadata == {"job": "demo"}


def test_invalid_batch_file_fails_validation_with_line_numbers(server, tmp_path):
    client = client_for(server)
    path = tmp_path / "bad.jsonl"
    write_batch(path, 3)
    with path.open("ab") as out:
        out.write(b"{not json\n")
        out.write(path.read_bytes().splitlines()[0] + b"\n")  # a duplicate custom_id
    batch = wait_final(client, run_batch(client, path).id)
    assert batch.status == "failed"
    codes = [(e.code, e.line) for e in batch.errors.data]
    assert codes == [("invalid_json_line", 4), ("duplicate_custom_id", 5)]


def test_cancel_stops_a_running_batch(start_server, tmp_path):
    server = start_server("--speed", "2")  # about 1 s per request, 8 at a time
    client = client_for(server)
    path = tmp_path / "in.jsonl"
    write_batch(path, 200)
    batch = run_batch(client, path)
    wait_for(lambda: client.batches.retrieve(batch.id).status == "in_progress", 10, "start")
    assert client.batches.cancel(batch.id).status == "cancelling"
    batch = wait_final(client, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    lines = result_lines(client, batch)
    assert len(lines) == len({line["custom_id"] for line in lines}) < 200
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)


def test_kill_9_mid_batch_then_restart_gives_every_custom_id_exactly_once(start_server, tmp_path):
    data = tmp_path / "data"
    server = start_server("--speed", "50", "--set", "max_num_seqs=16", data_dir=data)
    client = client_for(server)
    path = tmp_path / "in.jsonl"
    ids = write_batch(path, 600, bad_model_every=50)
    batch = run_batch(client, path)
    wait_for(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= 150,
        30,
        "a quarter of the batch",
    )
    assert client.batches.retrieve(batch.id).status == "in_progress"  # killed mid-batch
    assert server.kill9() == -9
    done_before = client_for(server)  # same port after restart
    server.start()
    batch = wait_final(done_before, batch.id, timeout=60)
    assert batch.status == "completed"
    assert batch.request_counts.completed + batch.request_counts.failed == 600
    lines = result_lines(done_before, batch)
    got = [line["custom_id"] for line in lines]
    assert len(got) == 600 and sorted(got) == ids  # none lost, none duplicated, no torn line
    assert batch.request_counts.failed == 12


def test_torn_last_line_is_cut_and_finished_ids_are_skipped(tmp_path):
    out, err = tmp_path / "out", tmp_path / "err"
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    good = {"custom_id": "a", "response": {"status_code": 200, "body": {"usage": usage}}}
    out.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps({**good, "custom_id": "b"})[:-7])
    err.write_bytes(orjson.dumps({"custom_id": "c", "response": None}) + b"\n")
    done, completed, failed, tokens = _scan_results(out, err)
    assert done == {"a", "c"} and (completed, failed, tokens) == (1, 1, (3, 2))
    assert out.read_bytes().count(b"\n") == 1 and out.read_bytes().endswith(b"\n")
    whole = tmp_path / "whole"
    whole.write_bytes(b'{"x":1}\n{"y":2}')  # complete JSON, but its newline never made it
    repair_jsonl(whole)
    assert whole.read_bytes() == b'{"x":1}\n'


def test_batch_expires_after_its_completion_window(start_server, tmp_path):
    server = start_server("--speed", "2", "--batch-window-seconds", "2")
    client = client_for(server)
    path = tmp_path / "in.jsonl"
    write_batch(path, 100)
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_final(client, batch.id, timeout=30)
    assert batch.status == "expired"
    lines = result_lines(client, batch)
    assert sorted(line["custom_id"] for line in lines) == [f"req-{i:05d}" for i in range(100)]
    expired = [line for line in lines if line["error"]]
    assert expired and expired[0]["error"]["code"] == "batch_expired"
    assert batch.request_counts.failed == len(expired)


def test_batch_file_ids_cannot_escape_the_data_directory(server):
    for path in (
        "/v1/files/..%2F..%2Fetc%2Fpasswd/content",
        "/v1/files/file-..%2F..%2Fetc%2Fpasswd",
        "/v1/files/file-abc.json",
        "/v1/files/..",
    ):
        response = httpx.get(server.url + path)
        assert response.status_code == 404, path
        assert "error" in response.json()
