"""`harness` command line: one subcommand per module in harness.commands.

A user mistake raises UserError and is printed as one line ("harness: error: ..."), exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from harness import __version__
from harness.errors import UserError

# Each module defines register(subparsers), which adds its parser and sets `handler`.
_COMMAND_MODULES = {
    "gen": "harness.commands.gen",
    "learn": "harness.commands.learn",
    "capture": "harness.commands.capture",
    "validate": "harness.commands.validate",
    "serve": "harness.commands.serve",
    "supervise": "harness.commands.supervise",
    "sample": "harness.commands.sample",
    "chaos": "harness.commands.chaos",
    "scale": "harness.commands.scale",
    "report": "harness.commands.report",
    "compare": "harness.commands.compare",
    "sweep": "harness.commands.sweep",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with a known command, only that command's module is imported.

    Importing every room costs ~0.5 s, paid on each `harness serve` restart otherwise.
    """
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Load/scale testing and synthetic data for LLM inference servers.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [command] if command in _COMMAND_MODULES else list(_COMMAND_MODULES)
    for name in names:
        importlib.import_module(_COMMAND_MODULES[name]).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine refused (a path that is not a directory, no space)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"harness: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
