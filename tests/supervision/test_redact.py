"""The one redaction rule: secret-looking flags and variables lose their values."""

from __future__ import annotations

from harness.supervision import redact_command, redact_env
from harness.supervision.redact import MASK


def test_flag_value_forms_and_assignments_are_masked() -> None:
    argv = [
        "env",
        "OPENAI_API_KEY=sk-1",
        "python",
        "-m",
        "harness",
        "serve",
        "--api-key",
        "K",
        "--admin-token=T",
        "--client-secret",
        "S",
        "--Password=P",
        "--port",
        "8000",
        "--model",
        "m",
    ]
    assert redact_command(argv) == [
        "env",
        f"OPENAI_API_KEY={MASK}",
        "python",
        "-m",
        "harness",
        "serve",
        "--api-key",
        MASK,
        f"--admin-token={MASK}",
        "--client-secret",
        MASK,
        f"--Password={MASK}",
        "--port",
        "8000",
        "--model",
        "m",
    ]


def test_a_secret_flag_without_a_value_leaves_the_next_flag_alone() -> None:
    assert redact_command(["serve", "--use-api-key", "--port", "1"]) == [
        "serve",
        "--use-api-key",
        "--port",
        "1",
    ]


def test_env_values_are_masked_by_name() -> None:
    assert redact_env({"HF_TOKEN": "x", "PATH": "/bin"}) == {"HF_TOKEN": MASK, "PATH": "/bin"}
