"""The official openai and ollama clients work unchanged against a real `harness serve`."""

from __future__ import annotations

import json
import time

import httpx
import ollama
import openai
import pytest

from .conftest import MODEL

SYSTEM = (
    "You are an experienced technical recruiter. Score the candidate from 0 to 100.\n"
    "REQUIREMENTS:\n- Strong, hands-on experience with Kafka\n- Experience with Python\n"
    "EVALUATION CRITERIA:\n- skills_match (weight 0.6): skills.\n- growth (weight 0.4): growth."
)
CANDIDATE = {
    "id": "cand-0000042",
    "years_experience": 7.5,
    "current_title": "Data Engineer",
    "current_company": "Acme",
    "skills": [{"name": "Kafka", "level": "expert", "years": 6.0}, {"name": "Go", "years": 1}],
}
MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": json.dumps(CANDIDATE)},
]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids
    assert client.models.retrieve(MODEL).id == MODEL


def test_candidate_evaluation_is_plausible_and_deterministic(client):
    first = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1024)
    again = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1024)
    assert first.choices[0].message.content == again.choices[0].message.content
    verdict = json.loads(first.choices[0].message.content)
    assert verdict["candidate_id"] == "cand-0000042"
    assert set(verdict["criteria"]) == {"skills_match", "growth"}
    assert 0 <= verdict["score"] <= 100
    assert verdict["verdict"] in ("strong_yes", "yes", "maybe", "no")
    assert len(verdict["reasons"]) == 3 and "Kafka" in verdict["reasons"][2]
    assert first.choices[0].finish_reason == "stop"
    usage = first.usage
    assert usage.prompt_tokens > 60 and usage.completion_tokens > 20
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_other_messages_get_other_answers(client):
    other = [MESSAGES[0], {"role": "user", "content": json.dumps({**CANDIDATE, "id": "c-7"})}]
    a = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    b = client.chat.completions.create(model=MODEL, messages=other)
    assert a.choices[0].message.content != b.choices[0].message.content


def test_max_tokens_truncates_with_finish_reason_length(client):
    reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5
    assert len(reply.choices[0].message.content) == 20  # a token is 4 characters


def test_streaming_matches_non_streaming_and_reports_usage(client):
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_streaming_is_paced_by_the_latency_model(paced_server):
    client = openai.OpenAI(base_url=paced_server.url + "/v1", api_key="x", max_retries=0)
    start = time.perf_counter()
    arrivals = []
    for chunk in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=40, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - start)
    assert len(arrivals) == 40
    # profile: 12 ms per token, +-15% jitter, at --speed 10 => 1.2 ms per token on average
    mean_gap = (arrivals[-1] - arrivals[0]) / 39
    assert 0.0008 < mean_gap < 0.003
    assert arrivals[0] > 0.002  # prefill overhead 30 ms / 10


def test_legacy_completions_sync_and_streaming(client):
    whole = client.completions.create(model=MODEL, prompt="Say something.", max_tokens=12)
    assert whole.object == "text_completion" and whole.usage.completion_tokens == 12
    parts = client.completions.create(
        model=MODEL, prompt="Say something.", max_tokens=12, stream=True
    )
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text


def test_metrics_count_the_requests(server, client):
    before = server.metric("vllm:request_success_total")  # the first label set: stop
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert server.metric("vllm:request_success_total") == before + 1
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "harness_sim_vram_bytes",
        "harness_sim_vram_total_bytes",
        "harness_context_trims_total",
    ):
        assert name in text, name


def test_ollama_chat_generate_tags_ps(server):
    client = ollama.Client(host=server.url)
    reply = client.chat(model=MODEL, messages=MESSAGES)
    assert json.loads(reply.message.content)["candidate_id"] == "cand-0000042"
    assert reply.done and reply.prompt_eval_count > 60 and reply.eval_count > 20
    assert reply.total_duration >= reply.eval_duration >= 0
    pieces = list(client.chat(model=MODEL, messages=MESSAGES, stream=True))
    assert "".join(p.message.content for p in pieces) == reply.message.content
    assert pieces[-1].done and pieces[-1].done_reason == "stop"
    generated = client.generate(model=MODEL, prompt="Tell me more.", options={"num_predict": 7})
    assert generated.eval_count == 7 and generated.done_reason == "length"
    assert [m.model for m in client.list().models] == [MODEL]
    loaded = client.ps().models[0]
    assert loaded.size_vram > 6 * 1024**3 and loaded.context_length == 32768


def test_ollama_errors_are_ollama_shaped(server):
    client = ollama.Client(host=server.url)
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=MESSAGES)
    assert caught.value.status_code == 404 and "not found" in caught.value.error
