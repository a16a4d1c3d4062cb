"""`learn`: a sample's records -> a profile (plain, versioned JSON) of their shape and meaning.

The profile holds no sample value except categorical values seen in at least k distinct records
and free-text words seen in at least k records; identifying values are only represented in
`pii_filter`, a salted one-hash bitmap filled to ~1/8, which the generator uses to never emit a
sample's identifying value (a set bit says little: any value sets one with ~12% chance).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from os.path import commonpath
from typing import Any

import orjson

from generators.learn import dist, kinds
from generators.learn.sample import MAX_DEPTH, Sample, SampleError

PROFILE_VERSION = 1
DEFAULT_K = 5
MAX_CATEGORIES = 500
TEXT_VALUES = 500  # free-text values per field the vocabulary is learned from
KIND_VALUES = 500  # values per field its kind is detected from
_ORDER_MIN = 3  # instances a cross-field rule needs before it is believed (and at least k)
_DATEISH = ("date", "datetime", "year_month")
_COUNTRY_LOCALES = {
    "germany": "de_DE",
    "deutschland": "de_DE",
    "de": "de_DE",
    "france": "fr_FR",
    "fr": "fr_FR",
    "spain": "es_ES",
    "españa": "es_ES",
    "es": "es_ES",
    "italy": "it_IT",
    "italia": "it_IT",
    "it": "it_IT",
    "netherlands": "nl_NL",
    "nederland": "nl_NL",
    "nl": "nl_NL",
    "poland": "pl_PL",
    "polska": "pl_PL",
    "pl": "pl_PL",
    "brazil": "pt_BR",
    "brasil": "pt_BR",
    "br": "pt_BR",
    "united kingdom": "en_GB",
    "uk": "en_GB",
    "gb": "en_GB",
    "sweden": "sv_SE",
    "se": "sv_SE",
    "japan": "ja_JP",
    "日本": "ja_JP",
    "jp": "ja_JP",
    "united states": "en_US",
    "usa": "en_US",
    "us": "en_US",
    "österreich": "de_AT",
    "austria": "de_AT",
    "schweiz": "de_CH",
}


_NOT_ALNUM = re.compile(r"[\W_]+")
# In ASCII, [\W_] is every byte but letters and digits: deleted by bytes.translate, ~8x faster
_ASCII_NOT_ALNUM = bytes(c for c in range(128) if not chr(c).isalnum())


def normalize(value: str) -> str:
    """The form near-duplicates share: case, spaces and punctuation dropped."""
    return _normalized(value).decode()


def _normalized(value: str) -> bytes:
    """normalize(value) in UTF-8, which the PII filter hashes."""
    if value.isascii():  # most values: the same result without the regex
        return value.lower().encode().translate(None, _ASCII_NOT_ALNUM)
    return _NOT_ALNUM.sub("", value.casefold()).encode()


def pii_hasher(salt: bytes, bits: int) -> Callable[[str], int]:
    """value -> its bit in a PII filter of `bits` bits: a keyed hash of its normalized form."""
    keyed = hashlib.blake2b(key=salt, digest_size=8)  # copied per value: cheaper than a new key

    def bit(value: str) -> int:
        digest = keyed.copy()
        digest.update(_normalized(value))
        return int.from_bytes(digest.digest(), "little") % bits

    return bit


def parse_moment(value: str) -> float | None:
    """Unix seconds of an ISO date, datetime or year-month; None when it is none of them."""
    try:
        if len(value) == 7:
            value += "-01"
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def moment_format(value: str) -> dict:
    """How a date/datetime is written, without the value: separator, seconds, fraction, zone."""
    match = re.fullmatch(
        r"\d{4}-\d{2}(-\d{2})?(?:([T ])\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:?\d{2})?)?", value
    )
    if match is None:
        return {"kind": "date"}
    _, sep, seconds, fraction, zone = match.groups()
    if sep is None:
        return {"kind": "date" if match.group(1) else "year_month"}
    zone_form = (
        "" if zone is None else ("Z" if zone == "Z" else ("+00:00" if ":" in zone else "+0000"))
    )
    return {
        "kind": "datetime",
        "sep": sep,
        "seconds": seconds is not None,
        "fraction": len(fraction) - 1 if fraction else 0,
        "zone": zone_form,
    }


class _Node:
    """What was seen at one path of the field tree."""

    __slots__ = (
        "arrays",
        "bools",
        "depth",
        "fields",
        "nulls",
        "numbers",
        "objects",
        "present",
        "strings",
        "types",
        "unique",
    )

    def __init__(self, depth: int = 0) -> None:
        self.depth = depth  # lists and objects above it
        self.types: Counter[str] = Counter()
        self.present = 0  # times the key was present in a parent object
        self.nulls = 0
        self.fields: dict[str, _Node] = {}
        self.objects: list[dict[str, Any]] = []  # each instance's scalar children (for rules)
        self.arrays: list[int] = []
        self.unique = True  # every list held distinct items
        self.strings: list[tuple[str, int]] = []  # (value, record index)
        self.numbers: list[int | float] = []
        self.bools: list[bool] = []

    def item(self) -> _Node:
        return self.child("*")

    def child(self, key: str) -> _Node:
        node = self.fields.get(key)
        if node is None:
            if self.depth >= MAX_DEPTH:
                raise _TooDeep
            node = self.fields[key] = _Node(self.depth + 1)
        return node


class _TooDeep(Exception):
    """A record nests lists and objects deeper than MAX_DEPTH."""


def _walk(node: _Node, value: Any, record: int) -> None:
    if value is None:
        node.types["null"] += 1
        node.nulls += 1
    elif isinstance(value, bool):
        node.types["boolean"] += 1
        node.bools.append(value)
    elif isinstance(value, (int, float)):
        node.types["integer" if isinstance(value, int) else "number"] += 1
        node.numbers.append(value)  # an integer kept exact: 2**64 - 1 is no float
    elif isinstance(value, str):
        node.types["string"] += 1
        node.strings.append((value, record))
    elif isinstance(value, list):
        node.types["array"] += 1
        node.arrays.append(len(value))
        item = node.item()
        scalars = [v for v in value if isinstance(v, (str, int, float))]
        if len(set(scalars)) != len(scalars):
            node.unique = False
        for element in value:
            _walk(item, element, record)
    elif isinstance(value, dict):
        node.types["object"] += 1
        scalars: dict[str, Any] = {}
        for key, child in value.items():
            field = node.child(key)
            field.present += 1
            _walk(field, child, record)
            if isinstance(child, (str, int, float)) and not isinstance(child, bool):
                scalars[key] = child
            elif isinstance(child, list) and child and all(isinstance(c, dict) for c in child):
                scalars[key] = [
                    {k: v for k, v in c.items() if isinstance(v, (str, int, float))} for c in child
                ]
            elif isinstance(child, list) and child and all(isinstance(c, str) for c in child):
                scalars[key] = list(child)
            elif isinstance(child, dict):
                for inner, v in child.items():  # one level down, for names beside an email
                    if isinstance(v, str):
                        scalars[f"{key}/{inner}"] = v
        node.objects.append(scalars)


class _Learner:
    def __init__(self, sample: Sample, k: int) -> None:
        self.sample = sample
        self.k = k
        self.pii_values: list[str] = []
        self.text_records: dict[str, set[int]] = defaultdict(set)
        self.bigram_records: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.pii_words: set[str] = set()
        self.kinds_by_path: dict[str, str] = {}
        self.moments: list[float] = []

    def node(
        self, node: _Node, path: str, name: str, parent_objects: int | None, parent: str = ""
    ) -> dict:
        total = sum(node.types.values())
        out: dict[str, Any] = {}
        if parent_objects is not None:
            out["presence"] = round(node.present / parent_objects, 6) if parent_objects else 1.0
        out["types"] = (
            {t: round(n / total, 6) for t, n in node.types.most_common()} if total else {}
        )
        if node.types["object"]:
            out["fields"] = {
                key: self.node(child, f"{path}/{key}", key, node.types["object"], name)
                for key, child in node.fields.items()
                if key != "*"
            }
        if node.types["array"]:
            out["length"] = dist.learn(node.arrays, self.k, integer=True)
            out["unique"] = node.unique
            item = node.fields.get("*")
            out["items"] = (
                self.node(item, f"{path}/*", name, None, parent) if item else {"types": {}}
            )
        if node.strings:
            out["string"] = self.string(node, path, name, parent)
        if node.numbers:
            out["number"] = self.number(node)
        if node.bools:
            out["boolean"] = {"true": round(sum(node.bools) / len(node.bools), 6)}
        return out

    def number(self, node: _Node) -> dict:
        integer = node.types["number"] == 0
        counts = Counter(node.numbers)
        if integer and len(counts) <= 12 and all(n >= self.k for n in counts.values()):
            return {"integer": True, "values": [[int(v), n] for v, n in counts.most_common()]}
        decimals = 0 if integer else max(_decimals(v) for v in node.numbers[:1000])
        out = {"integer": integer, "decimals": decimals}
        out.update(dist.learn(node.numbers, self.k))
        return out

    def string(self, node: _Node, path: str, name: str, parent: str) -> dict:
        values = [v for v, _ in node.strings]
        kind = kinds.detect_kind(name, values[:KIND_VALUES], parent)
        out: dict[str, Any] = {
            "kind": kind,
            "length": dist.learn([len(v) for v in values], self.k, True),
        }
        if kind in kinds.PII_KINDS:
            self.pii_values.extend(v for v in values if len(normalize(v)) >= 3)
            for v in values:
                if kind in ("person_name", "first_name", "last_name", "street_address"):
                    self.pii_words.update(kinds.words_of(v))
        else:
            records: dict[str, set[int]] = defaultdict(set)
            for v, r in node.strings:
                records[v].add(r)
            kept = {v: len(rs) for v, rs in records.items() if len(rs) >= self.k}
            covered = sum(1 for v in values if v in kept) / len(values)
            if kind != "text" and kept and covered >= 0.9 and len(kept) <= MAX_CATEGORIES:
                counts = Counter(v for v in values if v in kept)
                out["values"] = [[v, n] for v, n in counts.most_common()]
                out["other"] = round(1 - covered, 6)
        if kind in _DATEISH:
            moments = [m for m in (parse_moment(v) for v in values) if m is not None]
            self.moments.extend(moments)
            out.update(dist.learn(moments, self.k))
            out["format"] = moment_format(
                Counter(_form_key(v) for v in values).most_common(1)[0][0]
            )
        elif kind == "numeric_string":
            numbers = [float(v) for v in values]
            out["decimals"] = max(_decimals_text(v) for v in values[:1000])
            out.update(dist.learn(numbers, self.k))
        elif kind == "id":
            out.update(_id_shape(values, self.k))
        elif kind == "email":
            domains = Counter()
            seen: dict[str, set[int]] = defaultdict(set)
            for v, r in node.strings:
                seen[v.rsplit("@", 1)[-1].lower()].add(r)
            for domain, rs in seen.items():
                if len(rs) >= self.k:
                    domains[domain] = len(rs)
            out["domains"] = [[d, n] for d, n in domains.most_common(50)]
        elif kind in ("text", "words", "string"):
            # a prefix of the records is enough: a word seen in k of them is seen in k of all
            for v, r in itertools.islice(node.strings, TEXT_VALUES):
                words = kinds.words_of(v)
                for word in set(words):
                    self.text_records[word].add(r)
                for pair in set(itertools.pairwise(words)):
                    self.bigram_records[pair].add(r)
            if kind == "text":
                sentences = [
                    len(kinds.words_of(s))
                    for v in values[:TEXT_VALUES]
                    for s in kinds.sentences_of(v)
                ]
                out["sentence_words"] = dist.learn([s for s in sentences if s] or [8], self.k, True)
            else:
                out["words"] = dist.learn([len(v.split()) for v in values], self.k, True)
        self.kinds_by_path[path] = kind
        return out

    def vocabulary(self) -> dict:
        banned = {w for w in self.pii_words}
        words = {
            w: len(rs)
            for w, rs in self.text_records.items()
            if len(rs) >= self.k and w not in banned and not any(c.isdigit() for c in w)
        }
        following: dict[str, dict[str, int]] = defaultdict(dict)
        for (a, b), rs in self.bigram_records.items():
            if len(rs) >= self.k and a in words and b in words:
                following[a][b] = len(rs)
        return {
            "words": [[w, n] for w, n in sorted(words.items(), key=lambda x: (-x[1], x[0]))],
            "next": {
                a: [[b, n] for b, n in sorted(f.items(), key=lambda x: (-x[1], x[0]))]
                for a, f in sorted(following.items())
            },
        }


def _form_key(value: str) -> str:
    return re.sub(r"\d", "9", value)


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def _decimals_text(value: str) -> int:
    return len(value.split(".")[1]) if "." in value else 0


def _id_shape(values: list[str], k: int) -> dict:
    """An id's common prefix (shared by every value) and its shapes: 9 digit, A upper, a lower."""
    prefix = commonpath(values)
    prefix = re.match(r"[^0-9]*", prefix).group(0) if prefix else ""
    shapes = Counter(
        re.sub(r"[a-z]", "a", re.sub(r"[A-Z]", "A", re.sub(r"\d", "9", v[len(prefix) :])))
        for v in values
    )
    top = [[s, n] for s, n in shapes.most_common(20)]
    return {"prefix": prefix if len(values) >= k else "", "shapes": top}


