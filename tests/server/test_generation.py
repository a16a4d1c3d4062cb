"""The deterministic evaluation answer: reading only a profile's head changes no verdict."""

from __future__ import annotations

import orjson
import pytest

import generators
from harness.server.generation import request_seed, respond
from harness.server.protocol import ApiError


def _messages(profile: dict) -> list[tuple[str, str]]:
    job = generators.job(0)
    chat = generators.chat_messages(job, generators.candidate(0))
    system = next(m["content"] for m in chat if m["role"] == "system")
    return [("system", system), ("user", orjson.dumps(profile).decode())]


def _verdict(messages: list[tuple[str, str]]) -> dict:
    return orjson.loads(respond(messages, request_seed(messages[:1])))


@pytest.mark.parametrize("i", range(0, 400, 37))
def test_verdict_is_the_same_whether_experience_comes_first_or_after_the_skills(i):
    profile = generators.candidate(i)
    assert list(profile).index("experience") > list(profile).index("skills")
    experience_first = {"experience": profile["experience"]} | profile
    assert _verdict(_messages(profile)) == _verdict(_messages(experience_first))


def test_a_nested_experience_key_does_not_cut_the_profile_short():
    profile = generators.candidate(7)
    profile["skills"] = [{**profile["skills"][0], "experience": "x"}, *profile["skills"][1:]]
    verdict = _verdict(_messages(profile))
    assert verdict["candidate_id"] == profile["id"]
    strongest = max(profile["skills"], key=lambda s: s["years"])
    assert f"Strongest skill: {strongest['name']}" in verdict["reasons"][1]


def test_malformed_skills_get_a_verdict_not_an_error():
    profile = generators.candidate(3)
    profile["skills"] = [{"name": "Kafka"}, "not a skill", {"name": "Go", "years": None}]
    verdict = _verdict(_messages(profile))
    assert verdict["reasons"][1].startswith("Strongest skill: Kafka (n/a, ? years)")
    assert 0 <= verdict["score"] <= 100


@pytest.mark.parametrize("name", [5, None, ["x"], {"a": 1}])
def test_a_skill_name_that_is_no_string_is_a_400(name):
    profile = generators.candidate(3)
    profile["skills"] = [{"name": "Kafka", "years": 2}, {"name": name, "years": 1}]
    with pytest.raises(ApiError) as caught:
        _verdict(_messages(profile))
    assert caught.value.status == 400 and caught.value.param == "messages"


@pytest.mark.parametrize("weight", ["1.2.3", ".", "9" * 400, "1" + "0" * 400 + ".5"])
def test_a_criterion_weight_that_is_no_finite_number_is_a_400(weight):
    system = f"Score the candidate.\n- skills (weight {weight})\n- culture (weight 1)"
    messages = [("system", system), ("user", "{}")]
    with pytest.raises(ApiError) as caught:
        respond(messages, 1)
    assert caught.value.status == 400


def test_criteria_scores_vary_with_the_request_and_stay_in_range():
    messages = _messages(generators.candidate(11))
    scores = {
        tuple(orjson.loads(respond(messages, seed))["criteria"].values()) for seed in range(200)
    }
    assert len(scores) > 150
    assert all(0 <= s <= 100 for row in scores for s in row)
