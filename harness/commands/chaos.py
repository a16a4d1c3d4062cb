"""`harness chaos`: inject faults into a target that `harness supervise` runs, on a schedule."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UserError
from harness.rundir import RunDir
from harness.supervision.chaos import FAULTS, MAX_INJECTIONS, run_chaos
from harness.supervision.victim import DEFAULT_VICTIM, parse_victim
from harness.units import finite_float, parse_duration, whole_number


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chaos",
        help="inject faults (kill, oom, hang, error-burst) into a supervised target",
        description=(
            "Inject a fault every --every into the target supervised in --run-dir: kill "
            "(SIGKILL, what an OOM kill looks like), hang (SIGSTOP, SIGCONT after --seconds), or "
            "via the reference server's /admin/faults: oom (a simulated CUDA OOM) and "
            "error-burst (--rate of requests answer 500 for --seconds). Each injection is an "
            "event; the supervisor times each recovery. Bounded by --count and --duration."
        ),
        epilog="example: harness chaos --run-dir runs/soak --fault kill --every 60s --count 5",
    )
    parser.add_argument("--run-dir", required=True, help="the run directory `supervise` writes")
    parser.add_argument("--fault", required=True, choices=FAULTS, help="what to inject")
    parser.add_argument("--every", default="60s", help="time between injections (60s)")
    parser.add_argument(
        "--count", type=whole_number, default=3, help=f"injections, at most {MAX_INJECTIONS} (3)"
    )
    parser.add_argument("--duration", help="stop after this long (default: (count + 1) x every)")
    parser.add_argument("--seconds", default="5s", help="length of a hang or error burst (5s)")
    parser.add_argument(
        "--rate", type=finite_float, default=0.5, help="error-burst share of 500s (0.5)"
    )
    parser.add_argument(
        "--admin-token", help="the reference server's admin token (default: $HARNESS_ADMIN_TOKEN)"
    )
    parser.add_argument(
        "--victim",
        default=DEFAULT_VICTIM,
        help="whom a kill hits: largest (max oom_score in the tree, as the kernel's OOM killer), "
        f"leader, or a pid ({DEFAULT_VICTIM})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not Path(args.run_dir).is_dir():
        raise UserError(
            f"run directory {args.run_dir} does not exist; pass the --run-dir given to `supervise`"
        )
    if not 0.0 <= args.rate <= 1.0:
        raise UserError(f"--rate {args.rate} is not a share; use 0.0 to 1.0, e.g. 0.5")
    injected = run_chaos(
        RunDir(args.run_dir),
        args.fault,
        every_s=parse_duration(args.every, "--every"),
        count=args.count,
        duration_s=parse_duration(args.duration, "--duration") if args.duration else None,
        seconds=parse_duration(args.seconds, "--seconds"),
        error_rate=args.rate,
        admin_token=args.admin_token,
        victim=parse_victim(args.victim),
    )
    print(f"harness: chaos: {len(injected)} of {args.count} injections done", file=sys.stderr)
    return 0