def _walk_objects(profile_node: dict, raw: _Node, path: str):
    """(path, raw node) of every object node of the tree."""
    if raw.types["object"]:
        yield path, raw
    for key, child in raw.fields.items():
        yield from _walk_objects({}, child, f"{path}/{key}")


def _rules(learner: _Learner, root: _Node) -> list[dict]:
    """Cross-field rules that hold in every (or nearly every) instance the sample has."""
    kinds_at = learner.kinds_by_path
    rules: list[dict] = []
    need = max(_ORDER_MIN, learner.k)
    as_of = max(learner.moments) if learner.moments else None
    for path, node in _walk_objects({}, root, ""):
        dated = [key for key in node.fields if kinds_at.get(f"{path}/{key}") in _DATEISH]
        # ordered dates: a chain over the fields that always come in one order
        means = {}
        for key in dated:
            ms = [parse_moment(o[key]) for o in node.objects if isinstance(o.get(key), str)]
            ms = [m for m in ms if m is not None]
            if ms:
                means[key] = statistics.fmean(ms)
        chain = sorted(means, key=means.get)
        for before, after in itertools.pairwise(chain):
            gaps = []
            broken = False
            for o in node.objects:
                a, b = o.get(before), o.get(after)
                if isinstance(a, str) and isinstance(b, str):
                    ma, mb = parse_moment(a), parse_moment(b)
                    if ma is None or mb is None:
                        continue
                    if mb < ma:
                        broken = True
                        break
                    gaps.append(mb - ma)
            if not broken and len(gaps) >= need:
                rules.append(
                    {
                        "rule": "date_order",
                        "object": path,
                        "before": before,
                        "after": after,
                        "gap": dist.learn(gaps, learner.k),
                    }
                )
        # lists sorted by a date (lists of dates, or of objects by one of their dates)
        for key, child in node.fields.items():
            if not child.types["array"]:
                continue
            item_path = f"{path}/{key}/*"
            fields = (
                [None]
                if kinds_at.get(item_path) in _DATEISH
                else [
                    f
                    for f in (child.fields.get("*").fields if child.fields.get("*") else {})
                    if kinds_at.get(f"{item_path}/{f}") in _DATEISH
                ]
            )
            for field in fields:
                orders = Counter()
                for o in node.objects:
                    items = o.get(key)
                    if not isinstance(items, list):
                        continue
                    ms = [m for it in items if (m := _item_moment(it, field)) is not None]
                    if len(ms) < 2:
                        continue
                    asc = all(a <= b for a, b in itertools.pairwise(ms))
                    desc = all(a >= b for a, b in itertools.pairwise(ms))
                    orders["asc" if asc else "desc" if desc else "none"] += 1
                total = sum(orders.values())
                for order in ("asc", "desc"):
                    if total >= need and orders[order] == total:
                        rules.append(
                            {
                                "rule": "sorted",
                                "object": path,
                                "list": key,
                                "by": field,
                                "order": order,
                            }
                        )
                        break
        rules.extend(_full_name_rules(node, path, kinds_at, need))
        rules.extend(_email_rules(node, path, kinds_at, need))
        rules.extend(_years_rules(node, path, rules, need, as_of))
    return rules


