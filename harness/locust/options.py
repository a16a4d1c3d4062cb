"""The harness's Locust options: added through `init_command_line_parser`, checked when parsed.

Options that take effect when a test starts are shown in the web UI; those fixed at startup (the
run directory, the embedded server, the chaos opt-in) are command line, env var or config only.
Locust prints `--help` before it loads locustfiles, so `python -m harness.locust` prints the help
with these options included.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from argparse import ArgumentTypeError, Namespace
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.locust.curves import LOAD_SHAPES
from harness.net import LOOPBACK_HOST, is_loopback_host, is_loopback_url
from harness.units import parse_duration

APIS = ("openai", "ollama")
CHAOS_USER = "OOMRecoveryUser"
DEFAULT_CANDIDATES = 200


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = parse_duration(text)
    except UserError as exc:
        raise ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise ArgumentTypeError(f"{text!r} must be longer than 0 s")
    return value


def _interval(text: str) -> float:
    value = _seconds(text)
    if value < 0.01:
        raise ArgumentTypeError(f"{text!r} is shorter than the 0.01 s the samplers support")
    return value


def add_arguments(parser: Any) -> None:
    """Listener for `events.init_command_line_parser`: our options, in their own --help section."""
    group = parser.add_argument_group(
        "LLM harness options",
        "Scenarios for OpenAI/Ollama-compatible servers (docs/scenarios.md). Without --host, an "
        "embedded reference server is started on a free loopback port.",
    )

    def add(*flags: str, web_ui: bool = True, **kwargs: Any) -> None:
        name = flags[0].lstrip("-").replace("-", "_").upper()
        action = group.add_argument(*flags, env_var=f"LOCUST_{name}", **kwargs)
        # LocustArgumentParser.add_argument sets these; an argument group's add_argument does not.
        action.include_in_web_ui = web_ui
        action.is_secret = action.is_required = action.is_multiple = False

    add(
        "--api",
        choices=APIS,
        default="openai",
        help="Wire protocol of ChatUser and StreamingChatUser: openai (/v1/chat/completions) or "
        "ollama (/api/chat). Default: openai",
    )
    add(
        "--model",
        metavar="<name>",
        help="Model name sent in every request. Default: the dataset's, else llama3.1:8b",
    )
    add(
        "--dataset",
        metavar="<path>",
        help="Dataset written by `harness gen` (json, jsonl or openai-batch), streamed. "
        "Default: generate --candidates on the fly",
    )
    add(
        "--candidates",
        type=_positive_int,
        default=DEFAULT_CANDIDATES,
        metavar="<int>",
        help=f"Candidates to generate when no --dataset is given. Default: {DEFAULT_CANDIDATES}",
    )
    add(
        "--seed",
        type=int,
        default=0,
        metavar="<int>",
        help="Seed of the generated candidates and their job. Default: 0",
    )
    add(
        "--max-tokens",
        type=_positive_int,
        metavar="<int>",
        help="max_tokens of every request. Default: the dataset's, else 512",
    )
    add(
        "--batch-size",
        type=_positive_int,
        default=20,
        metavar="<int>",
        help="Requests per batch job of BatchJobUser. Default: 20",
    )
    add(
        "--load-shape",
        choices=LOAD_SHAPES,
        default="steady",
        help="Load over time, scaled by -u, -r and -t: steady, ramp, step, spike or soak. "
        "Default: steady",
    )
    add(
        "--run-dir",
        metavar="<dir>",
        web_ui=False,
        help="Run directory for samples, events, requests.jsonl and summary; relative --csv, "
        "--html and --json-file paths land in it. Default: runs/locust-<time>-<id>",
    )
    add(
        "--sample-interval",
        type=_interval,
        default=0.5,
        metavar="<seconds>",
        web_ui=False,
        help="Seconds between RAM/VRAM/server samples. Default: 0.5",
    )
    add(
        "--server-args",
        default="",
        metavar="<args>",
        web_ui=False,
        help="Options for the embedded `harness serve`; write them after =, as they start with "
        '--: --server-args="--speed 10 --oom error"',
    )
    add(
        "--chaos-every",
        type=_seconds,
        metavar="<duration>",
        web_ui=False,
        help=f"Enable {CHAOS_USER}: inject an OOM into the target every <duration> (e.g. 30s) "
        "and time its recovery. Off by default",
    )
    add(
        "--chaos-max",
        type=_positive_int,
        default=10,
        metavar="<int>",
        web_ui=False,
        help="Most OOMs one test injects. Default: 10",
    )
    # Locust binds its web UI and master port to every interface, with no authentication.
    parser.set_defaults(web_host=LOOPBACK_HOST, master_bind_host=LOOPBACK_HOST)
    parser.parse_args = functools.partial(_parse_and_check, parser, parser.parse_args)


def wide_listeners(options: Any) -> list[str]:
    """Warnings for listeners a user opened beyond loopback (web UI, master port)."""
    wide = []
    if not getattr(options, "headless", False) and not _loopback_bind(options.web_host):
        wide.append(f"--web-host {options.web_host or '*'}: the web UI")
    if getattr(options, "master", False) and not _loopback_bind(options.master_bind_host):
        wide.append(f"--master-bind-host {options.master_bind_host}: the master port")
    return [
        f"{what} listens beyond this machine with no authentication; anyone who reaches it "
        "can start load. Use 127.0.0.1 unless you mean it"
        for what in wide
    ]


def _loopback_bind(host: str) -> bool:
    return host not in ("", "*") and is_loopback_host(host)


def _parse_and_check(parser: Any, parse_args: Callable[..., Namespace], *args: Any, **kwargs: Any):
    """Locust's parse_args, then our checks as argparse errors and paths made absolute.

    Absolute paths survive being forwarded to workers (another cwd); relative --csv/--html/
    --json-file paths are placed in an explicit --run-dir before Locust opens them.
    """
    options = parse_args(*args, **kwargs)
    try:
        check_options(options)
        _check_user_classes(options)
    except UserError as exc:
        parser.error(str(exc))
    return options


def _check_user_classes(options: Namespace) -> None:
    """Name the user classes there are when one asked for is unknown (Locust only says which)."""
    from locust import User  # under Locust only: options.py is usable without it

    known: set[str] = set()
    pending = list(User.__subclasses__())
    while pending:
        user = pending.pop()
        pending.extend(user.__subclasses__())
        if not user.abstract:
            known.add(user.__name__)
    unknown = [name for name in getattr(options, "user_classes", None) or () if name not in known]
    if unknown and known:
        raise UserError(
            f"unknown user class {', '.join(unknown)}; the classes are {', '.join(sorted(known))}"
        )


def check_options(options: Namespace) -> None:
    """Refuse what cannot work (UserError saying how to fix it) and normalise paths, in place."""
    if options.host and not is_loopback_url(options.host):
        raise UserError(
            f"--host {options.host!r} is not a loopback http(s) URL; the harness only sends load "
            "to this machine: use http://127.0.0.1:PORT, or omit --host for the embedded server"
        )
    if options.dataset:
        dataset = Path(options.dataset).expanduser()
        if not dataset.is_file():
            raise UserError(
                f"--dataset {options.dataset!r} is not a file; write one with "
                "`harness gen --n 1000 --format jsonl --out data.jsonl`"
            )
        options.dataset = str(dataset.resolve())
    try:
        shlex.split(options.server_args or "")
    except ValueError as exc:
        raise UserError(f"--server-args {options.server_args!r} cannot be split: {exc}") from None
    if options.run_dir:
        run_dir = Path(options.run_dir).expanduser().resolve()
        options.run_dir = str(run_dir)
        for name in ("csv_prefix", "html_file", "json_file"):
            value = getattr(options, name, None)
            if value and not Path(value).is_absolute():
                setattr(options, name, str(run_dir / value))


@dataclass(frozen=True)
class Settings:
    """The options a test runs with, typed (the web UI hands values over as strings)."""

    api: str
    model: str | None
    dataset: str | None
    candidates: int
    seed: int
    max_tokens: int | None
    batch_size: int
    load_shape: str
    chaos_every: float | None
    chaos_max: int

    @classmethod
    def from_options(cls, options: Namespace) -> Settings:
        def value(name: str, convert: Callable[[str], Any], default: Any = None) -> Any:
            raw = getattr(options, name, None)
            if raw is None or raw == "":
                return default
            if isinstance(raw, str):
                try:
                    return convert(raw)
                except ArgumentTypeError as exc:
                    raise UserError(f"--{name.replace('_', '-')}: {exc}") from None
            return raw

        def choice(name: str, choices: tuple[str, ...]) -> str:
            raw = getattr(options, name, None) or choices[0]
            if raw not in choices:
                raise UserError(f"--{name.replace('_', '-')} {raw!r}: choose one of {choices}")
            return raw

        return cls(
            api=choice("api", APIS),
            model=value("model", str),
            dataset=value("dataset", str),
            candidates=value("candidates", _positive_int, DEFAULT_CANDIDATES),
            seed=value("seed", int, 0),
            max_tokens=value("max_tokens", _positive_int),
            batch_size=value("batch_size", _positive_int, 20),
            load_shape=choice("load_shape", LOAD_SHAPES),
            chaos_every=value("chaos_every", _seconds),
            chaos_max=value("chaos_max", _positive_int, 10),
        )


def chaos_requested(argv: list[str] | None = None) -> bool:
    """Whether this Locust run opted in to OOMRecoveryUser, decided before Locust parses options.

    Locust collects user classes before it parses the command line, so the chaos user's
    `abstract` flag is settled from --chaos-every (command line, LOCUST_CHAOS_EVERY or a config
    file, as Locust reads them) or from OOMRecoveryUser being named (argument or
    LOCUST_USER_CLASSES).
    """
    from locust.argument_parser import get_empty_argument_parser

    argv = sys.argv[1:] if argv is None else argv
    if CHAOS_USER in argv or CHAOS_USER in os.environ.get("LOCUST_USER_CLASSES", "").split():
        return True
    parser = get_empty_argument_parser(add_help=False)
    parser.add_argument("--chaos-every", env_var="LOCUST_CHAOS_EVERY")
    try:
        known, _ = parser.parse_known_args(argv)
    except SystemExit:  # a malformed command line: Locust's own parse reports it
        return False
    return bool(known.chaos_every)
