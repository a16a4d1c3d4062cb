"""A JSON Schema (2020-12) of what a profile describes: what `learn --emit-schema` writes.

It holds types, required fields (present in every sample record), item schemas, formats and,
for categorical fields without a remainder, their enum: every generated record validates.
"""

from __future__ import annotations

_FORMATS = {"email": "email", "date": "date", "datetime": "date-time", "uuid": "uuid", "url": "uri"}
_TYPES = {"string", "integer", "number", "boolean", "null", "array", "object"}


def node_schema(node: dict) -> dict:
    types = [t for t in node.get("types", {}) if t in _TYPES]
    schema: dict = {}
    if types:
        if "integer" in types and "number" in types:
            types.remove("integer")
        schema["type"] = types[0] if len(types) == 1 else types
    if "object" in types:
        fields = node.get("fields", {})
        schema["properties"] = {key: node_schema(child) for key, child in fields.items()}
        required = [key for key, child in fields.items() if child.get("presence", 1.0) >= 1.0]
        if required:
            schema["required"] = required
    if "array" in types:
        schema["items"] = node_schema(node.get("items", {}))
    spec = node.get("string")
    if "string" in types and spec:
        fmt = _FORMATS.get(spec.get("kind"))
        if fmt and "values" not in spec:
            schema["format"] = fmt
        if spec.get("values") and not spec.get("other") and types == ["string"]:
            schema["enum"] = [v for v, _ in spec["values"]]
    return schema


def profile_schema(profile: dict) -> dict:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "records learned by harness learn",
        **node_schema(profile["root"]),
    }
    return schema