_LOCAL_PARTS: dict[str, Callable[[str, str], str]] = {
    "first.last": lambda first, last: f"{first}.{last}",
    "firstlast": lambda first, last: f"{first}{last}",
    "first_last": lambda first, last: f"{first}_{last}",
    "first-last": lambda first, last: f"{first}-{last}",
    "f.last": lambda first, last: f"{first[:1]}.{last}",
    "flast": lambda first, last: f"{first[:1]}{last}",
    "last.first": lambda first, last: f"{last}.{first}",
    "first": lambda first, last: first,
}
_EMAIL_STYLES = tuple(_LOCAL_PARTS)  # tried in this order: "first" alone last
# How a name is written into an address: "plain" drops case, spaces and punctuation (Hans-Gerhard
# -> hansgerhard), "lower" keeps the punctuation (hans-gerhard); names without any read alike.
_NAME_FORMS: dict[str, Callable[[str], str]] = {
    "plain": normalize,
    "lower": lambda name: name.lower().replace(" ", ""),
}


def _item_moment(item: Any, field: str | None) -> float | None:
    """A list item's date (the item, or its `field`): None when it has none (items may be of
    any type, mixed)."""
    value = item if field is None else item.get(field) if isinstance(item, dict) else None
    return parse_moment(value) if isinstance(value, str) else None


