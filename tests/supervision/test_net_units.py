"""Loopback-only URLs, free ports, and the units the CLI accepts."""

from __future__ import annotations

import socket

import pytest

from harness.errors import UserError
from harness.net import free_port, is_loopback_url, require_loopback_url, url_origin
from harness.units import format_bytes, parse_bytes, parse_duration


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/health",
        "http://localhost:1/x",
        "https://[::1]:8443/",
        "http://127.9.9.9",
    ],
)
def test_loopback_urls(url: str) -> None:
    assert is_loopback_url(url)
    assert require_loopback_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8000",
        "http://example.com",
        "http://localhost.example.com",  # a name is never resolved, only exact loopback names
        "http://127.0.0.1.nip.io",
        "ftp://127.0.0.1/",
        "127.0.0.1:8000",
        "http://127.0.0.1:notaport",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    assert not is_loopback_url(url)
    with pytest.raises(UserError, match=r"--target .* is not a loopback"):
        require_loopback_url(url, "--target")


def test_free_port_can_be_bound_and_origin() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert url_origin(f"http://127.0.0.1:{port}/health/ready") == f"http://127.0.0.1:{port}"


def test_units() -> None:
    assert parse_bytes("512M") == parse_bytes("512MiB") == 512 << 20
    assert parse_bytes("1.5g") == 3 << 29 and parse_bytes("4096") == 4096
    assert parse_duration("60s") == 60 and parse_duration("5m") == 300
    assert parse_duration("250ms") == 0.25 and parse_duration("0.1") == 0.1
    assert format_bytes(530 << 20) == "530.0 MiB" and format_bytes(None) == "unknown"
    with pytest.raises(UserError, match="--memory-limit 'lots' is not a size"):
        parse_bytes("lots", "--memory-limit")
    with pytest.raises(UserError, match="is not a duration"):
        parse_duration("-5s")
