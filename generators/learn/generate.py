"""Records from a profile: record i is a pure function of (profile, seed, i, locale).

Kinds come from Faker pools drawn once per (seed, locale), free text from a Markov chain over the
profile's k-anonymous vocabulary, and the profile's cross-field rules are applied last. Values
whose normalized form is in the profile's `pii_filter` are drawn again, so a sample's identifying
value is never written.
"""

from __future__ import annotations

import base64
import bisect
import functools
import random
import string
import uuid
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson
from faker import Faker

from generators.learn import profile as learned
from generators.learn.dist import Sampler
from generators.learn.kinds import words_of

POOL_SIZE = 1000
SENTENCES = 256  # sentences drawn per length, once per seed: a text is a draw of them
_MIX = 0x9E3779B97F4A7C15
_DAY = 86400.0


class ProfileError(Exception):
    """The profile cannot be generated from; the message says why."""


def check_profile(profile: Any) -> dict:
    if not isinstance(profile, dict) or "root" not in profile:
        raise ProfileError("not a profile: it has no 'root' (write one with `harness learn`)")
    version = profile.get("profile_version")
    if version != learned.PROFILE_VERSION:
        raise ProfileError(
            f"profile version {version!r} is not {learned.PROFILE_VERSION}: learn it again"
        )
    return profile


class _Pools:
    """Faker values per kind, drawn once per (seed, locale) and lazily per kind."""

    def __init__(self, seed: int, locale: str, blocked: Callable[[str], bool]) -> None:
        self._faker = Faker(locale)
        self._seed = seed
        self._blocked = blocked
        self._pools: dict[str, tuple[str, ...]] = {}

    def __getitem__(self, kind: str) -> tuple[str, ...]:
        pool = self._pools.get(kind)
        if pool is None:
            self._faker.seed_instance(zlib.crc32(f"{self._seed}:{kind}".encode()))
            make = _FAKER[kind]
            values = []
            for _ in range(POOL_SIZE * 2):
                value = make(self._faker)
                if not self._blocked(value) and not _blocked_runs(value, self._blocked):
                    values.append(value)
                if len(values) >= POOL_SIZE:
                    break
            pool = self._pools[kind] = tuple(values) or ("x",)
        return pool


_FAKER: dict[str, Callable[[Faker], str]] = {
    "first_name": lambda f: f.first_name(),
    "last_name": lambda f: f.last_name(),
    "email": lambda f: f"{f.user_name()}@{f.free_email_domain()}",
    "phone": lambda f: f.phone_number(),
    "url": lambda f: f.url() + f.uri_path(),
    "street_address": lambda f: f.street_address(),
    "postal_code": lambda f: f.postcode(),
    "city": lambda f: f.city(),
    "region": lambda f: f.administrative_unit() if hasattr(f, "administrative_unit") else f.city(),
    "country": lambda f: f.current_country() if _safe(f.current_country) else f.country(),
    "country_code": lambda f: f.current_country_code() if _safe(f.current_country_code) else "US",
    "company": lambda f: f.company(),
    "job_title": lambda f: f.job(),
}


def _blocked_runs(value: str, blocked: Callable[[str], bool]) -> bool:
    """True when a run of 2-4 of value's words may be a sample's identifying value."""
    words = words_of(value)
    return any(
        blocked(" ".join(words[start : start + size]))
        for size in range(2, min(4, len(words)) + 1)
        for start in range(len(words) - size + 1)
    )


def _safe(call: Callable[[], str]) -> bool:
    try:
        call()
    except Exception:  # Faker raises for locales without one country
        return False
    return True


