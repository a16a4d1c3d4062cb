"""One vocabulary for run records: event kinds, the requests.jsonl line, the scale settings as the
manifest stores them, and `--speed`, each defined once and used everywhere."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import orjson
import pytest

from harness.admin_faults import FaultRefused, post_fault
from harness.errors import UserError
from harness.rundir import EventKind, request_record
from harness.scale import ScaleConfig
from harness.scale.config import config_from_settings, config_settings
from harness.units import format_speed, parse_speed

ROOT = Path(__file__).resolve().parents[2]
_EMITTERS = {"event", "_event", "_emit", "events_of"}


def _bare_kinds(path: Path) -> list[str]:
    """Calls that name an event kind with a string literal instead of an EventKind."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        if name in _EMITTERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}({first.value!r})")
    return found


def test_every_event_kind_is_named_once():
    kinds = [v for k, v in vars(EventKind).items() if k.isupper()]
    assert len(kinds) == len(set(kinds))
    sources = [
        p for room in ("harness", "scenarios", "reports") for p in (ROOT / room).rglob("*.py")
    ]
    bare = [line for path in sources for line in _bare_kinds(path)]
    assert not bare, "use EventKind for these: " + "; ".join(bare)


def test_a_request_record_has_the_same_keys_from_every_producer():
    common = dict(t=1.0, t_end=1.5, custom_id="c-1", status=200, latency_s=0.5, attempt=1)
    ok = request_record(ok=True, error=None, **common)
    failed = request_record(ok=False, error="oom_error", message="CUDA out of memory", **common)
    batch = request_record(ok=True, error=None, batch_id="batch_1", **common)
    assert list(ok) == [
        "t",
        "t_end",
        "id",
        "ok",
        "status",
        "error",
        "latency_s",
        "ttft_s",
        "itl_mean_s",
        "tpot_s",
        "prompt_tokens",
        "output_tokens",
        "attempt",
    ]
    assert "message" not in ok and failed["message"] == "CUDA out of memory"
    assert list(batch) == [*ok, "batch_id"] and ok["id"] == "c-1"


def test_speed_has_one_encoding_from_the_command_line_to_the_manifest_and_back():
    assert parse_speed("max") == parse_speed("inf") == math.inf == ScaleConfig().speed
    for speed in (math.inf, 10.0, 0.5):
        assert parse_speed(format_speed(speed)) == speed
    with pytest.raises(UserError, match="give a positive number or 'max'"):
        parse_speed("0")
    config = ScaleConfig(speed=math.inf, api_key="sk-secret", serve=("srv", "--api-key", "k"))
    stored = orjson.loads(orjson.dumps(config_settings(config)))  # as the manifest holds it
    assert stored["speed"] == "max" and "api_key" not in stored and "k" not in stored["serve"]
    back = config_from_settings(stored)
    assert back.speed == math.inf and back.api_key is None and back.serve[0] == "srv"
    rung = config_from_settings(
        orjson.loads(orjson.dumps(config_settings(config, keep_secrets=True)))
    )
    assert rung == config  # a ladder rung gets everything, secrets included
    assert config_from_settings({**stored, "speed": None}).speed == math.inf  # older manifests


def test_post_fault_tells_a_refusal_from_a_death(make_server):
    """A refused fault is an error with the server's message; a connection that breaks (the
    server died of the fault) is None."""
    refused = make_server(lambda path, body: (401, {}, b'{"error": {"message": "wrong token"}}'))
    with pytest.raises(FaultRefused, match="HTTP 401: wrong token"):
        post_fault(refused.url, "t", {"fault": "oom"})
    answered = make_server(lambda path, body: (200, {}, b'{"mode": "kill"}'))
    assert post_fault(answered.url, "t", {"fault": "oom"}) == {"mode": "kill"}
    dying = make_server(lambda path, body: "reset")
    assert post_fault(dying.url, "t", {"fault": "oom"}) is None
    assert {refused.requests, answered.requests, dying.requests} == {1}
