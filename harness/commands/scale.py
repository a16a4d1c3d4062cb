"""`harness scale`: a whole batch through a server, surviving OOMs, verified exactly once."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from harness.arrivals import ARRIVALS
from harness.commands.gen import parse_count
from harness.commands.report import add_slo_arguments
from harness.driver.shards import MAX_AUTO, driver_processes
from harness.errors import UserError
from harness.repeat import run_repeated
from harness.scale import MODES, ScaleConfig, resume_scale, run_ladder, run_scale
from harness.supervision.victim import parse_victim
from harness.units import argument, finite_float, parse_speed, whole_number


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scale",
        help="drive a whole batch through a server, surviving OOM, verified exactly once",
        description="Generate (or reuse) a batch, push every request through a server as "
        "production does (client-side or the Batch API), sample memory, inject OOM kills, "
        "verify each candidate has exactly one result, and write a run directory and report. "
        "Without --target, a supervised reference server is started on 127.0.0.1; with "
        "--serve -- COMMAND, your own server (vLLM, Ollama, llama.cpp) under the supervisor.",
        epilog="example: harness scale --n 2000 --oom-at 30%,70% --serve -- "
        "python -m llama_cpp.server --model tiny.gguf --port 8011",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--n", type=parse_count, help="candidates to send (e.g. 10000, 170k)")
    what.add_argument(
        "--dataset", metavar="FILE", help="send an existing dataset (any `harness gen` format)"
    )
    what.add_argument(
        "--ladder",
        type=_sizes,
        metavar="SIZES",
        help="run growing sizes (e.g. 5k,10k,50k) and extrapolate to --ladder-to",
    )
    what.add_argument(
        "--resume", metavar="RUN_DIR", help="finish an interrupted run: send only what is missing"
    )
    parser.add_argument(
        "--limit", type=parse_count, help="with --dataset: send only its first N requests"
    )
    parser.add_argument(
        "--target",
        metavar="URL",
        help="a running server (loopback only), e.g. http://127.0.0.1:11434; "
        "default: the embedded reference server",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start the server COMMAND given after -- under the supervisor (its URL from its "
        "--port, or --target); --oom-at then SIGKILLs it as the kernel's OOM killer does",
    )
    parser.add_argument(
        "--supervisor",
        metavar="RUN_DIR",
        help="with --target: the run directory of the `harness supervise` keeping it alive, so "
        "its deaths are timed against this run's requests (and --oom-at kills through it)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=finite_float,
        metavar="SECONDS",
        help="how long a (re)started target may take to be ready (default 120)",
    )
    parser.add_argument("--mode", choices=MODES, default=None, help="client (default) or batch-api")
    parser.add_argument(
        "--oom-at",
        type=_points,
        metavar="POINTS",
        help="inject an OOM kill at these points of progress, e.g. 25%%,60%%",
    )
    parser.add_argument(
        "--victim",
        type=argument(parse_victim),
        help="with --serve or --supervisor: whom an --oom-at kill hits: largest (the default, "
        "the process the kernel's OOM killer picks: highest oom_score), leader, or a pid",
    )
    parser.add_argument(
        "--speed",
        help="embedded server: divide its simulated latency by this (default: max, no delay)",
    )
    parser.add_argument(
        "--concurrency",
        type=whole_number,
        help="requests in flight, in all processes (default 64); with --rate or --trace, "
        "the cap on them",
    )
    parser.add_argument(
        "--processes",
        type=argument(driver_processes),
        metavar="N|auto",
        help="client mode: driver processes sharing the run, each with its own checkpoint "
        f"(auto: half the CPUs, at most {MAX_AUTO}; default 1)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="ask for streamed answers and time them: TTFT, time to second token, ITL, TPOT "
        "and every inter-token gap (client mode)",
    )
    open_loop = parser.add_mutually_exclusive_group()
    open_loop.add_argument(
        "--rate",
        type=finite_float,
        metavar="R",
        help="open loop: send R requests per second on a schedule (--arrival) whatever the "
        "answers; latency is also timed from each scheduled send time (driver processes share "
        "the schedule)",
    )
    open_loop.add_argument(
        "--trace",
        metavar="FILE",
        help="open loop: replay a trace's send times (Mooncake/AIPerf `timestamp` in ms, or a "
        "harness requests.jsonl), in one driver process",
    )
    parser.add_argument(
        "--arrival", choices=ARRIVALS, help="with --rate: constant, poisson (default) or gamma"
    )
    parser.add_argument(
        "--burstiness",
        type=finite_float,
        help="with --arrival gamma: its shape, as vLLM bench (1 is Poisson, below 1 burstier)",
    )
    add_slo_arguments(parser)
    parser.add_argument(
        "--chunk-size", type=parse_count, help="batch-api: requests per batch (default 5000)"
    )
    parser.add_argument("--seed", type=whole_number, help="dataset seed (default 0)")
    parser.add_argument("--run-dir", metavar="DIR", help="run directory (default runs/scale-...)")
    parser.add_argument(
        "--runs-root", metavar="DIR", help="where runs and the dataset cache go (default runs)"
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="generated datasets (default <runs-root>/datasets)"
    )
    parser.add_argument(
        "--model",
        help="model name to send instead of the dataset's (default with a real target: the one "
        "it serves)",
    )
    parser.add_argument(
        "--max-tokens",
        type=whole_number,
        metavar="N",
        help="max_tokens of every request instead of the dataset's; checked against the "
        "target's max_model_len before sending",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the target's API key (never stored)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the embedded server, repeatable, e.g. --server-arg=--profile=...",
    )
    parser.add_argument(
        "--max-failed-rate",
        type=finite_float,
        help="share of candidates allowed a final error before the run fails (default 0)",
    )
    parser.add_argument(
        "--ladder-to",
        type=parse_count,
        default=170_000,
        help="size the ladder extrapolates to (default 170k)",
    )
    parser.add_argument(
        "--repeat",
        type=whole_number,
        metavar="K",
        help="run K times into RUN_DIR/r1..rK and report means with 95%% confidence intervals "
        "(repeat.json); harness compare then judges the group on those intervals",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="with --serve: -- COMMAND ...")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command and not args.serve:
        raise UserError(f"unexpected {command[0]!r}: a server command after -- needs --serve")
    if args.serve and not command:
        raise UserError("--serve needs the server command after --, e.g. --serve -- vllm serve M")
    args.serve_command = tuple(command)
    if args.resume is not None:
        fixed = [
            name
            for name in (
                "dataset",
                "limit",
                "mode",
                "oom_at",
                "victim",
                "speed",
                "chunk_size",
                "seed",
                "run_dir",
                "model",
                "max_tokens",
                "max_failed_rate",
                "supervisor",
                "repeat",
                "rate",
                "trace",
                "arrival",
                "burstiness",
                "slo",
            )
            if getattr(args, name) is not None
        ]
        fixed += [name for name in ("serve", "stream", "fail_on_slo") if getattr(args, name)]
        if fixed or args.server_arg:
            raise UserError(
                "--resume finishes a run with its own settings; only --concurrency, --processes, "
                "--target, --api-key-env and --no-report may change (drop "
                + ", ".join(f"--{n.replace('_', '-')}" for n in fixed or ["server-arg"])
                + ")"
            )
        outcome = resume_scale(
            args.resume,
            concurrency=args.concurrency,
            processes=args.processes,
            target=args.target,
            api_key=_api_key(args),
            report=False if args.no_report else None,
        )
        return 0 if outcome.ok else 1
    config = _config(args)
    if args.fail_on_slo and config.slo is None:
        raise UserError("--fail-on-slo needs objectives: give --slo SPEC")
    if args.repeat is not None:
        if args.ladder is not None:
            raise UserError("--repeat and --ladder do not combine; repeat one size at a time")
        group = run_repeated(config, args.repeat)
        runs = [outcome.run_dir for outcome in group.outcomes]
        return 0 if group.ok and _slo_met(runs, args.fail_on_slo) else 1
    if args.ladder is not None:
        if args.fail_on_slo:
            raise UserError("--fail-on-slo judges one run or a --repeat group, not a ladder")
        document = run_ladder(args.ladder, config, target_n=args.ladder_to)
        return 0 if all(rung["ok"] for rung in document["rungs"]) else 1
    outcome = run_scale(config)
    return 0 if outcome.ok and _slo_met([outcome.run_dir], args.fail_on_slo) else 1


def _slo_met(run_dirs: list[Path], fail_on_slo: bool) -> bool:
    """With --fail-on-slo: whether every run met its SLOs (judged from its summary)."""
    if not fail_on_slo:
        return True
    from reports.report import write_summary
    from reports.slo import verdict_line

    met = True
    for run_dir in run_dirs:
        slo = write_summary(run_dir).summary.get("slo") or {"verdict": "unmeasured"}
        if slo["verdict"] != "pass":
            met = False
            if slo.get("objectives"):
                print(f"scale: {run_dir}: {verdict_line(slo)}", file=sys.stderr)
    return met


def _config(args: argparse.Namespace) -> ScaleConfig:
    if args.limit is not None and args.dataset is None:
        raise UserError("--limit applies to --dataset; use --n to choose a generated size")
    api_key = _api_key(args)
    settings: dict[str, Any] = {
        "n": args.limit if args.dataset is not None else args.n,
        "mode": args.mode,
        "target": args.target,
        "serve": args.serve_command,
        "supervisor": args.supervisor,
        "ready_timeout_s": args.ready_timeout,
        "max_tokens": args.max_tokens,
        "dataset": args.dataset,
        "seed": args.seed,
        "oom_at": args.oom_at,
        "victim": args.victim,
        "speed": None if args.speed is None else parse_speed(args.speed),
        "concurrency": args.concurrency,
        "processes": args.processes,
        "chunk_size": args.chunk_size,
        "model": args.model,
        "api_key": api_key,
        "server_args": tuple(args.server_arg),
        "max_failed_rate": args.max_failed_rate,
        "runs_root": args.runs_root,
        "cache_dir": args.cache_dir,
        "run_dir": args.run_dir,
        "report": not args.no_report,
        "stream": args.stream or None,
        "rate": args.rate,
        "arrival": args.arrival,
        "burstiness": args.burstiness,
        "trace": args.trace,
        "slo": args.slo,
    }
    if args.dataset is not None and args.limit is None:
        settings["n"] = None  # the whole file
        return ScaleConfig(**{k: v for k, v in settings.items() if v is not None or k == "n"})
    return ScaleConfig(**{k: v for k, v in settings.items() if v is not None})


def _api_key(args: argparse.Namespace) -> str | None:
    return api_key_from_env(args.api_key_env)


def api_key_from_env(variable: str | None) -> str | None:
    """The API key held in --api-key-env's variable (never on the command line)."""
    if not variable:
        return None
    api_key = os.environ.get(variable)
    if not api_key:
        raise UserError(f"--api-key-env {variable}: that variable is not set or empty")
    return api_key


def _sizes(text: str) -> list[int]:
    sizes = [parse_count(part) for part in text.split(",") if part.strip()]
    if any(n <= 0 for n in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: ladder sizes must be positive")
    return sizes


def _points(text: str) -> tuple[float, ...]:
    """25%,60% (or 0.25,0.6) -> (0.25, 0.6)."""
    points = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part[:-1]) / 100 if part.endswith("%") else float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a point of progress; write e.g. 25%,60%"
            ) from None
        if not 0 < value < 1:
            raise argparse.ArgumentTypeError(f"{part!r} must lie strictly between 0% and 100%")
        points.append(value)
    return tuple(points)
