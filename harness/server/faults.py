"""Faults: the CUDA out-of-memory death and POST /admin/faults (OOM, crash, hang, errors, latency).

Fault durations are wall-clock seconds (not divided by --speed): they are what a chaos test
waits through. The endpoint is token-protected and answers loopback clients only.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import os
import random
import signal
import sys
import time
import traceback
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from harness.server.protocol import ApiError, invalid_type, invalid_value, missing

if TYPE_CHECKING:
    from harness.server.simulator import Simulator

MiB = 1024**2
GiB = 1024**3
MAX_FAULT_SECONDS = 3600.0
FAULTS = ("oom", "crash", "hang", "error_rate", "latency", "clear")


def cuda_oom_message(tried_bytes: int, total_bytes: int, allocated_bytes: int) -> str:
    """The message PyTorch gives when a CUDA allocation fails."""
    free = max(0, total_bytes - allocated_bytes)
    reserved = min(total_bytes, allocated_bytes + 64 * MiB)
    return (
        f"CUDA out of memory. Tried to allocate {tried_bytes / MiB:.2f} MiB "
        f"(GPU 0; {total_bytes / GiB:.2f} GiB total capacity; "
        f"{allocated_bytes / GiB:.2f} GiB already allocated; {free / MiB:.2f} MiB free; "
        f"{reserved / GiB:.2f} GiB reserved in total by PyTorch) If reserved memory is >> "
        "allocated memory try setting max_split_size_mb to avoid fragmentation.  See "
        "documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF"
    )


_last_words: list[weakref.WeakMethod] = []


def on_oom_death(hook: Callable[[], None]) -> None:
    """Call this bound method just before an OOM death (the batches record what was in flight)."""
    _last_words.append(weakref.WeakMethod(hook))  # type: ignore[arg-type]


def die_of_oom(message: str) -> NoReturn:
    """Log the OOM to stderr, then die of SIGKILL (exit -9), as the kernel's OOM killer does."""
    print(f"torch.OutOfMemoryError: {message}", file=sys.stderr, flush=True)
    for ref in _last_words:
        hook = ref()
        if hook is not None:
            try:
                hook()
            except Exception:  # dying anyway: the death must not wait on a failed record
                traceback.print_exc()
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(-signal.SIGKILL)  # not reached: SIGKILL cannot be caught


def crash() -> NoReturn:
    """Exit with code 1 after printing a traceback, as an unhandled exception would."""
    try:
        raise RuntimeError("simulated crash injected via POST /admin/faults")
    except RuntimeError:
        traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)


class Faults:
    """The faults in effect: a hang, an error rate or extra latency, each until a deadline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, seed: int = 0) -> None:
        self._clock = clock
        self._rng = random.Random(seed)
        self.hang_until = 0.0
        self.error_rate = 0.0
        self.error_until = 0.0
        self.extra_s = 0.0
        self.latency_until = 0.0

    @property
    def hung(self) -> bool:
        return self._clock() < self.hang_until

    async def wait_while_hung(self) -> None:
        while (left := self.hang_until - self._clock()) > 0:
            await asyncio.sleep(left)

    def check_error_rate(self) -> None:
        """Fail this request with a 500 while an error-rate fault is in effect (that share)."""
        if (
            self.error_rate
            and self._clock() < self.error_until
            and self._rng.random() < self.error_rate
        ):
            raise ApiError(
                500,
                "Internal server error (fault injected via /admin/faults).",
                type="server_error",
                code="injected_fault",
            )

    def extra_latency_s(self) -> float:
        return self.extra_s if self.extra_s and self._clock() < self.latency_until else 0.0

    def active(self) -> dict[str, Any]:
        """The faults in effect now, with seconds left, for GET /admin/faults."""
        now = self._clock()
        active: dict[str, Any] = {}
        if now < self.hang_until:
            active["hang"] = {"seconds_left": self.hang_until - now}
        if self.error_rate and now < self.error_until:
            active["error_rate"] = {"rate": self.error_rate, "seconds_left": self.error_until - now}
        if self.extra_s and now < self.latency_until:
            active["latency"] = {
                "extra_seconds": self.extra_s,
                "seconds_left": self.latency_until - now,
            }
        return active

    def clear(self) -> None:
        self.hang_until = self.error_until = self.latency_until = 0.0
        self.error_rate = self.extra_s = 0.0

    def apply(self, fault: str, body: dict[str, Any]) -> dict[str, Any]:
        """Put a timed fault in effect; returns its validated parameters."""
        now = self._clock()
        if fault == "clear":
            self.clear()
            return {}
        seconds = _number(body, "seconds", 0.0, MAX_FAULT_SECONDS, exclusive_min=True)
        if fault == "hang":
            self.hang_until = now + seconds
            return {"seconds": seconds}
        if fault == "error_rate":
            self.error_rate = _number(body, "rate", 0.0, 1.0)
            self.error_until = now + seconds
            return {"rate": self.error_rate, "seconds": seconds}
        self.extra_s = _number(body, "extra_seconds", 0.0, MAX_FAULT_SECONDS)
        self.latency_until = now + seconds
        return {"extra_seconds": self.extra_s, "seconds": seconds}


def parse_fault(body: dict[str, Any]) -> str:
    fault = body.get("fault")
    if fault is None:
        raise missing("fault")
    if fault not in FAULTS:
        raise invalid_value("fault", f"{fault!r} is not one of {list(FAULTS)}.")
    return fault


def check_admin(client_host: str | None, authorization: str | None, token: str | None) -> None:
    """Loopback clients with the admin token only; 403/401 say how to get access."""
    if not _is_loopback(client_host):
        raise ApiError(
            403, "Admin endpoints answer loopback clients only.", type="permission_error"
        )
    if not token:
        raise ApiError(
            403,
            "Fault injection is disabled: start the server with --admin-token TOKEN "
            "(or set HARNESS_ADMIN_TOKEN) and send 'Authorization: Bearer TOKEN'.",
            type="permission_error",
            code="admin_disabled",
        )
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(
            401,
            "Missing or wrong admin token: send 'Authorization: Bearer <admin token>'.",
            type="invalid_request_error",
            code="invalid_admin_token",
        )


def inject(
    simulator: Simulator, faults: Faults, body: dict[str, Any]
) -> tuple[dict[str, Any], Callable[[], None] | None]:
    """Apply a fault; returns the answer and what to do once it is sent (die, crash)."""
    fault = parse_fault(body)
    simulator.metrics.fault(fault)
    if fault == "crash":
        return {"injected": "crash", "exit_code": 1}, crash
    if fault == "oom":
        if simulator.oom_mode == "kill":
            message = simulator.oom_message()
            return {"injected": "oom", "mode": "kill", "message": message}, lambda: die_of_oom(
                message
            )
        message, failed = simulator.fail_running_with_oom()
        return {"injected": "oom", "mode": "error", "message": message, "failed": failed}, None
    return {"injected": fault, **faults.apply(fault, body)}, None


def _number(
    body: dict[str, Any], key: str, low: float, high: float, exclusive_min: bool = False
) -> float:
    value = body.get(key)
    if value is None:
        raise missing(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise invalid_type(key, "a number", value)
    too_low = value <= low if exclusive_min else value < low
    if too_low or value > high or math.isnan(value):
        bound = f"more than {low}" if exclusive_min else f"at least {low}"
        raise invalid_value(key, f"{value} must be {bound} and at most {high}.")
    return float(value)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
