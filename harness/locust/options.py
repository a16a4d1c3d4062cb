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

from harness.arrivals import ARRIVALS, DEFAULT_LAG_LIMIT_S, ArrivalSpec
from harness.errors import UserError
from harness.locust.curves import LOAD_SHAPES
from harness.net import LOOPBACK_HOST, free_port, is_loopback_host, is_loopback_url
from harness.supervision.victim import DEFAULT_VICTIM, parse_victim
from harness.units import argument, finite_float, parse_duration, whole_number

APIS = ("openai", "ollama")
CHAOS_USER = "OOMRecoveryUser"
DEFAULT_CANDIDATES = 200
LOOPBACK = LOOPBACK_HOST
# Locust's own listening sockets, bound to loopback unless the user says otherwise.
_LISTENERS = {"web_host": "--web-host", "master_bind_host": "--master-bind-host"}


def _positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _seconds(text: str) -> float:
    value = argument(parse_duration)(text)
    if value <= 0:
        raise ArgumentTypeError(f"{text!r} must be longer than 0 s")
    return value


def _positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise ArgumentTypeError(f"{text!r} must be above 0")
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
        type=whole_number,
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
        "--rate",
        type=_positive_float,
        metavar="<req/s>",
        help="Open loop: chat requests arrive at this rate (whole run, all processes), sent "
        "at their scheduled times however many are in flight. Default: closed loop (-u users, "
        "one request in flight each)",
    )
    add(
        "--arrival",
        choices=ARRIVALS,
        default="poisson",
        help="How --rate arrivals are spaced: constant, poisson or gamma (vLLM bench's). "
        "Default: poisson",
    )
    add(
        "--burstiness",
        type=_positive_float,
        default=1.0,
        metavar="<float>",
        help="Shape of --arrival gamma: gaps' CV is 1/sqrt(B); below 1 burstier, 1 is Poisson. "
        "Default: 1",
    )
    add(
        "--trace",
        metavar="<path>",
        help="Open loop: replay the send times of a trace (JSONL: Mooncake/AIPerf `timestamp` "
        "in ms, or a harness requests.jsonl); the test ends when the trace does",
    )
    add(
        "--max-concurrency",
        type=_positive_int,
        metavar="<int>",
        help="With --rate or --trace: most requests in flight at once (whole run); an arrival "
        "that finds them all busy waits, and its lag shows it. Default: 1024 per process",
    )
    add(
        "--schedule-lag-limit",
        type=_seconds,
        default=DEFAULT_LAG_LIMIT_S,
        metavar="<duration>",
        help="A run whose schedule lag p99 (actual minus scheduled send time) exceeds this is "
        f"flagged behind schedule. Default: {DEFAULT_LAG_LIMIT_S * 1000:g}ms",
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
    add(
        "--supervisor",
        metavar="<dir>",
        web_ui=False,
        help="The run directory of the `harness supervise` keeping the target alive: "
        f"{CHAOS_USER} SIGKILLs through it as the kernel's OOM killer does (no admin token), "
        "and its deaths are recorded and timed in this run. --host defaults to its URL",
    )
    add(
        "--victim",
        metavar="<who>",
        web_ui=False,
        help=f"With --supervisor: whom {CHAOS_USER} kills: largest (the process the OOM killer "
        "picks: highest oom_score in the tree, e.g. vLLM's worker), leader, or a pid. "
        "Default: largest",
    )
    _bind_to_loopback(parser)
    parser.parse_args = functools.partial(_parse_and_check, parser, parser.parse_args)


def _bind_to_loopback(parser: Any) -> None:
    """Locust's web UI and master port listen on 127.0.0.1 unless --web-host or
    --master-bind-host (or their LOCUST_ variables or config keys) open them wider."""
    parser.set_defaults(**dict.fromkeys(_LISTENERS, LOOPBACK))
    for action in parser._actions:  # the --help text says the harness's default, not Locust's
        if action.dest in _LISTENERS:
            action.default = LOOPBACK
            action.help = (
                f"Interface to listen on; '*' for all. Default: {LOOPBACK} (the harness plugin; "
                "Locust's own default is every interface)"
            )


def exposure_warnings(options: Namespace) -> list[str]:
    """One line for each Locust socket this run opens beyond loopback, which nothing guards."""
    warnings = []
    web_host = getattr(options, "web_host", LOOPBACK)
    if not getattr(options, "headless", False) and not _is_loopback_host(web_host):
        login = "" if getattr(options, "web_login", False) else " without a login"
        warnings.append(
            f"the Locust web UI listens on {web_host or '*'}:{options.web_port}{login}: anyone "
            f"who can reach this machine can start load from it (--web-host {LOOPBACK}, the "
            "default, keeps it local)"
        )
    bind_host = getattr(options, "master_bind_host", LOOPBACK)
    is_master = getattr(options, "master", False) or getattr(options, "processes", None)
    if is_master and not _is_loopback_host(bind_host):
        warnings.append(
            f"the Locust master listens on {bind_host or '*'}:{options.master_bind_port} "
            "with no authentication: any process that reaches it joins as a worker and gets "
            f"the test (--master-bind-host {LOOPBACK}, the default, keeps it local)"
        )
    return warnings


def _is_loopback_host(host: str | None) -> bool:
    return bool(host) and host != "*" and is_loopback_host(host)


def _parse_and_check(parser: Any, parse_args: Callable[..., Namespace], *args: Any, **kwargs: Any):
    """Locust's parse_args, then our checks as argparse errors and paths made absolute.

    Absolute paths survive being forwarded to workers (another cwd); relative --csv/--html/
    --json-file paths are placed in an explicit --run-dir before Locust opens them.
    """
    options = parse_args(*args, **kwargs)
    try:
        check_options(options)
        check_user_classes(options)
    except UserError as exc:
        parser.error(str(exc))
    _own_master_port(parser, options)
    return options


def _own_master_port(parser: Any, options: Namespace) -> None:
    """--processes N: the master and the workers it forks meet on a free port of their own. On
    Locust's fixed default (5557), two runs on one machine took each other's workers, each then
    sending the other's test, or one failed to bind. A port given with --master-bind-port or
    --master-port stays."""
    if not getattr(options, "processes", None):
        return
    ports = ("master_bind_port", "master_port")
    if all(getattr(options, name, None) == parser.get_default(name) for name in ports):
        options.master_bind_port = options.master_port = free_port()


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
    if getattr(options, "trace", None):
        trace = Path(options.trace).expanduser()
        if not trace.is_file():
            raise UserError(
                f"--trace {options.trace!r} is not a file: give a JSONL trace (Mooncake/AIPerf "
                "`timestamp` in ms) or a harness run's requests.jsonl"
            )
        options.trace = str(trace.resolve())
    arrival_spec(options)
    if getattr(options, "supervisor", None):
        supervisor = Path(options.supervisor).expanduser()
        if not (supervisor / "target.json").is_file():
            raise UserError(
                f"--supervisor {options.supervisor!r} has no target.json: give the --run-dir of a "
                "running `harness supervise`"
            )
        options.supervisor = str(supervisor.resolve())
    elif getattr(options, "victim", None):
        raise UserError("--victim picks whom to kill through --supervisor: give --supervisor too")
    if isinstance(getattr(options, "victim", None), str):
        parse_victim(options.victim)  # refused now, naming the choices, not at the first kill
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
    supervisor: str | None
    victim: str | int
    arrivals: ArrivalSpec | None
    max_concurrency: int | None
    schedule_lag_limit: float

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
            supervisor=value("supervisor", str),
            victim=value("victim", argument(parse_victim), DEFAULT_VICTIM),
            arrivals=arrival_spec(options, value),
            max_concurrency=value("max_concurrency", _positive_int),
            schedule_lag_limit=value("schedule_lag_limit", _seconds, DEFAULT_LAG_LIMIT_S),
        )


