"""String kinds, detected from a field's name and its values: what each field *means*.

Written here rather than taken from Presidio (needs a spaCy model download) or scrubadub (its name
detection needs TextBlob/NLTK corpora): regular expressions for the shaped kinds, Faker's own name
and country lists for the rest, and field-name hints for both.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Sequence

# Kinds whose values identify a person or a record: never kept, never categorical, never copied.
PII_KINDS = frozenset(
    {
        "person_name",
        "first_name",
        "last_name",
        "email",
        "phone",
        "url",
        "street_address",
        "postal_code",
        "uuid",
        "id",
    }
)
# Kinds filled from Faker when they are not categorical.
FAKER_KINDS = PII_KINDS - {"uuid", "id"} | {"city", "region", "country", "company", "job_title"}

EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
URL = re.compile(r"(?:https?://|www\.)[^\s\"'<>]+", re.IGNORECASE)
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().\-/]{6,18}\d(?:\s*(?:x|ext\.?)\s*\d{1,5})?(?![\w.])")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
YEAR_MONTH = re.compile(r"\d{4}-(?:0[1-9]|1[0-2])")
DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?"
)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Record ids: letters, digits and separators with at least one digit, e.g. cand-0000123, AB12-9.
ID = re.compile(r"(?=[^\s]*\d)[A-Za-z0-9]+(?:[-_:./#][A-Za-z0-9]+)*")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")

# Field-name hints, most specific first: (kind, pattern over the snake_cased name).
_NAME_HINTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("email", r"(^|_)(e_?mail|mail)(_|$)"),
        ("phone", r"(^|_)(phone|tel|telephone|mobile|cell|fax)(_|$)"),
        ("url", r"(^|_)(url|uri|link|website|homepage|linkedin|github)(_|$)"),
        ("uuid", r"(^|_)uuid(_|$)"),
        ("first_name", r"(^|_)(first_?name|given_?name|forename|vorname|prenom)(_|$)"),
        ("last_name", r"(^|_)(last_?name|family_?name|surname|nachname|nom)(_|$)"),
        ("company", r"(^|_)(company|employer|organi[sz]ation|org|firm|firma)(_name)?$"),
        ("job_title", r"(^|_)(job_?title|title|position|role|occupation|headline)$"),
        ("person_name", r"(^|_)(full_?name|name|person|contact|author|applicant|candidate_name)$"),
        ("postal_code", r"(^|_)(zip|zip_?code|postal_?code|post_?code|postcode|plz)(_|$)"),
        ("street_address", r"(^|_)(street|address|address_?line\d?|addr|strasse)(_|$)"),
        ("city", r"(^|_)(city|town|locality|ort|stadt|ville)(_|$)"),
        ("region", r"(^|_)(region|state|province|county|bundesland)(_|$)"),
        ("country_code", r"(^|_)country_?code(_|$)"),
        ("country", r"(^|_)(country|nation|land|pays)(_|$)"),
        ("id", r"(^|_)(id|identifier|ref|reference|number|no|code|key)$"),
    )
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_PERSON_LOCALES = (
    "en_US",
    "en_GB",
    "de_DE",
    "fr_FR",
    "es_ES",
    "it_IT",
    "nl_NL",
    "pl_PL",
    "pt_BR",
    "sv_SE",
)


def snake(name: str) -> str:
    return _CAMEL.sub("_", name).replace("-", "_").replace(" ", "_").lower()


_NAME_PARTS = {
    "first": "first_name",
    "given": "first_name",
    "last": "last_name",
    "family": "last_name",
    "full": "person_name",
    "display": "person_name",
}


def name_hint(name: str, parent: str = "") -> str | None:
    """The kind a field's name (in its parent object's name) suggests, or None."""
    key = snake(name)
    if "name" in snake(parent) and key in _NAME_PARTS:
        return _NAME_PARTS[key]
    for kind, pattern in _NAME_HINTS:
        if pattern.search(key):
            return kind
    return None


def _provider_words(module: str, attribute: str) -> set[str]:
    try:
        provider = importlib.import_module(module).Provider
    except (ImportError, AttributeError):
        return set()
    values = getattr(provider, attribute, ())
    return {str(v) for v in values}


@functools.lru_cache(maxsize=1)
def known_first_names() -> frozenset[str]:
    names: set[str] = set()
    for locale in _PERSON_LOCALES:
        names |= _provider_words(f"faker.providers.person.{locale}", "first_names")
    return frozenset(n for n in names if len(n) > 1)


@functools.lru_cache(maxsize=1)
def known_last_names() -> frozenset[str]:
    names: set[str] = set()
    for locale in _PERSON_LOCALES:
        names |= _provider_words(f"faker.providers.person.{locale}", "last_names")
    return frozenset(n for n in names if len(n) > 1)


def full_match(pattern: re.Pattern[str], value: str) -> bool:
    return pattern.fullmatch(value) is not None


def looks_like_person_name(value: str) -> bool:
    """2-4 capitalised words whose first (or last) is a known first (or last) name."""
    words = value.replace(",", " ").split()
    if not 2 <= len(words) <= 4 or not all(w[:1].isupper() for w in words):
        return False
    return words[0] in known_first_names() or words[-1] in known_last_names()


def shape_kind(value: str) -> str | None:
    """The kind a single value's shape says by itself (email, url, uuid, dates, numbers...)."""
    if full_match(UUID, value):
        return "uuid"
    if full_match(EMAIL, value):
        return "email"
    if full_match(URL, value):
        return "url"
    if full_match(DATE, value):
        return "date"
    if full_match(DATETIME, value):
        return "datetime"
    if full_match(YEAR_MONTH, value):
        return "year_month"
    if full_match(NUMBER, value):
        return "numeric_string"
    if full_match(PHONE, value) and sum(c.isdigit() for c in value) >= 7:
        return "phone"
    return None


