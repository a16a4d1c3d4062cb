"""What the simulated model says: a cheap token estimate and deterministic answers.

A "token" here is 4 bytes of UTF-8 text (about what Llama-3 tokenizers give for English and
JSON), so counting is O(1) for ASCII and streaming splits the answer into 4-character pieces.
The answer depends only on the messages, so a request gets the same answer on every run.
"""

from __future__ import annotations

import functools
import random
import re
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import orjson

TOKEN_CHARS = 4
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators of the chat template, per message
REPLY_PRIMING_TOKENS = 3  # "<|start_header_id|>assistant<|end_header_id|>"

_CRITERION = re.compile(r"^- ([A-Za-z0-9_ \-/]+?) \(weight ([0-9.]+)\)", re.MULTILINE)
_VERDICTS = ((80, "strong_yes"), (65, "yes"), (50, "maybe"), (0, "no"))
_WORDS = (
    "the", "model", "reviewed", "request", "and", "found", "main", "points", "clear", "while",
    "a", "few", "details", "need", "more", "context", "before", "final", "answer", "can", "be",
    "given", "with", "confidence", "about", "scope", "timeline", "quality", "risk", "cost",
    "evidence", "results", "team", "process", "data", "system", "plan", "next", "step",
)  # fmt: skip


def count_tokens(text: str) -> int:
    """Token estimate of a text: UTF-8 bytes / 4, rounded up."""
    size = len(text) if text.isascii() else len(text.encode())
    return (size + TOKEN_CHARS - 1) // TOKEN_CHARS


def count_chat_tokens(messages: Sequence[tuple[str, str]]) -> int:
    """Prompt tokens of a chat: each message plus its template overhead, plus reply priming."""
    total = REPLY_PRIMING_TOKENS
    for _, content in messages:
        total += count_tokens(content) + MESSAGE_OVERHEAD_TOKENS
    return total


def split_tokens(text: str) -> list[str]:
    """An answer as streamed pieces: one token is 4 characters."""
    return [text[i : i + TOKEN_CHARS] for i in range(0, len(text), TOKEN_CHARS)]


def request_seed(messages: Sequence[tuple[str, str]]) -> int:
    """A 32-bit seed from the roles and contents of the messages (CRC: cheap, deterministic)."""
    seed = 0
    for role, content in messages:
        seed = zlib.crc32(content.encode(), zlib.crc32(role.encode(), seed))
    return seed


def respond(messages: Sequence[tuple[str, str]], seed: int, json_mode: bool = False) -> str:
    """The deterministic answer: an evaluation JSON for candidate prompts, else plain prose."""
    system = next((content for role, content in messages if role == "system"), "")
    job = _job(system) if system else None
    if job is not None:
        last_user = next((c for role, c in reversed(messages) if role == "user"), "")
        return _evaluation(job, last_user, seed)
    text = _prose(seed)
    return orjson.dumps({"response": text}).decode() if json_mode else text


class _Job(NamedTuple):
    """What an evaluation answer needs from the system prompt (parsed once per job)."""

    weights: dict[str, float]
    terms: frozenset[str]


@functools.lru_cache(maxsize=256)
def _job(system: str) -> _Job | None:
    """The job's criteria and required terms, or None when the prompt is no evaluation."""
    lowered = system.lower()
    if "candidate" not in lowered or "score" not in lowered:
        return None
    weights = {name: float(weight) for name, weight in _CRITERION.findall(system)}
    terms = frozenset(_term(line) for line in lowered.splitlines() if line.startswith("- "))
    return _Job(weights or {"overall_fit": 1.0}, terms)


def _term(line: str) -> str:
    """A requirement line's subject: "- strong experience with kafka" -> "kafka"."""
    return line[2:].rpartition(" with ")[2].strip(" .")


def _evaluation(job: _Job, profile_json: str, seed: int) -> str:
    """A plausible screening verdict derived from the job's criteria and the candidate profile."""
    rng = random.Random(seed)
    candidate = _parse_profile(profile_json)
    skills = [s for s in candidate.get("skills", ()) if isinstance(s, dict) and "name" in s]
    matched = [s["name"] for s in skills if str(s["name"]).lower() in job.terms]
    mean = 50 + 8 * min(len(matched), 5)
    weights = job.weights
    criteria = {name: min(100, max(0, round(rng.gauss(mean, 14)))) for name in weights}
    score = round(sum(criteria[k] * w for k, w in weights.items()) / (sum(weights.values()) or 1))
    verdict = next(label for floor, label in _VERDICTS if score >= floor)
    return orjson.dumps(
        {
            "candidate_id": candidate.get("id"),
            "score": score,
            "verdict": verdict,
            "criteria": criteria,
            "reasons": _reasons(candidate, skills, matched),
            "risks": [_risk(candidate, rng)],
        }
    ).decode()


def _parse_profile(text: str) -> dict:
    if not text.lstrip().startswith("{"):
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _reasons(candidate: dict, skills: list[dict], matched: list[str]) -> list[str]:
    years = candidate.get("years_experience")
    title = candidate.get("current_title") or "their current role"
    company = candidate.get("current_company")
    first = f"{years} years of experience" if years is not None else "Experience not stated"
    first += f"; currently {title}" + (f" at {company}." if company else ".")
    strongest = max(skills, key=lambda s: s.get("years") or 0, default=None)
    second = (
        f"Strongest skill: {strongest['name']} ({strongest.get('level', 'n/a')}, "
        f"{strongest.get('years', '?')} years)."
        if strongest
        else "No skills listed in the profile."
    )
    third = (
        f"Shows {len(matched)} of the skills the job asks for: {', '.join(matched[:4])}."
        if matched
        else "Shows none of the skills named in the job requirements."
    )
    return [first, second, third]


def _risk(candidate: dict, rng: random.Random) -> str:
    location = candidate.get("location") or {}
    options = [
        "Limited evidence of measurable impact in recent roles.",
        "Short tenure in the most recent position.",
        f"Remote preference '{location.get('remote_preference', 'unknown')}' may not fit the role.",
        "Seniority may not match the level of the role.",
    ]
    return options[rng.randrange(len(options))]


def _prose(seed: int) -> str:
    rng = random.Random(seed)
    words = [_WORDS[rng.randrange(len(_WORDS))] for _ in range(rng.randint(24, 120))]
    sentences, start = [], 0
    while start < len(words):
        end = start + rng.randint(6, 16)
        sentence = " ".join(words[start:end])
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        start = end
    return " ".join(sentences)