class ProfileBuilder:
    """Builds record i of a profile; build_json(i) is what the dataset writers call."""

    def __init__(self, profile: dict, seed: int = 0, locale: str | None = None) -> None:
        self.profile = check_profile(profile)
        self.seed = seed
        self.locale = locale or profile.get("locale") or "en_US"
        flt = profile.get("pii_filter") or {}
        self._salt = bytes.fromhex(flt.get("salt", ""))
        self._bits = int(flt.get("bits", 0))
        self._bitmap = base64.b64decode(flt.get("bitmap", "")) if self._bits else b""
        self._pools = _Pools(seed, self.locale, self.blocked)
        self._rules: dict[str, list[dict]] = {}
        for rule in profile.get("rules", ()):
            self._rules.setdefault(rule["object"], []).append(rule)
        text = profile.get("text") or {}
        words = text.get("words") or []
        self._words = [w for w, _ in words]
        self._word_cum = _cumulative([n for _, n in words])
        self._next = {
            a: ([b for b, _ in nexts], _cumulative([n for _, n in nexts]))
            for a, nexts in (text.get("next") or {}).items()
        }
        self._sentence_pools: dict[int, tuple[str, ...]] = {}
        self._coupling = 0.0
        self._record_quantile = 0.5
        self._root = self._compile(profile["root"], "")
        self._coupling = self._calibrate()

    def _calibrate(self) -> float:
        """The size coupling whose records' size std is nearest the sample's (from 200-record
        trial runs past any index a dataset uses): the sample's size spread, calibrated."""
        want = (self.profile.get("bytes_per_record") or {}).get("std")
        if not want:
            return 0.0
        errors: dict[float, float] = {}

        def error(coupling: float) -> float:
            if coupling not in errors:
                self._coupling = coupling
                sizes = [len(self.build_json(-1 - i)) for i in range(150)]
                mean = sum(sizes) / len(sizes)
                errors[coupling] = abs(
                    (sum((s - mean) ** 2 for s in sizes) / len(sizes)) ** 0.5 - want
                )
            return errors[coupling]

        best = min((0.0, 0.3, 0.6, 0.9), key=error)
        return min(
            (best, round(max(0.0, best - 0.15), 2), round(min(1.0, best + 0.15), 2)), key=error
        )

    def blocked(self, value: str) -> bool:
        """True when value's normalized form may be a sample's identifying value."""
        if not self._bits:
            return False
        bit = learned.pii_hash(self._salt, value, self._bits)
        return bool(self._bitmap[bit >> 3] >> (bit & 7) & 1)

    # -- compiling a node into a closure: rng -> value --------------------------------------
    def _compile(self, node: dict, path: str) -> Callable[[random.Random], Any]:
        types = node.get("types") or {"null": 1.0}
        makers = []
        for name in types:
            makers.append(self._maker(name, node, path))
        cumulative = _cumulative(list(types.values()))
        if len(makers) == 1:
            return makers[0]

        def pick(rng: random.Random) -> Any:
            return makers[_choose(cumulative, rng)](rng)

        return pick

    def _maker(self, type_name: str, node: dict, path: str) -> Callable[[random.Random], Any]:
        if type_name == "null":
            return lambda rng: None
        if type_name == "boolean":
            share = node.get("boolean", {}).get("true", 0.5)
            return lambda rng: rng.random() < share
        if type_name in ("integer", "number"):
            return self._number(
                node.get("number") or {"integer": True, "quantiles": [0, 0]}, type_name == "integer"
            )
        if type_name == "string":
            return self._string(node.get("string") or {"kind": "string"})
        if type_name == "array":
            return self._array(node, path)
        if type_name == "object":
            return self._object(node, path)
        raise ProfileError(f"profile type {type_name!r} at {path or '/'} is not a JSON type")

    def _number(self, spec: dict, integer: bool) -> Callable[[random.Random], Any]:
        if "values" in spec:
            values = [v for v, _ in spec["values"]]
            cumulative = _cumulative([n for _, n in spec["values"]])
            return lambda rng: values[_choose(cumulative, rng)]
        sampler = Sampler(spec)
        if integer:
            return lambda rng: round(sampler.draw(rng))
        decimals = spec.get("decimals", 2)
        return lambda rng: round(sampler.draw(rng), decimals)

    def _string(self, spec: dict) -> Callable[[random.Random], str]:
        base = self._kind(spec)
        if "values" in spec:
            values = [v for v, _ in spec["values"]]
            cumulative = _cumulative([n for _, n in spec["values"]])
            other = spec.get("other", 0.0)
            return lambda rng: (
                base(rng) if rng.random() < other else values[_choose(cumulative, rng)]
            )
        return base

    def _kind(self, spec: dict) -> Callable[[random.Random], str]:
        kind = spec.get("kind", "string")
        length = Sampler(spec.get("length") or {"counts": {"8": 1}})
        if kind == "person_name":
            firsts, lasts = self._pools["first_name"], self._pools["last_name"]

            def full_name(rng: random.Random) -> str:
                first = firsts[int(rng.random() * len(firsts))]
                return f"{first} {lasts[int(rng.random() * len(lasts))]}"

            return self._unblocked(full_name)
        if kind in _FAKER:
            if kind == "email" and spec.get("domains"):
                domains = [d for d, _ in spec["domains"]]
                users = self._pools["first_name"]

                def email(rng: random.Random) -> str:
                    pool = self._pools["email"]
                    local = pool[int(rng.random() * len(pool))].split("@")[0]
                    if rng.random() < 0.5:
                        local = (
                            learned.normalize(users[int(rng.random() * len(users))]) + local[-2:]
                        )
                    return f"{local}@{domains[int(rng.random() * len(domains))]}"

                return self._unblocked(email)
            pools = self._pools

            def faker_value(rng: random.Random) -> str:
                pool = pools[kind]
                return pool[int(rng.random() * len(pool))]

            return faker_value
        if kind in ("date", "datetime", "year_month"):
            moments = Sampler(spec)
            form = spec.get("format") or {"kind": kind}
            return lambda rng: format_moment(moments.draw(rng), form)
        if kind == "uuid":
            return lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if kind == "id":
            prefix = spec.get("prefix", "")
            shapes = [s for s, _ in spec.get("shapes") or [["99999999", 1]]]
            cumulative = _cumulative([n for _, n in spec.get("shapes") or [["", 1]]])
            return self._unblocked(
                lambda rng: prefix + _fill(shapes[_choose(cumulative, rng)], rng)
            )
        if kind == "numeric_string":
            numbers = Sampler(spec)
            decimals = spec.get("decimals", 0)
            if decimals:
                return lambda rng: f"{numbers.draw(rng):.{decimals}f}"
            return lambda rng: str(round(numbers.draw(rng)))
        if kind == "text":
            sentence = Sampler(spec.get("sentence_words") or {"counts": {"10": 1}})
            return lambda rng: self._text(rng, round(length.at(self._size_quantile(rng))), sentence)
        if kind == "words":
            count = Sampler(spec.get("words") or {"counts": {"2": 1}})
            return lambda rng: self._phrase(rng, max(1, round(count.draw(rng))), length)
        return lambda rng: _letters(rng, max(0, round(length.draw(rng))))

    def _unblocked(self, make: Callable[[random.Random], str]) -> Callable[[random.Random], str]:
        def draw(rng: random.Random) -> str:
            for _ in range(16):
                value = make(rng)
                if not self.blocked(value):
                    return value
            return value + _letters(rng, 3)  # a still-blocked draw is made new

        return draw

    def _size_quantile(self, rng: random.Random) -> float:
        """A length's quantile: the record's own (shared by its lengths: real records are long
        or short as a whole) with weight `size_coupling`, else an independent one."""
        if self._coupling and rng.random() < self._coupling:
            return self._record_quantile
        return rng.random()

    def _array(self, node: dict, path: str) -> Callable[[random.Random], list]:
        length = Sampler(node.get("length") or {"counts": {"0": 1}})
        item = self._compile(node.get("items") or {"types": {"null": 1}}, f"{path}/*")
        unique = node.get("unique", False)

        def make(rng: random.Random) -> list:
            n = max(0, round(length.at(self._size_quantile(rng))))
            if not unique:
                return [item(rng) for _ in range(n)]
            out, seen = [], set()
            for _ in range(n * 4):
                value = item(rng)
                key = value if isinstance(value, (str, int, float)) else id(value)
                if key not in seen:
                    seen.add(key)
                    out.append(value)
                    if len(out) == n:
                        break
            return out

        return make

    def _object(self, node: dict, path: str) -> Callable[[random.Random], dict]:
        fields = [
            (key, child.get("presence", 1.0), self._compile(child, f"{path}/{key}"))
            for key, child in (node.get("fields") or {}).items()
        ]
        rules = [self._rule(rule) for rule in self._rules.get(path, ())]

        def make(rng: random.Random) -> dict:
            out = {}
            for key, presence, child in fields:
                if presence >= 1.0 or rng.random() < presence:
                    out[key] = child(rng)
            for rule in rules:
                rule(out, rng)
            return out

        return make

    # -- cross-field rules ------------------------------------------------------------------
    def _rule(self, rule: dict) -> Callable[[dict, random.Random], None]:
        kind = rule["rule"]
        if kind == "date_order":
            gap = Sampler(rule["gap"])
            before, after = rule["before"], rule["after"]

            def order(out: dict, rng: random.Random) -> None:
                a, b = out.get(before), out.get(after)
                if isinstance(a, str) and isinstance(b, str):
                    start = learned.parse_moment(a)
                    if start is not None:
                        out[after] = format_moment(start + gap.draw(rng), _form_of(b))

            return order
        if kind == "sorted":
            key, by, reverse = rule["list"], rule["by"], rule["order"] == "desc"

            def sort(out: dict, rng: random.Random) -> None:
                items = out.get(key)
                if not isinstance(items, list):
                    return
                if by is None:
                    if all(isinstance(v, str) for v in items):
                        items.sort(reverse=reverse)
                elif all(isinstance(v, dict) and isinstance(v.get(by), str) for v in items):
                    items.sort(key=lambda v: learned.parse_moment(v[by]) or 0.0, reverse=reverse)

            return sort
        if kind == "email_from_name":
            share, style, email = rule["share"], rule["style"], rule["email"]
            first_key, last_key, full_key = rule.get("first"), rule.get("last"), rule.get("full")

            def derive(out: dict, rng: random.Random) -> None:
                address = out.get(email)
                if not isinstance(address, str) or "@" not in address or rng.random() >= share:
                    return
                first, last = learned._names(
                    out, {"first_name": first_key, "last_name": last_key, "person_name": full_key}
                )
                if first and last:
                    local = learned._local_part(style, first, last)
                    domain = address.rsplit("@", 1)[1]
                    for suffix in ("", *(str(1 + int(rng.random() * 99)) for _ in range(4))):
                        candidate = f"{local}{suffix}@{domain}"
                        if not self.blocked(candidate):  # else a digit, as people do
                            out[email] = candidate
                            break

            return derive
        if kind == "years_from_dates":
            field, key, start, end, mode = (
                rule[x] for x in ("field", "list", "start", "end", "mode")
            )
            as_of = rule.get("as_of")

            def years(out: dict, rng: random.Random) -> None:
                items = out.get(key)
                if field not in out or not isinstance(items, list):
                    return
                value = learned._years(items, start, end, mode, as_of)
                if value is not None:
                    out[field] = round(value) if isinstance(out[field], int) else round(value, 1)

            return years
        return lambda out, rng: None

    # -- text -------------------------------------------------------------------------------
    def _word(self, rng: random.Random, previous: str | None) -> str:
        nexts = self._next.get(previous) if previous else None
        if nexts and rng.random() < 0.85:
            words, cumulative = nexts
            return words[_choose(cumulative, rng)]
        return self._words[_choose(self._word_cum, rng)]

    def _sentences(self, n: int) -> tuple[str, ...]:
        """SENTENCES Markov sentences of n words, drawn once per (seed, n)."""
        pool = self._sentence_pools.get(n)
        if pool is None:
            rng = random.Random(zlib.crc32(f"{self.seed}:sentences:{n}".encode()))
            made = []
            for _ in range(SENTENCES):
                words = []
                previous = None
                for _ in range(n):
                    previous = self._word(rng, previous)
                    words.append(previous)
                text = " ".join(words)
                made.append(text[:1].upper() + text[1:] + ".")
            pool = self._sentence_pools[n] = tuple(made)
        return pool

    def _text(self, rng: random.Random, target: int, sentence: Sampler) -> str:
        if not self._words:
            return _letters(rng, target)
        parts: list[str] = []
        size = 0
        while size < target:
            pool = self._sentences(max(1, min(80, round(sentence.draw(rng)))))
            text = pool[int(rng.random() * SENTENCES)]
            parts.append(text)
            size += len(text) + 1
        out = " ".join(parts)
        if len(out) > target + 1 and target > 0:
            cut = out.rfind(" ", 0, target)
            out = out[: cut if cut > 0 else target].rstrip(",;") + "."
        return out

    def _phrase(self, rng: random.Random, n: int, length: Sampler) -> str:
        if not self._words:
            return _letters(rng, max(1, round(length.draw(rng))))
        previous = None
        words = []
        for _ in range(n):
            previous = self._word(rng, previous)
            words.append(previous)
        return " ".join(words)

    # -- records ----------------------------------------------------------------------------
    def rng(self, i: int) -> random.Random:
        return random.Random(
            (self.seed * _MIX + i) & (2**128 - 1) if i >= 0 else f"calibrate:{self.seed}:{i}"
        )

    def build(self, i: int) -> dict:
        rng = self.rng(i)
        self._record_quantile = rng.random()
        return self._root(rng)

    def build_json(self, i: int) -> bytes:
        return orjson.dumps(self.build(i))

    def header(self, n: int) -> dict:
        """What a batch document (or a jsonl's sidecar) says of these records."""
        p = self.profile
        return {
            "schema_version": f"profile-{p['profile_version']}",
            "locale": self.locale,
            "job": p.get("job"),
            "profile": {"records": p.get("records"), "k": p.get("k")},
        }

    def system_prompt(self) -> str:
        """The sample's job (or its own system message), else the default evaluator job."""
        return _job_prompt(self.profile, self.seed, self.locale)


