"""Chat completions with candidate evaluation prompts: whole answers, and streamed ones.

    locust -f scenarios/ ChatUser StreamingChatUser --headless -u 20 -r 5 -t 1m

Both speak --api openai (/v1/chat/completions, SSE when streaming) or --api ollama (/api/chat,
NDJSON). StreamingChatUser's TTFT, ITL and tokens/s show as stats entries of their own.
"""

from locust import task

from harness.locust.users import LLMUser


class ChatUser(LLMUser):
    """Non-streaming chat completions: end-to-end latency and tokens/s per answer."""

    weight = 4

    @task
    def evaluate_candidate(self) -> None:
        self.chat(stream=False)


class StreamingChatUser(LLMUser):
    """Streamed chat completions: TTFT, ITL, tokens/s and end-to-end latency (to the last byte)."""

    weight = 4

    @task
    def evaluate_candidate_streamed(self) -> None:
        self.chat(stream=True)
