"""`harness gen`: production-shaped candidate batches at any scale, optionally archived."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import generators
from harness.errors import UserError
from harness.progress import progress_bar
from harness.units import whole_number

_SUFFIXES = {"k": 1_000, "m": 1_000_000}
MAX_COUNT = 10**12  # far past any run, well inside the 64-bit integers JSON files hold
DEFAULT_DIR = Path("runs") / "datasets"  # git-ignored, beside the runs that use them


def parse_count(text: str) -> int:
    """A candidate count: 170000, 170_000, 170k or 1.7m."""
    cleaned = text.strip().lower().replace("_", "").replace(",", "")
    scale = _SUFFIXES.get(cleaned[-1:], 1)
    number = cleaned[:-1] if scale > 1 else cleaned
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a count; write e.g. 10000, 10k or 1.7m"
        ) from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of candidates")
    if abs(value) > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_COUNT:.0e}")
    return int(value)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gen",
        help="generate synthetic candidate batches",
        description="Generate production-shaped candidate batches (seeded, streaming, any N).",
    )
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--n", type=parse_count, help="number of candidates (e.g. 170000 or 170k)")
    size.add_argument(
        "--preset",
        choices=sorted(generators.PRESETS),
        help="production: 10, 100, 1K, 5K, 10K, 50K and 170K as candidates-batch-N.json",
    )
    parser.add_argument(
        "--seed", type=whole_number, default=0, help="seed (default 0): same seed, same bytes"
    )
    parser.add_argument("--format", default="json", help="json (default), jsonl or openai-batch")
    parser.add_argument(
        "--out",
        help="output file (single --n) or directory (presets, or an existing directory); "
        f"default: {DEFAULT_DIR}/candidates-batch-N.<ext>, presets in {DEFAULT_DIR}/",
    )
    parser.add_argument(
        "--workers",
        type=whole_number,
        default=0,
        help="worker processes (default: one per CPU core)",
    )
    parser.add_argument("--locale", help="Faker locale (default en_US; with --like, the sample's)")
    parser.add_argument(
        "--as-of",
        default=generators.DEFAULT_AS_OF,
        help="the date the data describes (applied_at, current roles); default %(default)s",
    )
    parser.add_argument("--model", default=generators.DEFAULT_MODEL, help="model name in requests")
    parser.add_argument("--max-tokens", type=whole_number, default=generators.DEFAULT_MAX_TOKENS)
    parser.add_argument(
        "--like",
        metavar="PROFILE|SAMPLE",
        help="records shaped like a profile from `harness learn`, or like a sample file "
        "(learned on the fly, with a privacy report); see docs/generators.md",
    )
    parser.add_argument(
        "--schema", metavar="FILE", help="with --like: check every record against this JSON Schema"
    )
    parser.add_argument(
        "--archive",
        action="store_true",
        help=f"also pack the files and a manifest into {generators.ARCHIVE_NAME}",
    )
    parser.set_defaults(handler=run)


def _targets(args: argparse.Namespace) -> tuple[Path, list[tuple[int, Path]]]:
    """(directory, [(n, path)]) for the requested counts."""
    if args.format not in generators.FORMATS:
        raise UserError(
            f"unknown format {args.format!r}: choose one of {', '.join(generators.FORMATS)}"
        )
    counts = generators.PRESETS[args.preset] if args.preset else (args.n,)
    out = Path(args.out) if args.out else None
    if args.preset or (out is not None and out.is_dir()):
        directory = out or DEFAULT_DIR
        if directory.exists() and not directory.is_dir():
            raise UserError(f"--out {directory} is a file; presets need a directory")
        paths = [directory / generators.default_filename(n, args.format) for n in counts]
        return directory, list(zip(counts, paths, strict=True))
    path = out or DEFAULT_DIR / generators.default_filename(args.n, args.format)
    return path.parent, [(args.n, path)]


def run(args: argparse.Namespace) -> int:
    if args.n is not None and args.n <= 0:
        raise UserError(f"--n must be a positive number of candidates, got {args.n}")
    if args.max_tokens <= 0:
        raise UserError(f"--max-tokens must be positive, got {args.max_tokens}")
    workers = args.workers or min(os.cpu_count() or 1, 8)
    if workers < 0:
        raise UserError(f"--workers must be 1 or more (0 = one per core), got {args.workers}")
    directory, targets = _targets(args)
    like = like_source(args) if args.like else None
    args.locale = args.locale or (like.builder.locale if like else "en_US")
    datasets = []
    for n, path in targets:
        started = time.perf_counter()
        try:
            with progress_bar(f"gen {path.name}", n, "candidates") as advance:
                info = generators.write_dataset(
                    path,
                    n,
                    fmt=args.format,
                    seed=args.seed,
                    locale=args.locale,
                    workers=workers if n >= 2 * generators.writers.CHUNK_SIZE else 1,
                    as_of=args.as_of,
                    model=args.model,
                    max_tokens=args.max_tokens,
                    progress=advance,
                    source=like.builder if like else None,
                )
        except generators.GenerationError as exc:
            raise UserError(str(exc)) from None
        elapsed = time.perf_counter() - started
        datasets.append(info)
        print(
            f"wrote {info.path}: {info.count:,} candidates, {info.bytes / 1e6:,.1f} MB "
            f"({info.bytes / info.count / 1000:.2f} KB each) in {elapsed:.1f} s "
            f"({info.count / elapsed:,.0f}/s), sha256 {info.sha256[:16]}"
        )
        if like is not None:
            like.check(info)
    if args.archive:
        manifest = generators.dataset_manifest(datasets, as_of=args.as_of, model=args.model)
        started = time.perf_counter()
        try:
            path, digest = generators.write_archive(directory, datasets, manifest)
        except generators.GenerationError as exc:
            raise UserError(str(exc)) from None
        print(
            f"wrote {path}: {len(datasets)} files + manifest.json, "
            f"{path.stat().st_size / 1e6:,.1f} MB in {time.perf_counter() - started:.1f} s, "
            f"sha256 {digest[:16]}"
        )
    return 0


def like_source(args: argparse.Namespace):
    """The --like records: from a profile file, or learned from a sample there and then."""
    from harness.commands.like import LikeSource

    return LikeSource.open(args.like, seed=args.seed, locale=args.locale, schema=args.schema)
