"""Chat requests that score one candidate against the job, as the team's batch server sends them."""

from __future__ import annotations

from typing import Any

import orjson

DEFAULT_MODEL = "llama3.1:8b"
DEFAULT_MAX_TOKENS = 512

EVALUATOR_INSTRUCTIONS = (
    "You are an experienced technical recruiter screening applicants for the job below. "
    "Score the candidate from 0 to 100 against each evaluation criterion, weigh the criteria "
    "as given, and answer with one JSON object and nothing else: "
    '{"candidate_id": str, "score": int, "verdict": "strong_yes"|"yes"|"maybe"|"no", '
    '"criteria": {<criterion name>: int}, "reasons": [str, str, str], "risks": [str]}. '
    "Judge only job-relevant evidence in the profile; ignore name, age, gender, nationality "
    "and any other protected characteristic. Be concise."
)


def model_settings(model: str = DEFAULT_MODEL, max_tokens: int = DEFAULT_MAX_TOKENS) -> dict:
    """The `model` block of a batch document."""
    return {
        "name": model,
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "response_format": "json",
        "instructions": EVALUATOR_INSTRUCTIONS,
    }


def system_prompt(job: dict[str, Any]) -> str:
    """Evaluator instructions, the job posting and its weighted criteria."""
    criteria = "\n".join(
        f"- {c['name']} (weight {c['weight']}): {c['description']}"
        for c in job["evaluation_criteria"]
    )
    requirements = "\n".join(f"- {r}" for r in job["requirements"])
    nice = "\n".join(f"- {r}" for r in job["nice_to_have"])
    location = job["location"]
    where = ", ".join(  # remote_policy is optional in the schema
        location[key] for key in ("city", "country", "remote_policy") if key in location
    )
    return (
        f"{EVALUATOR_INSTRUCTIONS}\n\n"
        f"JOB: {job['title']} at {job['company']} ({where})\n\n{job['description']}\n\n"
        f"REQUIREMENTS:\n{requirements}\n\nNICE TO HAVE:\n{nice}\n\n"
        f"EVALUATION CRITERIA:\n{criteria}"
    )


def chat_messages(job: dict[str, Any], candidate: dict[str, Any]) -> list[dict[str, str]]:
    """System (instructions + job + criteria) and user (the candidate profile as JSON)."""
    return [
        {"role": "system", "content": system_prompt(job)},
        {"role": "user", "content": orjson.dumps(candidate).decode()},
    ]


class BatchLineEncoder:
    """Encodes OpenAI Batch API request lines; the system message is encoded once per batch."""

    def __init__(
        self,
        job: dict[str, Any],
        model: str = DEFAULT_MODEL,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        system: str | None = None,
    ) -> None:
        """system, when given, is the system message as is (e.g. a learned sample's own)."""
        content = system if system is not None else system_prompt(job)
        system = orjson.dumps({"role": "system", "content": content})
        settings = orjson.dumps(
            {
                "model": model,
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "response_format": {"type": "json_object"},
            }
        )
        self._head = b'{"custom_id":'
        self._middle = (
            b',"method":"POST","url":"/v1/chat/completions","body":{"messages":[' + system
        )
        self._user = b',{"role":"user","content":'
        self._tail = b"}]," + settings[1:] + b"}\n"

    def encode(self, candidate_id: str, candidate_json: bytes) -> bytes:
        """One request line, newline included, for a candidate already serialised as JSON."""
        return b"".join(
            (
                self._head,
                orjson.dumps(candidate_id),
                self._middle,
                self._user,
                orjson.dumps(candidate_json.decode()),
                self._tail,
            )
        )
