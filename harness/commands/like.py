"""`harness gen --like`: a profile (or a sample, learned on the spot) as the writers' record
source, and the checks after writing: JSON Schema validity and the privacy report."""

from __future__ import annotations

from pathlib import Path

import orjson

import generators
from generators.learn import ProfileBuilder, ProfileError, check_profile
from generators.learn.privacy import SCAN_RECORDS, report_path, scan_records, worst
from generators.writers import DatasetInfo, GenerationError, write_bytes
from harness.errors import UserError


class LikeSource:
    """A ProfileBuilder, plus the sample's identifying values when it was learned from one."""

    def __init__(self, builder: ProfileBuilder, pii: list | None, schema: dict | None) -> None:
        self.builder = builder
        self.pii = pii
        self.schema = schema

    @classmethod
    def open(cls, like: str, seed: int, locale: str | None, schema: str | None) -> LikeSource:
        path = Path(like)
        try:
            head = path.read_bytes()[: 1 << 16]
        except OSError as exc:
            raise UserError(f"--like {like}: {exc.strerror}") from None
        pii = None
        try:
            profile = orjson.loads(path.read_bytes()) if b'"profile_version"' in head else None
        except orjson.JSONDecodeError:
            profile = None
        if profile is None:
            from harness.commands.learn import learn

            profile, pii = learn([like], None, generators.learn.DEFAULT_K)
        user_schema = None
        if schema:
            try:
                user_schema = orjson.loads(Path(schema).read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise UserError(f"--schema {schema} is not a readable JSON Schema: {exc}") from None
        try:
            builder = ProfileBuilder(check_profile(profile), seed=seed, locale=locale)
        except ProfileError as exc:
            raise UserError(f"--like {like}: {exc}") from None
        return cls(builder, pii, user_schema)

    def check(self, info: DatasetInfo) -> None:
        """Validate against --schema, and write the privacy report when the sample is known."""
        records = generators.read_candidates(info.path)
        if self.schema is not None:
            import jsonschema

            validator = jsonschema.validators.validator_for(self.schema)(self.schema)
            bad = sum(1 for r in records if not validator.is_valid(r))
            if bad:
                raise UserError(
                    f"{bad:,} of {info.count:,} records do not validate against --schema"
                )
            print(f"all {info.count:,} records validate against the schema")
        if self.pii is None:
            print(
                "privacy: generated from a profile; exact-match check needs the sample "
                "(use --like SAMPLE)"
            )
            return
        report = {
            "k": self.builder.profile["k"],
            "sample_records": self.builder.profile["records"],
            **scan_records(
                self.pii, generators.read_candidates(info.path), SCAN_RECORDS, self.builder.profile
            ),
        }
        try:
            write_bytes(report_path(info.path), orjson.dumps(report, option=orjson.OPT_INDENT_2))
        except GenerationError as exc:
            raise UserError(str(exc)) from None
        print(
            f"privacy: {report['scanned_records']:,} records searched for "
            f"{len(set(self.pii)):,} identifying sample values: exact match "
            f"{worst(report['exact_match_rate']):.2%}, near duplicate "
            f"{worst(report['near_duplicate_rate']):.2%} (k={report['k']}; "
            f"{report_path(info.path)})"
        )
