"""Loopback-only networking: free ports for local servers, and the loopback rule for traffic.

Load, soak and chaos traffic goes only to this machine; a non-loopback target URL is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import psutil

from harness.errors import UserError

LOOPBACK_HOST = "127.0.0.1"  # what everything the harness starts binds to by default
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def free_port(host: str = LOOPBACK_HOST) -> int:
    """A TCP port that is free on host right now (the OS picks it; bind soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; names are never resolved, "" and "*" are all."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """True when url is http(s) to 127.0.0.0/8, ::1 or localhost; names are never resolved."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and is_loopback_host(host)


def require_loopback_url(url: str, option: str = "URL") -> str:
    """Return url when it is loopback, else raise UserError naming the option to fix."""
    if not is_loopback_url(url):
        raise UserError(
            f"{option} {url!r} is not a loopback http(s) URL; the harness only sends traffic to "
            "this machine: use http://127.0.0.1:PORT or http://localhost:PORT"
        )
    return url


def url_origin(url: str) -> str:
    """scheme://host:port of a URL: where a server's other endpoints (/metrics, /admin) live."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def listening_pid(url: str) -> int | None:
    """The pid of the local process listening on the URL's port, when this user may see it."""
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    except psutil.Error:
        return None
    return None
