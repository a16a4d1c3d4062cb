"""`harness scale --ladder`: growing sizes, each a scale run in its own process (so its memory
figures are its own), figures fitted against N and extrapolated to the target size."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import orjson

from harness.driver.ladder import extrapolate, ladder_table, rung_figures, time_note
from harness.errors import UserError
from harness.interpreter import python_command
from harness.rundir import (
    MANIFEST,
    SUMMARY,
    RemovedOnFailure,
    new_run_id,
    read_json_file,
    utc_iso,
    write_json_atomic,
)
from harness.scale.config import (
    ScaleConfig,
    config_from_settings,
    config_settings,
    validate_config,
)
from harness.scale.console import Console
from harness.scale.run import open_dataset, run_scale
from harness.units import format_speed

_RUNG_ENV = "HARNESS_LADDER_RUNG"


def run_ladder(
    sizes: list[int], config: ScaleConfig, *, target_n: int = 170_000, out: TextIO = sys.stderr
) -> dict[str, Any]:
    """Run each size in its own process and sub run directory, fit each figure against N, and
    extrapolate to target_n. Writes ladder.json beside the rungs and prints the table."""
    try:
        from reports.report import write_summary
    except ImportError:
        raise UserError("--ladder needs the reporter (the reports package) installed") from None
    if len(set(sizes)) < 2:
        raise UserError("--ladder needs at least two sizes, e.g. --ladder 5k,10k,50k")
    validate_config(config)
    root = Path(config.run_dir or Path(config.runs_root) / new_run_id("ladder"))
    console = Console(out)
    if config.dataset is None:  # generated here, so no rung's peak RSS includes generating it
        for n in sorted(set(sizes)):
            open_dataset(replace(config, n=n), console)
    rungs = []
    with RemovedOnFailure(root) as guard:  # a ladder whose first rung fails leaves nothing
        for n in sorted(set(sizes)):
            run_dir = root / f"n{n}"
            console.say(f"ladder rung N={n:,} in {run_dir}")
            rung = replace(config, n=n, run_dir=str(run_dir))
            settings = config_settings(rung, keep_secrets=True)
            done = subprocess.run(
                python_command("harness.scale.ladder:rung_main"),
                env={**os.environ, _RUNG_ENV: orjson.dumps(settings).decode()},
                check=False,
            )
            outcome = (read_json_file(run_dir / MANIFEST) or {}).get("outcome")
            if outcome is None:
                raise UserError(f"ladder rung N={n:,} did not finish (exit {done.returncode})")
            guard.keep()
            summary = read_json_file(run_dir / SUMMARY) or write_summary(run_dir).summary
            figures = rung_figures(summary, outcome["seconds"], outcome["process_peak_rss_bytes"])
            rungs.append({"n": n, "run_dir": str(run_dir), "ok": outcome["ok"], **figures})
    fits = extrapolate(rungs, target_n)
    embedded = config.target is None and not config.serve
    speed = config.speed if embedded else None  # --speed compresses the embedded server only
    document = {
        "kind": "scale-ladder",
        "mode": config.mode,
        "target_n": target_n,
        "speed": None if speed is None else format_speed(speed),
        "rungs": rungs,
        "fits": fits,
        "time_note": time_note(speed, fits["seconds"].get("at_target"), target_n),
        "time": utc_iso(),
    }
    write_json_atomic(root / "ladder.json", document)
    for line in ladder_table(document):
        print(line, file=out)
    console.say(f"ladder written to {root / 'ladder.json'}")
    return document


def rung_main() -> int:
    """One ladder rung in a fresh process; its settings come in an environment variable (which,
    unlike the command line, other users cannot read), as the API key may be among them."""
    config = config_from_settings(orjson.loads(os.environ[_RUNG_ENV]))
    try:
        return 0 if run_scale(config).ok else 1
    except UserError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