def _local_part(style: str, first: str, last: str, names: str = "plain") -> str:
    form = _NAME_FORMS[names]
    return _LOCAL_PARTS[style](form(first), form(last))


def _full_name_rules(node: _Node, path: str, kinds_at: dict, need: int) -> list[dict]:
    """A full name that is the first and last names of the same object (at least 90% of it)."""
    keys = {kinds_at.get(f"{path}/{key}"): key for key in node.fields}
    first, last, full = (keys.get(k) for k in ("first_name", "last_name", "person_name"))
    if first is None or last is None or full is None:
        return []
    seen = joined = 0
    for o in node.objects:
        a, b, whole = o.get(first), o.get(last), o.get(full)
        if isinstance(a, str) and isinstance(b, str) and isinstance(whole, str):
            seen += 1
            joined += whole == f"{a} {b}"
    if seen < need or joined < 0.9 * seen:
        return []
    return [
        {
            "rule": "full_name",
            "object": path,
            "first": first,
            "last": last,
            "full": full,
            "share": round(joined / seen, 6),
        }
    ]


def _email_rules(node: _Node, path: str, kinds_at: dict, need: int) -> list[dict]:
    keys = {}
    for key, child in node.fields.items():
        keys.setdefault(kinds_at.get(f"{path}/{key}"), key)
        for inner in child.fields if child.types["object"] else ():
            keys.setdefault(kinds_at.get(f"{path}/{key}/{inner}"), f"{key}/{inner}")
    email = keys.get("email")
    if email is None:
        return []
    styles = Counter()
    seen = 0
    for o in node.objects:
        address = _get(o, email)
        first, last = _names(o, keys)
        if not isinstance(address, str) or "@" not in address or not first or not last:
            continue
        seen += 1
        local = address.rsplit("@", 1)[0].lower()
        local = re.sub(r"[._+-]*\d+$", "", local)  # jane.doe.7@, jane.doe42@: a number added
        for style in _EMAIL_STYLES:
            forms = [f for f in _NAME_FORMS if local == _local_part(style, first, last, f)]
            styles.update((style, form) for form in forms)  # a name without punctuation: both
            if forms:
                break
    if seen < need or not styles:
        return []
    # the commonest style; of its name forms the commoner, "plain" when they tie
    (style, form), count = max(styles.items(), key=lambda kv: (kv[1], kv[0][1] == "plain"))
    if count < 0.5 * seen:
        return []
    names = {
        "first": keys.get("first_name"),
        "last": keys.get("last_name"),
        "full": keys.get("person_name"),
    }
    return [
        {
            "rule": "email_from_name",
            "object": path,
            "email": email,
            "style": style,
            "names": form,
            "share": round(count / seen, 6),
            **{k: v for k, v in names.items() if v},
        }
    ]