def _share(values: Sequence[str], test) -> float:
    return sum(1 for v in values if test(v)) / len(values) if values else 0.0


def detect_kind(name: str, values: Sequence[str], parent: str = "") -> str:
    """A string field's kind from its name and (a sample of) its non-null values.

    Returns one of the shaped kinds, a Faker kind, "text" (sentences), "words" (short phrases)
    or "string"; the caller decides "categorical" (it needs the counts per record).
    """
    if not values:
        return "string"
    shapes: dict[str | None, int] = {}
    for value in values:
        kind = shape_kind(value)
        shapes[kind] = shapes.get(kind, 0) + 1
    top, count = max(shapes.items(), key=lambda item: item[1])
    hint = name_hint(name, parent)
    if top is not None and count >= 0.95 * len(values):
        if top == "numeric_string" and hint in ("phone", "postal_code", "id"):
            return hint
        if (
            top == "numeric_string"
            and hint is None
            and _share(values, lambda v: len(v) > 1 and v[0] == "0") > 0.2
        ):
            return "id"  # leading zeros: a code, not a number
        return top
    if hint in ("email", "phone", "url", "uuid") and top == hint:
        return hint
    if hint in ("first_name", "last_name"):
        return hint
    if hint == "person_name" and _share(values, looks_like_person_name) > 0.3:
        return "person_name"
    if _share(values, looks_like_person_name) > 0.6:
        return "person_name"
    if hint in (
        "company",
        "job_title",
        "postal_code",
        "street_address",
        "city",
        "region",
        "country",
        "country_code",
    ):
        return hint
    if hint == "id" and _share(values, lambda v: full_match(ID, v)) > 0.95:
        return "id"
    if _share(values, lambda v: full_match(ID, v) and len(v) >= 4) > 0.95 and hint != "job_title":
        return "id"
    words = sum(len(v.split()) for v in values) / len(values)
    sentences = _share(values, lambda v: v.rstrip()[-1:] in ".!?")
    if words >= 6 or (words >= 3 and sentences > 0.5):
        return "text"
    if (
        _share(values, lambda v: _WORD.fullmatch(v.split()[0]) is not None if v.split() else False)
        > 0.9
    ):
        return "words"
    return "string"


def words_of(text: str) -> list[str]:
    """The words of a text, as the Markov chain sees them (punctuation and numbers dropped)."""
    return _WORD.findall(text)


def sentences_of(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
