"""What the simulated model says: a cheap token estimate and deterministic answers.

A "token" here is 4 bytes of UTF-8 text (about what Llama-3 tokenizers give for English and
JSON), so counting is O(1) for ASCII and streaming splits the answer into 4-character pieces.
The answer depends only on the messages, so a request gets the same answer on every run.
"""

from __future__ import annotations

import functools
import math
import operator
import random
import re
import statistics
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from harness.server.protocol import ApiError

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
    system = last_user = ""
    for role, content in messages:
        if role == "user":
            last_user = content
        elif role == "system" and not system:
            system = content
    job = _job(system) if system else None
    if job is not None:
        return _evaluation(job, last_user, seed)
    text = _prose(seed)
    return orjson.dumps({"response": text}).decode() if json_mode else text


class _Job(NamedTuple):
    """What an evaluation answer needs from the system prompt (parsed once per job)."""

    weights: tuple[tuple[str, float], ...]
    weight_total: float
    terms: frozenset[str]


@functools.lru_cache(maxsize=256)
def _job(system: str) -> _Job | None:
    """The job's criteria and required terms, or None when the prompt is no evaluation."""
    lowered = system.lower()
    if "candidate" not in lowered or "score" not in lowered:
        return None
    weights = {name: _weight(name, weight) for name, weight in _CRITERION.findall(system)}
    weights = weights or {"overall_fit": 1.0}
    terms = frozenset(_term(line) for line in lowered.splitlines() if line.startswith("- "))
    return _Job(tuple(weights.items()), sum(weights.values()) or 1.0, terms)


_MAX_WEIGHT = 1e6


def _weight(name: str, text: str) -> float:
    """A criterion's weight: a finite number up to _MAX_WEIGHT, else the prompt is a 400."""
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not 0 <= weight <= _MAX_WEIGHT:  # NaN fails too
        raise ApiError(
            400,
            f"Invalid criterion weight {text[:40]!r} for {name[:80]!r} in the system prompt: "
            f"expected a number from 0 to {_MAX_WEIGHT:g}.",
            param="messages",
            code="invalid_value",
        )
    return weight


def _term(line: str) -> str:
    """A requirement line's subject: "- strong experience with kafka" -> "kafka"."""
    return line[2:].rpartition(" with ")[2].strip(" .")


# Criterion scores scatter around their mean as N(0, 14), rounded: a fixed table of normal
# quantiles picked by an LCG over the request's seed is as deterministic as a seeded RNG and
# ~10x cheaper. Scores are clamped to 0..100 by a lookup over every reachable sum.
_NOISE_SIZE = 1024
_NOISE = tuple(
    round(14 * statistics.NormalDist().inv_cdf((k + 0.5) / _NOISE_SIZE)) for k in range(_NOISE_SIZE)
)
_SCORE_OFFSET = -min(_NOISE)
_CLAMPED = tuple(min(100, max(0, v - _SCORE_OFFSET)) for v in range(100 + 2 * _SCORE_OFFSET + 1))


def _evaluation(job: _Job, profile_json: str, seed: int) -> str:
    """A plausible screening verdict derived from the job's criteria and the candidate profile."""
    candidate = _parse_profile(profile_json)
    matched, strongest = _skill_matches(candidate.get("skills"), job.terms)
    base = 50 + 8 * min(len(matched), 5) + _SCORE_OFFSET
    criteria = {}
    weighted = 0.0
    state = seed & 0xFFFFFFFF
    for name, weight in job.weights:
        state = (state * 1_103_515_245 + 12_345) & 0xFFFFFFFF
        criteria[name] = value = _CLAMPED[base + _NOISE[state >> 22]]
        weighted += value * weight
    score = round(weighted / job.weight_total)
    verdict = next(label for floor, label in _VERDICTS if score >= floor)
    return orjson.dumps(
        {
            "candidate_id": candidate.get("id"),
            "score": score,
            "verdict": verdict,
            "criteria": criteria,
            "reasons": _reasons(candidate, strongest, matched),
            "risks": [_risk(candidate, seed)],
        }
    ).decode()


def _skill_matches(skills: Any, terms: frozenset[str]) -> tuple[list[str], dict | None]:
    """The profile's skills named by the job, in profile order, and its longest-held skill."""
    if not isinstance(skills, list) or not skills:
        return [], None
    try:  # well-formed skills: the loops run in C
        matched = [name for name in map(_NAME, skills) if name.lower() in terms]
        return matched, max(skills, key=_YEARS)
    except (TypeError, KeyError, AttributeError):
        pass
    matched, strongest, strongest_years = [], None, 0.0
    for skill in skills:
        if not isinstance(skill, dict) or "name" not in skill:
            continue
        name = skill["name"]
        if not isinstance(name, str):
            raise ApiError(
                400,
                "Invalid candidate profile in the user message: every skill's 'name' must be "
                f"a string, got {type(name).__name__}.",
                param="messages",
                code="invalid_value",
            )
        if name.lower() in terms:
            matched.append(name)
        years = skill.get("years")
        key = years if isinstance(years, (int, float)) else 0
        if strongest is None or key > strongest_years:  # the first of the longest held
            strongest, strongest_years = skill, key
    return matched, strongest


_NAME = operator.itemgetter("name")
_YEARS = operator.itemgetter("years")


def _parse_profile(text: str) -> dict:
    """The profile's fields a verdict needs; parses only its head when that holds them all."""
    if not text.lstrip().startswith("{"):
        return {}
    # A top-level "experience" list is most of a generated profile and no verdict reads it. A
    # match at any other depth leaves brackets open, so that head does not parse.
    cut = text.find(',"experience":')
    if cut > 0:
        try:
            head = orjson.loads(text[:cut] + "}")
        except orjson.JSONDecodeError:
            head = None
        if isinstance(head, dict) and _VERDICT_FIELDS.issubset(head):
            return head
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


_VERDICT_FIELDS = frozenset(
    ("id", "skills", "years_experience", "current_title", "current_company", "location")
)


def _reasons(candidate: dict, strongest: dict | None, matched: list[str]) -> list[str]:
    years = candidate.get("years_experience")
    title = candidate.get("current_title") or "their current role"
    company = candidate.get("current_company")
    first = f"{years} years of experience" if years is not None else "Experience not stated"
    first += f"; currently {title}" + (f" at {company}." if company else ".")
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


_RISKS = (
    "Limited evidence of measurable impact in recent roles.",
    "Short tenure in the most recent position.",
    None,  # the remote preference, filled in from the profile
    "Seniority may not match the level of the role.",
)


def _risk(candidate: dict, seed: int) -> str:
    risk = _RISKS[seed % len(_RISKS)]
    if risk is None:
        location = candidate.get("location")
        preference = location.get("remote_preference") if isinstance(location, dict) else None
        risk = f"Remote preference '{preference or 'unknown'}' may not fit the role."
    return risk


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
