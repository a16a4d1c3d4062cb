"""Pseudonyms for personal data in captured requests: in JSON fields and inside prompt text.

The same input gives the same fake value within a capture (an HMAC of the value under a secret
drawn per capture, kept in memory only), so names, emails and ids stay joinable across lines
while no real one is written.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import uuid
from typing import Any

import orjson
from faker import Faker

from generators.learn import kinds
from generators.learn.sample import nests_deeper

# Keys of the API envelopes themselves: never personal, and needed as they are for a replay.
_PROTOCOL_KEYS = frozenset(
    {
        "model",
        "role",
        "type",
        "method",
        "url",
        "custom_id",
        "stream",
        "format",
        "purpose",
        "endpoint",
        "completion_window",
        "object",
        "keep_alive",
        "response_format",
        "tool_choice",
        "finish_reason",
        "done_reason",
        "image_url",
        "detail",
    }
)
_REPLACED = kinds.PII_KINDS | {"city"}  # what identifies a person, and where they live
_TEXT_ID = re.compile(r"\b[A-Za-z]{2,10}[-_]\d{4,}\b")
_CAPITALISED_PAIR = re.compile(r"\b([A-Z][a-zà-ÿ'’-]+)\s+([A-Z][a-zà-ÿ'’-]+)\b")
_POOL = 997  # fake values per kind (a prime: the HMAC picks among them)
_FAKE_DOMAINS = ("example.com", "example.org", "example.net")


class Pseudonymizer:
    """Replaces detected personal data with consistent fake values; `json` and `text` entries."""

    def __init__(self, secret: bytes | None = None, locale: str = "en_US") -> None:
        self._secret = secret if secret is not None else os.urandom(32)
        faker = Faker(locale)
        faker.seed_instance(int.from_bytes(self._digest("pool-seed", "")[:8], "little"))
        self._pools = {
            "first_name": tuple(faker.first_name() for _ in range(_POOL)),
            "last_name": tuple(faker.last_name() for _ in range(_POOL)),
            "street_address": tuple(faker.street_address() for _ in range(_POOL)),
            "city": tuple(faker.city() for _ in range(_POOL)),
        }
        self._names: dict[str, str] = {}  # real name word -> its pseudonym, seen in JSON fields
        self._name_pattern: re.Pattern[str] | None = None
        self.replaced = 0

    def __repr__(self) -> str:  # the secret never reaches a log
        return "Pseudonymizer(<secret>)"

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def _pick(self, kind: str, value: str) -> str:
        pool = self._pools[kind]
        return pool[int.from_bytes(self._digest(kind, value)[:8], "little") % len(pool)]

    def _shape(self, kind: str, value: str) -> str:
        """value with its digits and letters replaced, keyed: same shape, same separators."""
        stream = self._digest(kind, value) * 4
        out = []
        for index, c in enumerate(value):
            b = stream[index % len(stream)]
            if c.isdigit():
                out.append(str(b % 10))
            elif c.isascii() and c.isupper():
                out.append(chr(65 + b % 26))
            elif c.isascii() and c.islower():
                out.append(chr(97 + b % 26))
            else:
                out.append(c)
        return "".join(out)

    # -- one value of a known kind ----------------------------------------------------------
    def value(self, kind: str, value: str) -> str:
        self.replaced += 1
        if kind in ("first_name", "last_name"):
            return self._name_word(kind, value)
        if kind == "person_name":
            return self._full_name(value)
        if kind == "email":
            local, _, domain = value.rpartition("@")
            fake_local = (
                kinds.snake(self._pick("first_name", local))
                + "."
                + kinds.snake(self._pick("last_name", local))
            )
            fake_local = re.sub(r"[^a-z0-9._-]", "", fake_local)
            domain_index = self._digest("domain", domain.lower())[0] % len(_FAKE_DOMAINS)
            return f"{fake_local}@{_FAKE_DOMAINS[domain_index]}"
        if kind == "url":
            host = self._digest("url-host", value).hex()[:10]
            return f"https://{host}.example.com/{self._digest('url', value).hex()[:12]}"
        if kind == "uuid":
            return str(uuid.UUID(bytes=self._digest("uuid", value)[:16], version=4))
        if kind in ("street_address", "city"):
            return self._pick(kind, value)
        return self._shape(kind, value)  # phone, postal code, id

    def _name_word(self, kind: str, word: str) -> str:
        fake = self._names.get(word)
        if fake is None:
            fake = self._names[word] = self._pick(kind, word)
            self._name_pattern = None
        return fake

    def _full_name(self, value: str) -> str:
        words = value.split()
        if len(words) == 1:
            return self._name_word("last_name", words[0])
        fake = [self._name_word("first_name", w) for w in words[:-1]]
        return " ".join([*fake, self._name_word("last_name", words[-1])])

    # -- JSON and text ----------------------------------------------------------------------
    def json(self, value: Any, key: str = "", parent: str = "") -> Any:
        """value with personal data replaced: by field name, by value shape, and inside text."""
        if isinstance(value, dict):
            return {
                k: self.json(v, k, key) if k not in _PROTOCOL_KEYS else v for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.json(v, key, parent) for v in value]
        if not isinstance(value, str) or not value:
            return value
        hint = kinds.name_hint(key, parent) if key else None
        if (
            hint in _REPLACED
            and len(value) < 200
            and (hint != "id" or kinds.full_match(kinds.ID, value))
        ):
            return self.value(hint, value)
        shape = kinds.shape_kind(value)
        if shape in ("email", "url", "uuid", "phone"):
            return self.value(shape, value)
        return self.text(value)

    def text(self, text: str) -> str:
        """Free text (a prompt): embedded JSON is walked; emails, URLs, phones, ids and names
        (those seen in fields so far, and capitalised first-name pairs) are replaced."""
        stripped = text.strip()
        if stripped[:1] in "{[" and stripped[-1:] in "}]":
            try:
                parsed = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, (dict, list)) and not nests_deeper(parsed):
                return orjson.dumps(self.json(parsed)).decode()
            # deeper than a record: replaced as text, below
        text = kinds.EMAIL.sub(lambda m: self.value("email", m.group(0)), text)
        text = kinds.URL.sub(lambda m: self.value("url", m.group(0)), text)
        text = kinds.UUID.sub(lambda m: self.value("uuid", m.group(0)), text)
        text = kinds.PHONE.sub(self._phone, text)
        text = _TEXT_ID.sub(lambda m: self.value("id", m.group(0)), text)
        text = _CAPITALISED_PAIR.sub(self._pair, text)
        if self._names:
            if self._name_pattern is None:
                words = sorted(self._names, key=len, reverse=True)
                self._name_pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b")
            text = self._name_pattern.sub(lambda m: self._names[m.group(0)], text)
        return text

    def _phone(self, match: re.Match[str]) -> str:
        value = match.group(0)
        digits = sum(c.isdigit() for c in value)
        if (
            digits < 7
            or kinds.full_match(kinds.DATE, value.strip())
            or re.fullmatch(r"[\d.]+", value)
        ):
            return value  # a number or a date, not a phone
        return self.value("phone", value)

    def _pair(self, match: re.Match[str]) -> str:
        first, last = match.group(1), match.group(2)
        if first in kinds.known_first_names() and (
            last in kinds.known_last_names() or last in self._names
        ):
            return self._full_name(f"{first} {last}")
        return match.group(0)
