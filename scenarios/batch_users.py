"""OpenAI Batch API jobs, end to end: upload, create, poll with backoff, download, verify.

    locust -f scenarios/ BatchJobUser --headless -u 2 -t 2m --batch-size 200

Every HTTP call is a stats entry of its own; the whole job is one more ("BATCH /v1/batches
(job)"), a failure unless the batch completed with every custom_id exactly once across its
output and error files. Each finished job is also a `batch_completed` event in the run directory.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import orjson
from locust import task

from harness.driver.errors import HTTP_5XX, Failure
from harness.locust.batch import TERMINAL_STATUSES, batch_file, check_results, multipart
from harness.locust.failures import RequestFailed, of_response
from harness.locust.users import LLMUser
from harness.rundir import EventKind


class BatchJobError(Exception):
    """A batch job that did not deliver every result exactly once."""

    def __repr__(self) -> str:  # Locust keys its failures table on repr()
        return str(self)


class BatchJobUser(LLMUser):
    """Submits one batch of --batch-size candidate evaluations at a time and checks every result."""

    weight = 1
    api = "openai"  # the Batch API is OpenAI's
    job_timeout_s = 600.0
    poll_first_s = 0.2
    poll_max_s = 5.0

    @task
    def run_batch_job(self) -> None:
        started = time.perf_counter()
        size = self.run.settings.batch_size
        content, sent = batch_file(self.run.prompts.next() for _ in range(size))
        batch = self._submit(content)
        if batch is not None:
            batch = self._wait(batch)
        error: Exception | None = None
        if batch is None:
            error = BatchJobError("the batch could not be submitted or polled")
        elif batch["status"] != "completed":
            error = BatchJobError(f"the batch ended {batch['status']}")
        else:
            output = self._download(batch.get("output_file_id"))
            errors = self._download(batch.get("error_file_id"))
            if output is None or errors is None:
                error = BatchJobError("the results could not be downloaded")
            else:
                check = check_results(sent, output, errors)
                self.run.log.event(
                    EventKind.BATCH_COMPLETED,
                    batch_id=batch["id"],
                    requests=len(sent),
                    succeeded=check.succeeded,
                    failed=check.failed,
                    missing=len(check.missing),
                    duplicated=len(check.duplicated),
                    seconds=time.perf_counter() - started,
                )
                if not check.exactly_once:
                    error = BatchJobError(f"results not exactly once: {check.describe()}")
        self.environment.events.request.fire(
            request_type="BATCH",
            name="/v1/batches (job)",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=len(content),
            exception=error,
            context=self.context(),
        )

    def _submit(self, content: bytes) -> dict[str, Any] | None:
        body, content_type = multipart(content, f"candidates-{len(content)}.jsonl")
        uploaded = self._call(
            "POST", "/v1/files", data=body, headers={"Content-Type": content_type}
        )
        if uploaded is None:
            return None
        return self._call(
            "POST",
            "/v1/batches",
            data=orjson.dumps(
                {
                    "input_file_id": uploaded["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                }
            ),
            headers={"Content-Type": "application/json"},
        )

    def _wait(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        """Poll until the batch is terminal, backing off from poll_first_s to poll_max_s."""
        deadline = time.monotonic() + self.job_timeout_s
        delay = self.poll_first_s
        while batch["status"] not in TERMINAL_STATUSES:
            if time.monotonic() > deadline:
                self._call(
                    "POST", f"/v1/batches/{batch['id']}/cancel", name="/v1/batches/[id]/cancel"
                )
                return None
            gevent.sleep(delay)
            delay = min(self.poll_max_s, delay * 1.5)
            polled = self._call("GET", f"/v1/batches/{batch['id']}", name="/v1/batches/[id]")
            if polled is None:
                return None
            batch = polled
        return batch

    def _download(self, file_id: str | None) -> bytes | None:
        """A result file's bytes (b"" when the batch has no such file), None on failure."""
        if not file_id:
            return b""
        with self.client.get(
            f"/v1/files/{file_id}/content", name="/v1/files/[id]/content", catch_response=True
        ) as response:
            failure = of_response(response, response.content)
            self.note_outcome(failure)
            if failure is not None:
                response.failure(RequestFailed(failure))
                return None
            return response.content or b""

    def _call(self, method: str, path: str, name: str | None = None, **kwargs: Any) -> dict | None:
        """One JSON API call as a stats entry; its JSON answer, or None when it failed."""
        with self.client.request(
            method, path, name=name, catch_response=True, **kwargs
        ) as response:
            failure = of_response(response, response.content)
            if failure is None:
                try:
                    answer = orjson.loads(response.content or b"")
                except orjson.JSONDecodeError:
                    failure = Failure(HTTP_5XX, response.status_code, "the answer is not JSON")
            self.note_outcome(failure)
            if failure is None:
                return answer
            response.failure(RequestFailed(failure))
            return None
