"""A batch that OOMs the server (--oom kill) must not crash-loop it for good (issue 17)."""

from __future__ import annotations

import httpx
import orjson

from .conftest import wait_for

PROFILE = ("--profile", "qwen2.5-0.5b-1.5gb", "--oom", "kill", "--speed", "10")
CHAT = "/v1/chat/completions"
KILLER = "req-05"  # ~30K prompt tokens: more than the KV cache holds, under the context limit


def _line(custom_id: str, chars: int) -> bytes:
    body = {
        "model": "qwen2.5:0.5b",
        "messages": [{"role": "user", "content": "x" * chars}],
        "max_tokens": 8,
    }
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body})


def restart(server) -> None:
    """Start the server again; it may die of OOM before it is up, which the caller counts."""
    try:
        server.start(ready=False)
    except AssertionError:
        if server.process.returncode != -9:
            raise


def test_oom_deaths_halve_concurrency_and_fail_the_line_that_keeps_killing(start_server):
    server = start_server(*PROFILE)
    ids = [f"req-{i:02d}" for i in range(12)]
    # four ~12K-token lines at once overflow the ~28.8K-token KV cache; two fit
    content = b"\n".join(_line(i, 120_000 if i == KILLER else 48_000) for i in ids) + b"\n"
    uploaded = httpx.post(
        server.url + "/v1/files",
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", content)},
        timeout=30,
    ).json()
    batch_id = httpx.post(
        server.url + "/v1/batches",
        json={"input_file_id": uploaded["id"], "endpoint": CHAT, "completion_window": "24h"},
    ).json()["id"]

    deaths = 0
    while True:

        def settled() -> dict | bool:
            if server.process.poll() is not None:
                return {"died": server.process.returncode}
            try:
                batch = httpx.get(server.url + f"/v1/batches/{batch_id}", timeout=5).json()
            except httpx.HTTPError:
                return False
            return batch["status"] in ("completed", "failed") and batch

        outcome = wait_for(settled, 60, "the batch to finish or the server to die")
        if "died" not in outcome:
            break
        assert outcome["died"] == -9
        deaths += 1
        assert deaths <= 6, "the batch crash-loops the server"
        restart(server)  # as a supervisor would: same data directory, the batch resumes

    batch = outcome
    assert batch["status"] == "completed"
    assert deaths >= 2  # the killer line died at least twice before it was given up
    assert batch["request_counts"] == {"total": 12, "completed": 11, "failed": 1}
    errors = httpx.get(server.url + f"/v1/files/{batch['error_file_id']}/content").text
    (failed,) = [orjson.loads(line) for line in errors.splitlines()]
    assert failed["custom_id"] == KILLER and failed["error"]["code"] == "oom"
    output = httpx.get(server.url + f"/v1/files/{batch['output_file_id']}/content").text
    done = sorted(orjson.loads(line)["custom_id"] for line in output.splitlines())
    assert done == sorted(set(ids) - {KILLER})  # each line exactly once
    assert "resumes at concurrency" in server.stderr()
