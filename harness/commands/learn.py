"""`harness learn`: a profile of someone's records (shape, kinds, rules), k-anonymous, as JSON."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import orjson

from generators.learn import DEFAULT_K, SampleError, learn_profile, read_sample, sample_pii
from generators.learn.privacy import profile_report, worst
from generators.learn.schema_out import profile_schema
from generators.writers import GenerationError, write_bytes
from harness.errors import UserError
from harness.units import whole_number


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "learn",
        help="learn a profile of sample records, for gen --like",
        description="Learn a profile (field tree, kinds, distributions, rules) of sample records. "
        "It keeps no sample value except categorical values and words seen in >= k records.",
    )
    parser.add_argument("samples", nargs="+", metavar="SAMPLE", help="JSON, JSONL or batch files")
    parser.add_argument("--out", required=True, help="where to write the profile (JSON)")
    parser.add_argument(
        "--records", metavar="JSON_POINTER", help="where the list of records is, e.g. /data/items"
    )
    parser.add_argument(
        "--k",
        type=whole_number,
        default=DEFAULT_K,
        help="k-anonymity: a kept value is seen in >= k records",
    )
    parser.add_argument("--emit-schema", metavar="FILE", help="also write a JSON Schema")
    parser.set_defaults(handler=run)


def learn(samples: list[str], records: str | None, k: int) -> tuple[dict, list]:
    """(profile, the sample's identifying values); UserError for a sample that cannot be used."""
    try:
        sample = read_sample(samples, records)
        profile = learn_profile(sample, k)
    except SampleError as exc:
        raise UserError(str(exc)) from None
    return profile, sample_pii(sample, profile)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    profile, pii = learn(args.samples, args.records, args.k)
    data = orjson.dumps(profile, option=orjson.OPT_INDENT_2) + b"\n"
    report = profile_report(profile, pii)
    if worst(report["outside_kept_values"]["exact_match_rate"]) > 0:
        raise UserError("an identifying sample value would be written in the profile: not written")
    try:
        write_bytes(Path(args.out), data)
        if args.emit_schema:
            schema = orjson.dumps(profile_schema(profile), option=orjson.OPT_INDENT_2) + b"\n"
            write_bytes(Path(args.emit_schema), schema)
        write_bytes(
            Path(f"{args.out}.privacy.json"), orjson.dumps(report, option=orjson.OPT_INDENT_2)
        )
    except GenerationError as exc:
        raise UserError(str(exc)) from None
    print(
        f"learned {args.out} from {profile['records']:,} records in "
        f"{time.perf_counter() - started:.1f} s: {len(profile['rules'])} rules, locale "
        f"{profile['locale']}, {report['categorical_values_kept']} categorical values and "
        f"{report['vocabulary_words']} words kept (k={profile['k']}), "
        f"{sum(report['identifying_values'].values())} identifying values left out "
        f"(privacy report: {args.out}.privacy.json)"
    )
    return 0
