"""`harness sweep`: ramp the load to the best operating point under SLOs and a memory budget."""

from __future__ import annotations

import argparse
import math
from typing import Any

from harness.arrivals import ARRIVALS
from harness.commands.gen import parse_count
from harness.commands.scale import api_key_from_env
from harness.driver.shards import MAX_AUTO, driver_processes
from harness.errors import UserError
from harness.scale import ScaleConfig
from harness.sweep import SweepConfig, run_sweep
from harness.units import argument, finite_float, parse_bytes, parse_speed, whole_number


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="ramp concurrency to find the best operating point under SLOs and a memory budget",
        description="Run one scale run per load level, on a grid (--concurrency 1,2,4,8, or "
        "open-loop --rate 5,10,20) or in a search for the edge (the default), against the "
        "embedded reference server, a --target or a --serve command. Each point records "
        "throughput, goodput, latency percentiles, peak RAM and peak VRAM. Stops at "
        "saturation, before a memory budget and at an OOM; reports the best point and the "
        "predicted duration of the full run there; writes sweep.json, sweep.png and "
        "report.html. Exit 1 when no point met the SLOs and budget.",
        epilog="example: harness sweep --concurrency 1,2,4,8,16,32 --speed 10 "
        "--set max_num_seqs=8 --slo ttft_p99=2x --vram-budget 14G",
    )
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument(
        "--concurrency", type=_grid, metavar="POINTS", help="a concurrency grid, e.g. 1,2,4,8,16"
    )
    grid.add_argument(
        "--rate",
        type=_grid,
        metavar="POINTS",
        help="a grid of open-loop rates (requests/s), e.g. 5,10,20,40 (--arrival applies)",
    )
    grid.add_argument(
        "--search",
        choices=("concurrency", "rate"),
        help="search for the edge of this load (the default: concurrency)",
    )
    parser.add_argument(
        "--full-grid",
        action="store_true",
        help="run every grid point: saturation is marked, not a stop (a budget or OOM still is)",
    )
    parser.add_argument(
        "--search-start", type=finite_float, default=1, metavar="X", help="first load of a search"
    )
    parser.add_argument(
        "--search-max",
        type=finite_float,
        default=1024,
        metavar="X",
        help="last load a search tries",
    )
    parser.add_argument(
        "--max-concurrency",
        type=whole_number,
        default=256,
        metavar="C",
        help="with rates: the cap on requests in flight (default 256)",
    )
    parser.add_argument(
        "--arrival", choices=ARRIVALS, default="poisson", help="with rates: the arrival process"
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="stream the answers: TTFT, TTST, ITL and every gap at each point (for TTFT SLOs)",
    )
    parser.add_argument(
        "--processes",
        type=argument(driver_processes),
        default=1,
        metavar="N|auto",
        help="driver processes at each point (at most its concurrency), for servers faster than "
        f"one Python client (auto: half the CPUs, at most {MAX_AUTO}; default 1)",
    )
    parser.add_argument(
        "--n", type=parse_count, default=1000, help="requests per point (default 1000)"
    )
    parser.add_argument(
        "--repeat", type=whole_number, default=1, metavar="K", help="runs per point"
    )
    parser.add_argument(
        "--slo",
        metavar="SPEC",
        help="objectives per request, e.g. ttft_p99=2s,e2e_p95=30s; a bound written 2x is twice "
        "the first (least loaded) point's figure",
    )
    parser.add_argument("--vram-budget", metavar="SIZE", help="peak VRAM allowed, e.g. 14G")
    parser.add_argument("--ram-budget", metavar="SIZE", help="peak target RAM allowed, e.g. 24G")
    parser.add_argument(
        "--target-n",
        type=parse_count,
        default=170_000,
        help="the full run whose duration is predicted (default 170k)",
    )
    parser.add_argument("--target", metavar="URL", help="a running loopback server")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start the server COMMAND given after -- (once per point, under the supervisor)",
    )
    parser.add_argument(
        "--speed",
        help="embedded server: divide its simulated latency by this (default: max, no delay)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="embedded server: override a profile field, e.g. --set max_num_seqs=8",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the embedded server, repeatable",
    )
    parser.add_argument("--dataset", metavar="FILE", help="send this dataset instead")
    parser.add_argument("--seed", type=whole_number, default=0, help="dataset seed (default 0)")
    parser.add_argument("--model", help="model name to send instead of the dataset's")
    parser.add_argument(
        "--max-tokens", type=whole_number, metavar="N", help="max_tokens of every request"
    )
    parser.add_argument("--api-key-env", metavar="VAR", help="variable holding the API key")
    parser.add_argument("--run-dir", metavar="DIR", help="sweep directory (default runs/sweep-...)")
    parser.add_argument("--runs-root", default="runs", metavar="DIR", help="default runs")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="with --serve: -- COMMAND ...")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command and not args.serve:
        raise UserError(f"unexpected {command[0]!r}: a server command after -- needs --serve")
    if args.serve and not command:
        raise UserError("--serve needs the server command after --, e.g. --serve -- vllm serve M")
    external = args.target is not None or args.serve
    if external and (args.set or args.server_arg or args.speed is not None):
        raise UserError("--set, --server-arg and --speed shape the embedded server; drop them")
    axis = "rate" if args.rate or args.search == "rate" else "concurrency"
    base = ScaleConfig(
        n=args.n,
        stream=args.stream,
        arrival=args.arrival if axis == "rate" else "poisson",
        concurrency=args.max_concurrency if axis == "rate" else 64,
        processes=args.processes,
        target=args.target,
        serve=tuple(command),
        dataset=args.dataset,
        seed=args.seed,
        speed=math.inf if args.speed is None else parse_speed(args.speed),
        model=args.model,
        max_tokens=args.max_tokens,
        api_key=api_key_from_env(args.api_key_env),
        server_args=(*(f"--set={item}" for item in args.set), *args.server_arg),
        runs_root=args.runs_root,
    )
    config = SweepConfig(
        base=base,
        axis=axis,
        grid=tuple(args.concurrency or args.rate or ()),
        search_start=args.search_start,
        search_max=args.search_max,
        n_per_point=args.n,
        repeat=args.repeat,
        slo=args.slo,
        vram_budget=parse_bytes(args.vram_budget, "--vram-budget") if args.vram_budget else None,
        ram_budget=parse_bytes(args.ram_budget, "--ram-budget") if args.ram_budget else None,
        target_n=args.target_n,
        full_grid=args.full_grid,
        run_dir=args.run_dir,
        runs_root=args.runs_root,
    )
    document = run_sweep(config)
    return 0 if document["best"] is not None else 1


def _grid(text: str) -> list[float]:
    try:
        points = [finite_float(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: write the points as 1,2,4,8") from None
    if not points:
        raise argparse.ArgumentTypeError(f"{text!r} holds no point")
    return points
