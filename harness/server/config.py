"""Everything a server is started with (the CLI builds one from its flags)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.server.context import ContextPolicy
from harness.server.simulator import DEFAULT_PROFILE, PROFILES, Profile

MiB = 1024**2
HOST_MEMORY_RATIO = 1 / 16  # with --host-memory: bytes of host RAM held per byte of KV cache


def default_data_dir() -> Path:
    """Where batches and files persist: $XDG_DATA_HOME/harness/server (~/.local/share/...)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "harness" / "server"


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may cost the server in bytes, headers, time and descriptors."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    body_timeout_s: float = 30.0
    min_body_rate: int = 64 * 1024  # bytes/s a long body must keep up on top of body_timeout_s
    max_connections: int = 4096
    linger_s: float = 2.0  # after a 431, how long the rest of a huge head is read and dropped


@dataclass(frozen=True)
class ServerConfig:
    """Options of one reference server; see `harness serve --help` for each."""

    host: str = "127.0.0.1"
    port: int = 8000
    profile: Profile = PROFILES[DEFAULT_PROFILE]
    speed: float = 1.0
    oom: str = "error"
    host_memory_ratio: float = 0.0
    data_dir: Path = field(default_factory=default_data_dir)
    api_key: str | None = None
    admin_token: str | None = None
    load_time_s: float = 0.0
    served_model_names: tuple[str, ...] = ()
    context: ContextPolicy = field(default_factory=ContextPolicy)
    max_body_bytes: int = 32 * MiB
    max_file_bytes: int = 8192 * MiB
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    batch_window_s: float = 24 * 3600.0  # how long the only completion window, "24h", lasts
    seed: int = 0

    @property
    def model_names(self) -> tuple[str, ...]:
        """Names the model answers to; the first is the one Ollama's endpoints list."""
        return self.served_model_names or (self.profile.model, *self.profile.aliases)

    @property
    def zero_latency(self) -> bool:
        return math.isinf(self.speed)
