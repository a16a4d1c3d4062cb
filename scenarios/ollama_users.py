"""Ollama's native chat API: /api/chat streaming NDJSON, whatever --api says.

locust -f scenarios/ OllamaChatUser --host http://127.0.0.1:11434 --model llama3.1:8b
"""

from locust import task

from harness.locust.users import LLMUser


class OllamaChatUser(LLMUser):
    """Streamed /api/chat: TTFT, ITL and tokens/s from Ollama's NDJSON messages and eval_count."""

    weight = 1
    api = "ollama"

    @task
    def evaluate_candidate_ollama(self) -> None:
        self.chat(stream=True)
