"""The reference inference server behind `harness serve`: OpenAI and Ollama wire-compatible,
with a simulated GPU (memory, latency, OOM), persistent batches and fault injection."""

from harness.server.app import create_app, serve
from harness.server.config import ServerConfig
from harness.server.simulator import DEFAULT_PROFILE, PROFILES, Profile

__all__ = ["DEFAULT_PROFILE", "PROFILES", "Profile", "ServerConfig", "create_app", "serve"]
