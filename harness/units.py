"""Human units on the command line: sizes ("512M", "1.5GiB"), durations ("60s", "5m", "0.1")
and speeds ("10", "max")."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import TypeVar

from harness.errors import UserError

_T = TypeVar("_T")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_bytes(text: str, option: str = "size") -> int:
    """Bytes from "512M", "512MiB", "2g", "1048576"; K/M/G/T are powers of 1024, as Docker's are."""
    match = _SIZE.match(text)
    if not match:
        raise UserError(f"{option} {text!r} is not a size; write e.g. 512M, 2G or 1048576 (bytes)")
    number, unit, _ = match.groups()
    size = float(number) * 1024 ** _POWERS[unit.lower()]
    if size >= 2**63:
        raise UserError(f"{option} {text!r} is more than any machine holds")
    return int(size)


def parse_duration(text: str, option: str = "duration") -> float:
    """Seconds from "60s", "5m", "1h", "250ms" or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise UserError(f"{option} {text!r} is not a duration; write e.g. 30s, 5m, 1h or 0.5")
    number, unit = match.groups()
    return float(number) * _SECONDS[unit.lower() if unit else None]


def parse_speed(text: str, option: str = "--speed") -> float:
    """A simulated-latency divisor: a positive factor, or "max" (also "inf") for no delay at all,
    which is math.inf."""
    if text.strip().lower() in ("max", "inf", "infinite"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise UserError(f"{option} {text!r}: give a positive number or 'max'")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a number, neither infinite nor NaN (no option takes those)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def whole_number(text: str) -> int:
    """An argparse type: an integer JSON files can hold (64-bit), as every count and seed is."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (64-bit)")
    return value


def argument(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """An argparse type from a parser that raises UserError: its message, as argparse's."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def format_speed(speed: float) -> str:
    """A speed as parse_speed reads it back: "max" for no delay, else the factor."""
    return "max" if math.isinf(speed) else repr(speed)


def format_bytes(n: float | None) -> str:
    """Short human size for messages: 530.2 MiB."""
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