def _get(o: dict, key: str | None):
    """o[key], where key may be "child/field" (a name one object down)."""
    if key is None:
        return None
    if key in o:
        return o[key]
    head, _, tail = key.partition("/")
    inner = o.get(head)
    return inner.get(tail) if tail and isinstance(inner, dict) else None


def _names(o: dict, keys: dict) -> tuple[str, str]:
    first, last = _get(o, keys.get("first_name")), _get(o, keys.get("last_name"))
    if isinstance(first, str) and isinstance(last, str):
        return first, last
    full = _get(o, keys.get("person_name"))
    if isinstance(full, str) and len(full.split()) >= 2:
        words = full.split()
        return words[0], words[-1]
    return "", ""


def _years_rules(node: _Node, path: str, rules: list[dict], need: int, as_of) -> list[dict]:
    """A number of years equal to the dates of a list's items: their sum, or their span."""
    out = []
    spans = [r for r in rules if r["rule"] == "date_order"]
    for key in node.fields:
        if not re.search(r"year|experience|tenure", key, re.IGNORECASE):
            continue
        for rule in spans:
            if (
                not rule["object"].startswith(f"{path}/")
                or rule["object"].count("/") != path.count("/") + 2
            ):
                continue
            list_key = rule["object"][len(path) + 1 : -2]
            for mode in ("sum", "span"):
                hits = total = 0
                for o in node.objects:
                    years, items = o.get(key), o.get(list_key)
                    if not isinstance(years, (int, float)) or not isinstance(items, list):
                        continue
                    value = _years(items, rule["before"], rule["after"], mode, as_of)
                    if value is None:
                        continue
                    total += 1
                    hits += abs(value - years) <= 0.51
                if total >= need and hits >= 0.95 * total:
                    out.append(
                        {
                            "rule": "years_from_dates",
                            "object": path,
                            "field": key,
                            "list": list_key,
                            "start": rule["before"],
                            "end": rule["after"],
                            "mode": mode,
                            "as_of": as_of,
                        }
                    )
                    break
    return out


