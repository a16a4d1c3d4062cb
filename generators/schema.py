"""The candidate-batch JSON Schema (v1), shipped as generators/candidate-batch.schema.json."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import orjson
from jsonschema import Draft202012Validator

SCHEMA_VERSION = "1.0"
SCHEMA_FILE = "candidate-batch.schema.json"


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The whole schema document."""
    return orjson.loads(resources.files("generators").joinpath(SCHEMA_FILE).read_bytes())


@functools.lru_cache(maxsize=8)
def validator(definition: str | None = None) -> Draft202012Validator:
    """A validator for the batch document, or for one of its $defs (candidate, job, ...)."""
    document = schema()
    target = (
        document if definition is None else {"$ref": f"#/$defs/{definition}", **_defs(document)}
    )
    return Draft202012Validator(target, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _defs(document: dict[str, Any]) -> dict[str, Any]:
    return {"$defs": document["$defs"]}
