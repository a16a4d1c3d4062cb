"""Profile arithmetic, the token estimate, trimming strategies and CLI checks (in-process)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from harness.errors import UserError
from harness.server import PROFILES
from harness.server.context import Entry, select_kept
from harness.server.generation import count_chat_tokens, count_tokens, split_tokens
from harness.server.simulator import GiB
from harness.units import format_speed, parse_speed

from .conftest import ROOT


def test_kv_bytes_per_token_is_2_x_layers_x_kv_heads_x_head_dim_x_dtype():
    llama8b = PROFILES["llama3.1-8b-16gb"]
    assert llama8b.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072
    assert PROFILES["llama3.1-70b-80gb"].kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    assert PROFILES["qwen2.5-0.5b-1.5gb"].kv_bytes_per_token == 2 * 24 * 2 * 64 * 2


def test_kv_capacity_is_what_weights_and_overhead_leave_of_vram():
    p = PROFILES["llama3.1-8b-16gb"]
    assert p.kv_capacity_bytes == 16 * GiB - 6_596_006_112 - 1 * GiB
    assert p.kv_capacity_tokens == p.kv_capacity_bytes // 131_072 == 72_556
    assert p.context_limit == 32_768
    # Two full 32K contexts fit on the 16 GB card, a third one runs out of memory.
    assert 3 * p.context_limit > p.kv_capacity_tokens > 2 * p.context_limit


def test_profile_overrides_are_typed_and_checked():
    p = PROFILES["llama3.1-8b-16gb"].with_overrides({"max_num_seqs": "256", "itl_s": "0.05"})
    assert (p.max_num_seqs, p.itl_s) == (256, 0.05)
    with pytest.raises(ValueError, match="unknown profile field 'layerz'"):
        p.with_overrides({"layerz": "1"})
    with pytest.raises(ValueError, match="not a valid int"):
        p.with_overrides({"layers": "many"})
    with pytest.raises(ValueError, match="leave no room for a KV cache"):
        p.with_overrides({"vram_total_bytes": str(4 * GiB)})


def test_token_estimate_is_utf8_bytes_over_four():
    assert count_tokens("") == 0
    assert count_tokens("abcd") == 1 and count_tokens("abcde") == 2
    assert count_tokens("é" * 4) == 2  # 8 UTF-8 bytes
    assert count_chat_tokens([("user", "abcd"), ("assistant", "")]) == 3 + (1 + 4) + (0 + 4)
    assert split_tokens("abcdefghij") == ["abcd", "efgh", "ij"]


def test_speed_parsing():
    assert parse_speed("max") == math.inf and parse_speed("2.5") == 2.5
    assert parse_speed(format_speed(math.inf)) == math.inf and parse_speed(format_speed(0.5)) == 0.5
    for bad in ("0", "-1", "fast", "nan"):
        with pytest.raises(UserError, match="give a positive number or 'max'"):
            parse_speed(bad)


def entries() -> list[Entry]:
    return [
        Entry("system", 100, math.inf),
        Entry("user", 50, 0.5),
        Entry("assistant", 50, 1.9),  # an old, high-scoring evaluation
        Entry("user", 50, 0.5),
        Entry("assistant", 50, 1.2),
        Entry("user", 50, 0.5),
        Entry("assistant", 50, 1.3),
    ]


def roles_kept(strategy: str, budget: int) -> list[tuple[str, float]]:
    return [(e.role, e.importance) for e in select_kept(entries(), budget, strategy, recent=2)]


def test_sliding_window_keeps_the_system_prompt_and_the_newest_messages():
    assert roles_kept("sliding_window", 250) == [
        ("system", math.inf),
        ("assistant", 1.2),
        ("user", 0.5),
        ("assistant", 1.3),
    ]


def test_importance_keeps_the_most_important_messages():
    assert roles_kept("importance", 250) == [
        ("system", math.inf),
        ("assistant", 1.9),
        ("assistant", 1.2),
        ("assistant", 1.3),
    ]


def test_hybrid_keeps_recent_messages_then_the_most_important():
    assert roles_kept("hybrid", 250) == [
        ("system", math.inf),
        ("assistant", 1.9),
        ("user", 0.5),
        ("assistant", 1.3),
    ]


def test_aggressive_keeps_only_the_last_exchange():
    assert roles_kept("aggressive", 1000) == [
        ("system", math.inf),
        ("user", 0.5),
        ("assistant", 1.3),
    ]


def test_cli_refuses_non_loopback_hosts_and_bad_flags():
    def serve(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "harness", "serve", *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)

    for args, message in (
        (("--host", "0.0.0.0"), "binds loopback addresses only"),
        (("--profile", "gpt-5"), "unknown profile"),
        (("--speed", "fast"), "give a positive number or 'max'"),
        (("--set", "layers"), "write FIELD=VALUE"),
    ):
        result = serve(*args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    listing = serve("--list-profiles")
    assert listing.returncode == 0 and "llama3.1-8b-16gb" in listing.stdout