def _years(items: list, start: str, end: str, mode: str, as_of) -> float | None:
    pairs = []
    for item in items:
        a = parse_moment(item.get(start, "")) if isinstance(item.get(start), str) else None
        b = parse_moment(item.get(end)) if isinstance(item.get(end), str) else as_of
        if a is None or b is None:
            return None
        pairs.append((a, b))
    if not pairs:
        return None
    if mode == "sum":
        return sum(b - a for a, b in pairs) / (365.25 * 86400)
    return (max(b for _, b in pairs) - min(a for a, _ in pairs)) / (365.25 * 86400)


def _locale(sample: Sample, root: _Node) -> str:
    if sample.locale:
        return sample.locale
    countries: Counter[str] = Counter()

    def visit(node: _Node, name: str) -> None:
        if name and kinds.name_hint(name) in ("country", "country_code"):
            for value, _ in node.strings:
                locale = _COUNTRY_LOCALES.get(value.strip().lower())
                if locale:
                    countries[locale] += 1
        for key, child in node.fields.items():
            visit(child, name if key == "*" else key)

    visit(root, "")
    if countries:
        return countries.most_common(1)[0][0]
    return "en_US"


def learn_profile(sample: Sample, k: int = DEFAULT_K) -> dict:
    """The profile of a sample's records (see docs/generators.md, "Profiles")."""
    if k < 1:
        raise SampleError(f"--k must be 1 or more, got {k}")
    records = sample.records
    if len(records) < k:
        raise SampleError(
            f"the sample has {len(records)} records, fewer than k={k}: nothing could be seen in k "
            f"distinct records; give at least {k} records or a smaller --k"
        )
    root = _Node()
    for index, record in enumerate(records):
        try:
            _walk(root, record, index)
        except _TooDeep:
            raise SampleError(
                f"record {index} nests lists and objects more than {MAX_DEPTH} deep: "
                "point --records at the records, or flatten the sample"
            ) from None
    learner = _Learner(sample, k)
    tree = learner.node(root, "", "", None)
    sizes = [len(orjson.dumps(r)) for r in records]
    bits = 1 << max(16, (len(learner.pii_values) * 8).bit_length())
    salt = os.urandom(16)
    bitmap = bytearray(bits // 8)
    bit_of = pii_hasher(salt, bits)
    for value in learner.pii_values:
        bit = bit_of(value)
        bitmap[bit >> 3] |= 1 << (bit & 7)
    job = sample.job if isinstance(sample.job, dict) else None
    profile = {
        "profile_version": PROFILE_VERSION,
        "k": k,
        "records": len(records),
        "locale": _locale(sample, root),
        "bytes_per_record": {
            "mean": round(statistics.fmean(sizes), 1),
            "std": round(statistics.pstdev(sizes), 1),
        },
        "root": tree,
        "rules": _rules(learner, root),
        "text": learner.vocabulary(),
        "job": job,
        "system_prompt": sample.system_prompt if job is None else None,
        "pii_filter": {
            "salt": salt.hex(),
            "bits": bits,
            "bitmap": base64.b64encode(bytes(bitmap)).decode(),
        },
    }
    return profile


def sample_pii(sample: Sample, profile: dict) -> list[tuple[str, str]]:
    """(kind, value) of every identifying string in the sample, by the profile's kinds."""
    found: list[tuple[str, str]] = []

    def visit(node: dict, value: Any) -> None:
        if isinstance(value, str):
            kind = node.get("string", {}).get("kind")
            if kind in kinds.PII_KINDS and len(normalize(value)) >= 3:
                found.append((kind, value))
        elif isinstance(value, list):
            for element in value:
                visit(node.get("items", {}), element)
        elif isinstance(value, dict):
            for key, child in value.items():
                visit(node.get("fields", {}).get(key, {}), child)

    for record in sample.records:
        visit(profile["root"], record)
    return found
