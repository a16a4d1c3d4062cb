"""The harness: load/scale testing and synthetic data for LLM inference servers."""

from harness.errors import UserError
from harness.rundir import RunDir, read_jsonl
from harness.slowdown import start_from_env

start_from_env()  # a test-only knob, inert unless HARNESS_TEST_SLOWDOWN is set

__version__ = "0.1.0"

__all__ = ["RunDir", "UserError", "__version__", "read_jsonl"]