def arrival_spec(options: Namespace, value: Callable[..., Any] | None = None) -> ArrivalSpec | None:
    """The open-loop schedule the options ask for; None for closed-loop users."""
    if value is None:
        value = functools.partial(_raw_option, options)
    rate = value("rate", _positive_float)
    trace = value("trace", str)
    arrival = value("arrival", str, "poisson")
    burstiness = value("burstiness", _positive_float, 1.0)
    if rate is None and trace is None:
        if arrival != "poisson" or burstiness != 1.0:
            raise UserError("--arrival and --burstiness shape the arrivals of --rate: give --rate")
        return None
    if rate is not None and trace is not None:
        raise UserError("--rate and --trace both set the arrivals: give one")
    if trace is not None and (arrival != "poisson" or burstiness != 1.0):
        raise UserError("--trace replays its own times: drop --arrival and --burstiness")
    load_shape = getattr(options, "load_shape", None) or "steady"
    if load_shape != "steady":
        raise UserError(
            f"--load-shape {load_shape} moves users, but with --rate or --trace the arrivals set "
            "the load: drop --load-shape"
        )
    if arrival not in ARRIVALS:
        raise UserError(f"--arrival {arrival!r}: choose one of {', '.join(ARRIVALS)}")
    try:
        return ArrivalSpec(
            rate=rate,
            arrival=arrival,
            burstiness=burstiness,
            seed=value("seed", int, 0),
            trace=trace,
        )
    except UserError as exc:
        raise UserError(f"--rate/--trace: {exc}") from None


def _raw_option(options: Namespace, name: str, convert: Callable[[str], Any], default: Any = None):
    raw = getattr(options, name, None)
    if raw is None or raw == "":
        return default
    return convert(raw) if isinstance(raw, str) else raw


def check_user_classes(options: Namespace) -> None:
    """Unknown user class names, refused with the names the locustfiles define.

    Runs as options are parsed, after Locust has imported the locustfiles and before it checks
    the names itself ("Unknown User(s)" without saying which exist).
    """
    wanted = list(getattr(options, "user_classes", None) or ())
    if not wanted:
        return
    defined = defined_user_classes(getattr(options, "locustfile", None))
    if defined is None:
        return  # locustfiles from a URL or a master: Locust checks the names
    unknown = [name for name in wanted if name not in defined]
    if unknown:
        hint = "" if CHAOS_USER in defined else f" ({CHAOS_USER} with --chaos-every)"
        raise UserError(
            f"unknown user class {', '.join(unknown)}; the locustfiles define "
            f"{', '.join(sorted(defined))}{hint}"
        )


def defined_user_classes(locustfile: str | None) -> set[str] | None:
    """Names of the runnable User classes in the loaded locustfiles, as Locust finds them."""
    from locust.argument_parser import parse_locustfile_paths
    from locust.util.load_locustfile import is_user_class
    from locust.util.url import is_url

    if not locustfile or locustfile == "-":
        return None
    given = [part.strip() for part in locustfile.split(",")]
    if any(is_url(part) for part in given):
        return None
    paths = {os.path.abspath(path) for path in parse_locustfile_paths(given)}
    names: set[str] = set()
    for module in list(sys.modules.values()):
        module_file = getattr(module, "__file__", None)
        if module_file and os.path.abspath(module_file) in paths:
            names.update(name for name, item in vars(module).items() if is_user_class(item))
    return names


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
