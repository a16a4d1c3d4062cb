"""Synthetic, production-shaped candidate batches (Faker-based, seeded, streaming).

Record i depends only on (seed, i, locale), so output is byte-identical for any worker count.
This package imports nothing from the rest of the harness.
"""

from generators.archive import ARCHIVE_NAME, PRESETS, dataset_manifest, write_archive
from generators.candidates import DEFAULT_AS_OF, candidate, iter_candidates
from generators.jobs import job
from generators.prompts import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, chat_messages, system_prompt
from generators.readers import (
    DatasetError,
    detect_format,
    iter_records,
    iter_requests,
    open_dataset,
    read_header,
    split_member,
)
from generators.readers import iter_candidates as read_candidates
from generators.schema import SCHEMA_VERSION, schema, validator
from generators.validate import ValidationReport, validate_file
from generators.writers import (
    EXTENSIONS,
    FORMATS,
    GENERATOR_VERSION,
    DatasetInfo,
    GenerationError,
    default_filename,
    write_dataset,
)

__all__ = [
    "ARCHIVE_NAME",
    "DEFAULT_AS_OF",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL",
    "EXTENSIONS",
    "FORMATS",
    "GENERATOR_VERSION",
    "PRESETS",
    "SCHEMA_VERSION",
    "DatasetError",
    "DatasetInfo",
    "GenerationError",
    "ValidationReport",
    "candidate",
    "chat_messages",
    "dataset_manifest",
    "default_filename",
    "detect_format",
    "iter_candidates",
    "iter_records",
    "iter_requests",
    "job",
    "open_dataset",
    "read_candidates",
    "read_header",
    "schema",
    "split_member",
    "system_prompt",
    "validate_file",
    "validator",
    "write_archive",
    "write_dataset",
]
