"""OpenAI Batch API jobs: the request file, its multipart upload, and the exactly-once check."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from harness.locust.prompts import Prompt

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


def batch_file(prompts: Iterable[Prompt]) -> tuple[bytes, list[str]]:
    """The JSONL of chat requests and their custom_ids, made unique within the file.

    A dataset smaller than a batch comes round again; a repeated candidate gets a suffix
    (`cand-0000007~2`) because the Batch API needs every custom_id of a file to be distinct.
    """
    seen: Counter[str] = Counter()
    lines, ids = [], []
    for prompt in prompts:
        candidate_id = prompt.custom_id
        seen[candidate_id] += 1
        custom_id = (
            candidate_id if seen[candidate_id] == 1 else f"{candidate_id}~{seen[candidate_id]}"
        )
        ids.append(custom_id)
        lines.append(
            orjson.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": prompt.body,
                }
            )
        )
    return b"\n".join(lines) + b"\n", ids


def multipart(content: bytes, filename: str, purpose: str = "batch") -> tuple[bytes, str]:
    """A multipart/form-data body (purpose + file) and its Content-Type, as /v1/files takes it."""
    boundary = f"harness-{uuid.uuid4().hex}"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    return (
        head + content + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


@dataclass(frozen=True)
class BatchCheck:
    """How the results of a batch compare with what was sent."""

    succeeded: int
    failed: int
    missing: list[str]
    duplicated: list[str]
    unexpected: list[str]

    @property
    def exactly_once(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected)

    def describe(self) -> str:
        parts = [
            f"{len(ids)} {label} (e.g. {ids[0]})"
            for label, ids in (
                ("missing", self.missing),
                ("duplicated", self.duplicated),
                ("unexpected", self.unexpected),
            )
            if ids
        ]
        return ", ".join(parts) or "every custom_id exactly once"


def check_results(sent: list[str], output: bytes, errors: bytes) -> BatchCheck:
    """Count each custom_id across the output and error files: each must appear exactly once."""
    seen: Counter[str] = Counter()
    succeeded = failed = 0
    for line in (output + b"\n" + errors).splitlines():
        if not line.strip():
            continue
        result = orjson.loads(line)
        seen[result["custom_id"]] += 1
        response = result.get("response") or {}
        if result.get("error") is None and 200 <= (response.get("status_code") or 0) < 300:
            succeeded += 1
        else:
            failed += 1
    expected = set(sent)
    return BatchCheck(
        succeeded=succeeded,
        failed=failed,
        missing=sorted(expected - seen.keys()),
        duplicated=sorted(i for i, count in seen.items() if count > 1),
        unexpected=sorted(seen.keys() - expected),
    )
