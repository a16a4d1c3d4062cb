"""The baseline of bench_locust.py: a bare FastHttpUser posting the bytes ChatUser sends.

Same candidates, seed and max_tokens as the ChatUser run, encoded the same way, cycled; no
harness plugin, no records, no metrics: just Locust and the HTTP request.
"""

import itertools
import os

from locust import FastHttpUser, task

from harness.locust.prompts import generated_source

_N = int(os.environ["BENCH_CANDIDATES"])
_SOURCE = generated_source(_N, seed=0, model=None, max_tokens=int(os.environ["BENCH_MAX_TOKENS"]))
_BODIES = itertools.cycle([_SOURCE.next().encoded("openai", False) for _ in range(_N)])
_HEADERS = {"Content-Type": "application/json"}


class BareUser(FastHttpUser):
    concurrency = 1

    @task
    def post(self) -> None:
        self.client.post("/v1/chat/completions", data=next(_BODIES), headers=_HEADERS)
