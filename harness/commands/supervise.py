"""`harness supervise`: run any server or script under the supervisor, sampled, until stopped."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.net import require_loopback_url, url_origin
from harness.rundir import MANIFEST, RemovedOnFailure, RunDir, new_run_id, utc_iso
from harness.supervision.redact import redact_command
from harness.supervision.samplers import start_sampling
from harness.supervision.supervisor import Supervisor
from harness.targets import past_env
from harness.units import parse_bytes, parse_duration, whole_number

_FORWARDED = (signal.SIGINT, signal.SIGTERM)
_POLL_S = 0.1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "supervise",
        help="run a command, restart it when it dies, classify every exit, sample RAM/VRAM",
        description=(
            "Run COMMAND as a supervised process group: restart it on failure with exponential "
            "backoff, gate readiness on --health, classify each exit (OOM kill, OOM error, crash), "
            "time recoveries, and sample RAM/VRAM/metrics into a run directory. "
            "SIGINT/SIGTERM are forwarded to the whole group."
        ),
        epilog="example: harness supervise --health http://127.0.0.1:8000/health/ready "
        "--memory-limit 512M -- harness serve --port 8000",
    )
    parser.add_argument("--run-dir", help="run directory (default: runs/supervise-<id>)")
    parser.add_argument("--health", metavar="URL", help="loopback URL answering 200 when ready")
    parser.add_argument(
        "--metrics", metavar="URL", help="loopback Prometheus /metrics URL to scrape each sample"
    )
    parser.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="emulate a container limit: SIGKILL the tree when its RSS passes SIZE (e.g. 512M)",
    )
    parser.add_argument(
        "--max-restarts", type=whole_number, default=10, help="give up after this many (default 10)"
    )
    parser.add_argument(
        "--backoff", default="0.5s", help="first restart delay, doubling per failure (0.5s)"
    )
    parser.add_argument("--backoff-max", default="30s", help="longest restart delay (30s)")
    parser.add_argument(
        "--healthy-reset",
        default="60s",
        help="ready this long before dying resets the backoff (60s)",
    )
    parser.add_argument("--interval", default="0.5s", help="sampling interval (0.5s; 0.1s works)")
    parser.add_argument("--no-sample", action="store_true", help="do not sample")
    parser.add_argument("--no-gpu", action="store_true", help="do not sample VRAM")
    parser.add_argument(
        "--stop-timeout", default="10s", help="grace after SIGTERM before SIGKILL (10s)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UserError(
            "no command to supervise; put it after --, e.g. "
            "`harness supervise --health http://127.0.0.1:8000/health/ready -- harness serve`"
        )
    if args.health:
        require_loopback_url(args.health, "--health")
    if args.metrics:
        require_loopback_url(args.metrics, "--metrics")
    interval = parse_duration(args.interval, "--interval")
    stop_timeout = parse_duration(args.stop_timeout, "--stop-timeout")
    path = Path(args.run_dir) if args.run_dir else Path("runs") / new_run_id("supervise")
    with RemovedOnFailure(path) as guard:  # a command that cannot start leaves no run directory
        run_dir = RunDir(path)
        supervisor = Supervisor(
            command,
            run_dir,
            health_url=args.health,
            memory_limit_bytes=parse_bytes(args.memory_limit, "--memory-limit")
            if args.memory_limit
            else None,
            max_restarts=args.max_restarts,
            backoff_initial_s=parse_duration(args.backoff, "--backoff"),
            backoff_max_s=parse_duration(args.backoff_max, "--backoff-max"),
            healthy_reset_s=parse_duration(args.healthy_reset, "--healthy-reset"),
        )
        _manifest(run_dir, command, args)
        print(
            f"harness: supervising {program_name(command)} in {run_dir.path} (its output: "
            f"{supervisor.log_path}); Ctrl-C stops it",
            file=sys.stderr,
        )
        received: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            if received:
                supervisor.escalate()  # a second signal: no more grace
            received.append(signum)

        previous = {sig: signal.signal(sig, on_signal) for sig in _FORWARDED}
        sampler = None
        try:
            supervisor.start()
            guard.keep()
            if not args.no_sample:
                sampler = start_sampling(
                    run_dir,
                    interval=interval,
                    pid=lambda: supervisor.pid,
                    metrics_url=args.metrics,
                    gpu=not args.no_gpu,
                )
            while not received and not supervisor.wait(_POLL_S):
                pass
        finally:
            supervisor.stop(timeout=stop_timeout, sig=received[0] if received else signal.SIGTERM)
            if sampler is not None:
                sampler.stop()
            run_dir.update_manifest(end_time=utc_iso())
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if received:
            return 128 + received[0]
        return _exit_code(supervisor.last_exit)


def program_name(command: list[str]) -> str:
    """The program a command runs: past `env`, its options and NAME=value assignments."""
    words = past_env(command)
    return os.path.basename(words[0]) if words else command[0]


def _manifest(run_dir: RunDir, command: list[str], args: argparse.Namespace) -> None:
    """Start the manifest, or add to the one a driver or scenario already wrote here."""
    fields = {
        "supervised_command": redact_command(command),
        "supervisor": {"health_url": args.health, "memory_limit": args.memory_limit},
    }
    if run_dir.read_json(MANIFEST) is None:
        run_dir.write_manifest(
            command=redact_command(sys.argv),
            target_url=url_origin(args.health) if args.health else None,
            **fields,
        )
    else:
        run_dir.update_manifest(**fields)


def _exit_code(last_exit: dict[str, Any] | None) -> int:
    """0 when the target completed; else its code, or 128 + signal as shells report (137 = -9)."""
    if last_exit is None:
        return 1
    returncode = int(last_exit["returncode"])
    return 128 - returncode if returncode < 0 else returncode
