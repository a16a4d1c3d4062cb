"""The privacy report: did a sample's values reach a profile or a generated dataset?

Exact match: a sample's identifying value appears as a whole string value (or, in text, as a run
of 2-4 words). Near duplicate: the same after case, spaces and punctuation are dropped.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from generators.learn.kinds import PII_KINDS, words_of
from generators.learn.profile import normalize

SCAN_RECORDS = 20_000  # output records searched by default: the rates converge long before


def _strings(value: Any, node: dict | None) -> Iterator[tuple[str, bool]]:
    """(string, whether the profile calls its field identifying) of every string in value."""
    if isinstance(value, str):
        kind = (node or {}).get("string", {}).get("kind")
        yield value, node is None or kind in PII_KINDS
    elif isinstance(value, list):
        for element in value:
            yield from _strings(element, None if node is None else node.get("items", {}))
    elif isinstance(value, dict):
        fields = None if node is None else node.get("fields", {})
        for key, element in value.items():
            yield from _strings(element, None if fields is None else fields.get(key, {}))


def _rates(pii: list[tuple[str, str]], exact: set[str], near: set[str]) -> tuple[dict, dict]:
    by_kind = Counter(kind for kind, _ in pii)
    exact_hits: Counter[str] = Counter()
    near_hits: Counter[str] = Counter()
    for kind, value in set(pii):
        exact_hits[kind] += value in exact
        near_hits[kind] += normalize(value) in near
    distinct = Counter(kind for kind, _ in set(pii))
    return (
        {k: round(exact_hits[k] / distinct[k], 6) for k in sorted(by_kind)},
        {k: round(near_hits[k] / distinct[k], 6) for k in sorted(by_kind)},
    )


def scan_records(
    pii: list[tuple[str, str]],
    records: Iterable[dict],
    limit: int = SCAN_RECORDS,
    profile: dict | None = None,
) -> dict:
    """Exact-match and near-duplicate rates of the sample's identifying values in records.

    Exact: anywhere. Near: in the fields the profile calls identifying, and in runs of words
    (everywhere without a profile), so that a price 291.49 is no near copy of postcode 29149.
    """
    wanted = {value for _, value in pii}
    wanted_norm = {normalize(value) for _, value in pii}
    longest = max((len(v.split()) for v in wanted), default=1)
    exact: set[str] = set()
    near: set[str] = set()
    scanned = 0
    for record in itertools.islice(records, limit):
        scanned += 1
        for text, identifying in _strings(record, None if profile is None else profile["root"]):
            if text in wanted:
                exact.add(text)
            form = normalize(text) if identifying else ""
            if form in wanted_norm:
                near.add(form)
            words = words_of(text) if len(text) > 24 else ()
            for size in range(2, min(4, longest) + 1):
                for start in range(len(words) - size + 1):
                    run = " ".join(words[start : start + size])
                    if run in wanted:
                        exact.add(run)
                    form = normalize(run)
                    if form in wanted_norm:
                        near.add(form)
    exact_rate, near_rate = _rates(pii, exact, near)
    return {
        "scanned_records": scanned,
        "exact_match_rate": exact_rate,
        "near_duplicate_rate": near_rate,
    }


def profile_report(profile: dict, pii: list[tuple[str, str]]) -> dict:
    """What a profile keeps, and whether any identifying sample value is written in it."""
    kept = 0

    def count(node: dict) -> None:
        nonlocal kept
        kept += len(node.get("string", {}).get("values", ()))
        for child in node.get("fields", {}).values():
            count(child)
        if "items" in node:
            count(node["items"])

    count(profile["root"])
    return {
        "k": profile["k"],
        "sample_records": profile["records"],
        "identifying_values": dict(sorted(Counter(kind for kind, _ in set(pii)).items())),
        "categorical_values_kept": kept,
        "vocabulary_words": len(profile["text"]["words"]),
        # everywhere but the filter (its base64 is no text) and the kept values, which the
        # k rule allows (a region "Washington" seen in k records may equal someone's surname)
        "outside_kept_values": scan_records(pii, [_without_kept(profile)]),
        "in_kept_values": scan_records(pii, [_kept(profile)]),
    }


def _kept(profile: dict) -> list:
    """The categorical values and vocabulary of a profile."""
    values: list = [profile.get("text", {}).get("words", [])]

    def visit(node: dict) -> None:
        values.append(node.get("string", {}).get("values", []))
        for child in node.get("fields", {}).values():
            visit(child)
        if "items" in node:
            visit(node["items"])

    visit(profile["root"])
    return values


def _without_kept(profile: dict) -> dict:
    def strip(node: dict) -> dict:
        out = {k: v for k, v in node.items() if k not in ("fields", "items", "string")}
        if "string" in node:
            out["string"] = {k: v for k, v in node["string"].items() if k != "values"}
        if "fields" in node:
            out["fields"] = {k: strip(v) for k, v in node["fields"].items()}
        if "items" in node:
            out["items"] = strip(node["items"])
        return out

    rest = {k: v for k, v in profile.items() if k not in ("pii_filter", "text", "root")}
    return {**rest, "root": strip(profile["root"]), "next": profile.get("text", {}).get("next")}


def worst(rates: dict) -> float:
    return max(rates.values(), default=0.0)


def report_path(path: str | os.PathLike[str]) -> str:
    return f"{os.fspath(path)}.privacy.json"
