"""`harness serve`: the reference inference server (OpenAI + Ollama APIs on a simulated GPU)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

from harness.errors import UserError
from harness.server.config import HOST_MEMORY_RATIO, ConnectionLimits, MiB, ServerConfig
from harness.server.context import STRATEGIES
from harness.units import finite_float, format_speed, parse_speed, whole_number

_GIB = 1024**3


def register(subparsers: argparse._SubParsersAction) -> None:
    # Every default comes from ServerConfig (and the policies it holds), not from here.
    config = ServerConfig()
    context = config.context
    slow = config.slow_faults
    limits = config.limits
    parser = subparsers.add_parser(
        "serve",
        help="run the reference inference server (simulated GPU, OpenAI + Ollama APIs)",
        description=(
            "A self-contained OpenAI/Ollama-compatible server that simulates GPU memory, latency "
            f"and OOM, with a persistent Batch API. Binds {config.host}:{config.port} by default."
        ),
    )
    add = parser.add_argument
    add("--host", default=config.host, help="loopback address to bind (default %(default)s)")
    add(
        "--port",
        type=whole_number,
        default=config.port,
        help="port (default %(default)s; 0: a free one)",
    )
    add(
        "--profile",
        default=config.profile.name,
        help="simulated model + GPU (default %(default)s; see --list-profiles)",
    )
    add(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override one profile field, e.g. --set max_num_seqs=256 (repeatable)",
    )
    add("--list-profiles", action="store_true", help="print the profiles and exit")
    add(
        "--speed",
        default=format_speed(config.speed),
        help="divide every simulated delay by this factor; 'max' = no delay (default %(default)s)",
    )
    add(
        "--oom",
        choices=("error", "kill"),
        default=config.oom,
        help="on simulated OOM: answer 500 with CUDA's message and go on (error), "
        "or die of SIGKILL like the kernel OOM killer (kill)",
    )
    add(
        "--host-memory",
        action="store_true",
        help="really hold host RAM in proportion to the simulated KV cache",
    )
    add(
        "--host-memory-ratio",
        type=finite_float,
        default=HOST_MEMORY_RATIO,
        metavar="R",
        help="bytes of host RAM held per byte of simulated KV cache (default %(default)s)",
    )
    add("--data-dir", type=Path, default=None, help="where files and batches persist")
    add("--api-key", default=os.environ.get("HARNESS_API_KEY"), help="require this bearer key")
    add(
        "--admin-token",
        default=os.environ.get("HARNESS_ADMIN_TOKEN"),
        help="enable POST /admin/faults with this bearer token (or HARNESS_ADMIN_TOKEN)",
    )
    add(
        "--load-time",
        type=finite_float,
        default=config.load_time_s,
        metavar="SECONDS",
        help="simulated model load; /health/ready answers 503 until it ends (default %(default)s)",
    )
    add(
        "--served-model-name",
        action="append",
        default=[],
        metavar="NAME",
        help="model name(s) to answer to (default: the profile's names)",
    )
    add(
        "--context-strategy",
        choices=STRATEGIES,
        default=context.strategy,
        help="how running contexts are trimmed (default %(default)s)",
    )
    add(
        "--trim-every",
        type=whole_number,
        default=context.trim_every,
        metavar="N",
        help="trim every N requests (0: never; default %(default)s)",
    )
    add(
        "--trim-threshold",
        type=finite_float,
        default=context.threshold,
        metavar="F",
        help="trim when a context passes this share of the context limit (default %(default)s)",
    )
    add(
        "--vram-warning",
        type=finite_float,
        default=context.vram_warning,
        metavar="F",
        help="trim aggressively when simulated VRAM passes this share (default %(default)s)",
    )
    add(
        "--max-body-mb",
        type=finite_float,
        default=config.max_body_bytes / MiB,
        help="JSON body limit in MiB (default %(default)g)",
    )
    add(
        "--max-file-mb",
        type=finite_float,
        default=config.max_file_bytes / MiB,
        help="upload limit in MiB (default %(default)g)",
    )
    add(
        "--context-per-job",
        action="store_true",
        help="requests with no context_id share one running context per job (system prompt), "
        "answered one after the other, as the team's batch server keeps one per batch",
    )
    add(
        "--leak-mb-per-1k-requests",
        type=finite_float,
        default=slow.leak_mb_per_1k_requests,
        metavar="MB",
        help="slow fault: VRAM (and --host-memory RAM) never freed, MB per 1,000 finished "
        "requests (default %(default)g)",
    )
    add(
        "--fragmentation",
        type=finite_float,
        default=slow.fragmentation,
        metavar="F",
        help="slow fault: share of every freed allocation the allocator cannot reuse until a "
        "restart (default %(default)g)",
    )
    add(
        "--max-connections",
        type=whole_number,
        default=None,
        metavar="N",
        help="open connections at most (idle ones are closed first, then 503; "
        f"default {limits.max_connections}, lowered to fit ulimit -n)",
    )
    add(
        "--timeout-keep-alive",
        type=finite_float,
        default=None,
        metavar="S",
        help="close a connection idle this long after a response "
        f"(default {limits.keep_alive_s:g})",
    )
    add(
        "--header-timeout",
        type=finite_float,
        default=None,
        metavar="S",
        help="a request head must arrive within this "
        f"(default {limits.header_timeout_s:g}; else 408)",
    )
    add(
        "--body-timeout",
        type=finite_float,
        default=None,
        metavar="S",
        help=f"a body gets this long plus 1 s per {limits.min_body_rate // 1024} KiB received "
        f"(default {limits.body_timeout_s:g}; else 408)",
    )
    add(
        "--batch-window-seconds",
        type=finite_float,
        default=config.batch_window_s,
        metavar="S",
        help="how long a batch's '24h' completion window lasts here (default %(default)g; "
        "shorter to test expiry)",
    )
    add(
        "--seed",
        type=whole_number,
        default=config.seed,
        help="seed of the injected error-rate fault",
    )
    add("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    add("--access-log", action="store_true", help="log every request (slower)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from harness.server import PROFILES, serve
    from harness.server.config import default_data_dir
    from harness.server.context import ContextPolicy
    from harness.server.memory import SlowFaults

    if args.list_profiles:
        _print_profiles(PROFILES)
        return 0
    name = args.profile
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    try:
        profile = PROFILES[name].with_overrides(dict(_pair(s) for s in args.set))
    except ValueError as exc:
        raise UserError(f"--set: {exc}") from None
    speed = parse_speed(args.speed)
    _check_loopback(args.host)
    _check_share("--trim-threshold", args.trim_threshold)
    _check_share("--vram-warning", args.vram_warning)
    if args.host_memory and not args.host_memory_ratio > 0:
        raise UserError("--host-memory-ratio must be positive, e.g. 0.0625")
    if args.load_time < 0 or args.trim_every < 0 or not 0 <= args.port <= 65535:
        raise UserError("--load-time and --trim-every must not be negative; --port is 0-65535")
    if args.leak_mb_per_1k_requests < 0 or not 0 <= args.fragmentation < 1:
        raise UserError(
            "--leak-mb-per-1k-requests must not be negative; --fragmentation is a share in [0, 1)"
        )
    if not args.batch_window_seconds > 0:
        raise UserError("--batch-window-seconds must be positive, e.g. 86400")
    config = ServerConfig(
        host=args.host,
        port=args.port,
        profile=profile,
        speed=speed,
        oom=args.oom,
        host_memory_ratio=args.host_memory_ratio if args.host_memory else 0.0,
        data_dir=args.data_dir or default_data_dir(),
        api_key=args.api_key or None,
        admin_token=args.admin_token or None,
        load_time_s=args.load_time,
        served_model_names=tuple(args.served_model_name),
        context=ContextPolicy(
            strategy=args.context_strategy,
            trim_every=args.trim_every,
            threshold=args.trim_threshold,
            vram_warning=args.vram_warning,
            per_job=args.context_per_job,
        ),
        slow_faults=SlowFaults(
            leak_mb_per_1k_requests=args.leak_mb_per_1k_requests,
            fragmentation=args.fragmentation,
        ),
        max_body_bytes=int(args.max_body_mb * MiB),
        max_file_bytes=int(args.max_file_mb * MiB),
        seed=args.seed,
        limits=_limits(args),
        batch_window_s=args.batch_window_seconds,
    )
    serve(config, log_level=args.log_level, access_log=args.access_log)
    return 0


def _limits(args: argparse.Namespace) -> ConnectionLimits:
    """ConnectionLimits' defaults, with the flags given on top."""
    chosen = {
        "max_connections": args.max_connections,
        "keep_alive_s": args.timeout_keep_alive,
        "header_timeout_s": args.header_timeout,
        "body_timeout_s": args.body_timeout,
    }
    chosen = {k: v for k, v in chosen.items() if v is not None}
    if any(not v > 0 for v in chosen.values()):
        raise UserError("--max-connections and the --*-timeout flags must be positive")
    return ConnectionLimits(**chosen)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--set {text!r}: write FIELD=VALUE, e.g. --set max_num_seqs=16")
    return key.strip(), value.strip()


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UserError(
            f"--host {host}: the reference server binds loopback addresses only "
            "(127.0.0.1, ::1 or localhost)"
        )


def _check_share(flag: str, value: float) -> None:
    if not 0 < value <= 1:
        raise UserError(f"{flag} {value}: give a share between 0 and 1, e.g. 0.9")


def _print_profiles(profiles: dict) -> None:
    header = f"{'profile':<24} {'kind':<6} {'weights':>8} {'VRAM':>7} {'KV/token':>9} "
    print(header + f"{'KV tokens':>10} {'seqs':>5}  description")
    for p in profiles.values():
        print(
            f"{p.name:<24} {p.kind:<6} {p.weights_bytes / _GIB:>6.2f}Gi "
            f"{p.vram_total_bytes / _GIB:>5.1f}Gi "
            f"{p.kv_bytes_per_token // 1024:>6}KiB {p.kv_capacity_tokens:>10} {p.max_num_seqs:>5}  "
            f"{p.description}"
        )