def _cumulative(weights: list[float]) -> list[float]:
    total = 0.0
    out = []
    for weight in weights:
        total += weight
        out.append(total)
    return out or [1.0]


def _choose(cumulative: list[float], rng: random.Random) -> int:
    return bisect.bisect_right(cumulative, rng.random() * cumulative[-1])


_ALNUM = string.ascii_lowercase + string.digits


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def _fill(shape: str, rng: random.Random) -> str:
    out = []
    for c in shape:
        if c == "9":
            out.append(str(rng.randrange(10)))
        elif c == "A":
            out.append(chr(65 + rng.randrange(26)))
        elif c == "a":
            out.append(chr(97 + rng.randrange(26)))
        else:
            out.append(c)
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _form_of(value: str) -> dict:
    """The format of a date already written (cached: one field has one format)."""
    return learned.moment_format(value)


def format_moment(seconds: float, form: dict) -> str:
    """A Unix time written as the profile's format says (date, year-month or datetime)."""
    moment = datetime.fromtimestamp(max(0.0, seconds), tz=timezone.utc)
    kind = form.get("kind", "date")
    if kind == "date":
        return moment.strftime("%Y-%m-%d")
    if kind == "year_month":
        return moment.strftime("%Y-%m")
    text = moment.strftime("%Y-%m-%d") + form.get("sep", "T") + moment.strftime("%H:%M")
    if form.get("seconds", True):
        text += moment.strftime(":%S")
        if form.get("fraction"):
            text += "." + f"{moment.microsecond:06d}"[: form["fraction"]].ljust(
                form["fraction"], "0"
            )
    return text + form.get("zone", "")


def _job_prompt(profile: dict, seed: int, locale: str) -> str:
    from generators.jobs import job
    from generators.prompts import system_prompt

    if isinstance(profile.get("job"), dict):
        try:
            return system_prompt(profile["job"])
        except (KeyError, TypeError):
            pass  # a job block of another shape: the default evaluator job below
    if isinstance(profile.get("system_prompt"), str):
        return profile["system_prompt"]
    return system_prompt(job(seed, locale))
