"""Records from a profile: record i is a pure function of (profile, seed, i, locale).

Kinds come from Faker pools drawn once per (seed, locale), free text is a slice of a per-field
corpus of Markov sentences over the profile's k-anonymous vocabulary, lists and objects that
identify no one come from pools of parts made once per seed (before the writers fork), and the
profile's cross-field rules are applied last. Values whose normalized form is in the profile's
`pii_filter` are drawn again, so a sample's identifying value is never written.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import functools
import itertools
import random
import re
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
from generators.learn.kinds import PII_KINDS, words_of

# Faker values per kind, drawn once per (seed, locale): names as many as the built-in generator's
# pools, slow kinds (Faker takes 50-100 us a value) fewer; POOL_SIZE for the others.
POOL_SIZE = 200
_POOL_SIZES = {"first_name": 400, "last_name": 400, "company": 300, "job_title": 300}
STREAM_WORDS = 16_384  # one Markov word stream per seed: sentences and phrases are slices of it
CORPUS_SENTENCES = 1024  # sentences per text field's corpus; a text is a slice of its corpus
LENGTH_TABLE = 4096  # a length distribution as a table of 4,096 quantiles: one index per draw
CALIBRATION_RECORDS = 200
# List items, lists and objects that hold no identifying kind come from pools made once per seed
# (as the built-in generator's pieces do). A pool is one tuple: BUCKETS runs of POOL values sized
# by the record's size octile (what a coupled draw takes), then FREE_POOL values sized freely.
BUCKETS = 8
POOL = 384
FREE = BUCKETS * POOL  # where the freely sized values start
FREE_POOL = 3072
POOL_BYTES = 8 << 20  # of JSON, a pool; bigger values are made per record (RSS stays flat)
TOTAL_POOL_BYTES = 64 << 20
_SIZE_PROBE = 64  # values made before a pool's size is judged
_RULE_KEYS = ("before", "after", "list", "email", "first", "last", "full", "field")
_MIX = 0x9E3779B97F4A7C15
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # the integers orjson writes (and most JSON readers)
_seed = random.Random.__base__.seed  # the C seed Random.seed calls for an int, called directly


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
            size = _POOL_SIZES.get(kind, POOL_SIZE)
            for _ in range(size * 2):
                value = make(self._faker)
                if not self._blocked(value) and not _blocked_runs(value, self._blocked):
                    values.append(value)
                if len(values) >= size:
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
        # value -> True when its normalized form may be a sample's identifying value
        self.blocked: Callable[[str], bool] = _pii_check(profile.get("pii_filter") or {})
        self._pools = _Pools(seed, self.locale, self.blocked)
        self._rules: dict[str, list[dict]] = {}
        for rule in profile.get("rules", ()):
            self._rules.setdefault(rule["object"], []).append(rule)
        self._rewritten = {  # the fields these rules rewrite, or check when they cannot
            f"{rule['object']}/{rule[key]}"
            for rule in profile.get("rules", ())
            for kind, key in (("email_from_name", "email"), ("full_name", "full"))
            if rule["rule"] == kind
        }
        text = profile.get("text") or {}
        words = text.get("words") or []
        self._words = [w for w, _ in words]
        self._word_cum = _cumulative([n for _, n in words])
        self._next = {
            a: ([b for b, _ in nexts], _cumulative([n for _, n in nexts]))
            for a, nexts in (text.get("next") or {}).items()
        }
        self._stream: list[str] | None = None
        self._corpora: dict[str, tuple[str, tuple[int, ...]]] = {}
        self._coupling = 0.0
        self._record_quantile = 0.5
        self._poolable: dict[str, Callable[[random.Random], Any]] = {}
        self._pools_made: dict[str, tuple[Any, ...]] = {}  # () where values are made per record
        self._pooled_bytes = 0.0
        self._record_rng = random.Random()
        self._root = self._compile(profile["root"], "")
        for path in list(self._poolable):  # now, before the writers fork their workers
            self._pool(path)
        self._coupling = self._calibrate()

    def _calibrate(self) -> float:
        """The size coupling c that gives the sample's size std. Lengths are coupled in pairs with
        probability c**2, so the size variance is V(0) + c**2 * (V(1) - V(0)): two trial runs on
        the same (negative, never generated) indices give c."""
        want = (self.profile.get("bytes_per_record") or {}).get("std")
        if not want:
            return 0.0

        def variance(coupling: float) -> float:
            self._coupling = coupling
            sizes = [len(self.build_json(-1 - i)) for i in range(CALIBRATION_RECORDS)]
            mean = sum(sizes) / len(sizes)
            return sum((s - mean) ** 2 for s in sizes) / len(sizes)

        loose, tight = variance(0.0), variance(1.0)
        if tight <= loose:
            return 0.0
        return round(min(1.0, max(0.0, (want**2 - loose) / (tight - loose)) ** 0.5), 3)

    # -- compiling a node into a closure: rng -> value --------------------------------------
    def _compile(self, node: dict, path: str) -> Callable[[random.Random], Any]:
        types = node.get("types") or {"null": 1.0}
        makers = []
        for name in types:
            makers.append(self._maker(name, node, path))
        cumulative = _cumulative(list(types.values()))
        if len(makers) == 1:
            return makers[0]
        if len(makers) == 2:  # string or null, mostly: one comparison
            first, second, share = *makers, cumulative[0]
            return lambda rng: first(rng) if rng.random() < share else second(rng)

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
            return self._string(node.get("string") or {"kind": "string"}, path)
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
            if sampler.low >= _INT_MIN and sampler.high <= _INT_MAX:
                return lambda rng: round(sampler.draw(rng))
            # a range past 64 bits (a float such as 1e300 among integers): what JSON can hold
            return lambda rng: min(max(round(sampler.draw(rng)), _INT_MIN), _INT_MAX)
        decimals = spec.get("decimals", 2)
        return lambda rng: round(sampler.draw(rng), decimals)

    def _string(self, spec: dict, path: str) -> Callable[[random.Random], str]:
        if "values" in spec:
            values = [v for v, _ in spec["values"]]
            cumulative = _cumulative([n for _, n in spec["values"]])
            other = spec.get("other", 0.0)
            if not other:  # only the kept values: the kind's Faker pool is not even made
                return lambda rng: values[bisect.bisect_right(cumulative, rng.random())]
            base = self._kind(spec, path)
            return lambda rng: (
                base(rng)
                if rng.random() < other
                else values[bisect.bisect_right(cumulative, rng.random())]
            )
        return self._kind(spec, path)

    def _kind(self, spec: dict, path: str) -> Callable[[random.Random], str]:
        kind = spec.get("kind", "string")
        # a value a rule rewrites (and so checks against the filter itself) is drawn unchecked
        checked = self._unblocked if path not in self._rewritten else _as_drawn
        length = Sampler(spec.get("length") or {"counts": {"8": 1}})
        if kind == "person_name":
            firsts, lasts = self._pools["first_name"], self._pools["last_name"]

            def full_name(rng: random.Random) -> str:
                first = firsts[int(rng.random() * len(firsts))]
                return f"{first} {lasts[int(rng.random() * len(lasts))]}"

            return checked(full_name)
        if kind in _FAKER:
            if kind == "email" and spec.get("domains"):
                domains = [d for d, _ in spec["domains"]]
                users = self._pools["first_name"]
                locals_ = tuple(address.split("@")[0] for address in self._pools["email"])

                def email(rng: random.Random) -> str:
                    local = locals_[int(rng.random() * len(locals_))]
                    if rng.random() < 0.5:
                        local = (
                            learned.normalize(users[int(rng.random() * len(users))]) + local[-2:]
                        )
                    return f"{local}@{domains[int(rng.random() * len(domains))]}"

                return checked(email)
            pool = self._pools[kind]  # made now, before the writers fork their workers
            return lambda rng: pool[int(rng.random() * len(pool))]
        if kind in ("date", "datetime", "year_month"):
            moments = Sampler(spec)
            form = spec.get("format") or {"kind": kind}
            return lambda rng: format_moment(moments.draw(rng), form)
        if kind == "uuid":
            return lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if kind == "id":
            prefix = spec.get("prefix", "")
            shapes = [_shape(s) for s, _ in spec.get("shapes") or [["99999999", 1]]]
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
            return self._text(spec)
        if kind == "words":
            counts = _length_table(spec.get("words") or {"counts": {"2": 1}}, least=1)
            return lambda rng: self._phrase(rng, counts[int(rng.random() * LENGTH_TABLE)], length)
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
        lengths = _length_table(node.get("length") or {"counts": {"0": 1}})
        items = node.get("items") or {"types": {"null": 1}}
        item_path = f"{path}/*"
        item = self._compile(items, item_path)
        pooled = not _holds_kinds(items, PII_KINDS)
        if pooled:
            self._poolable[item_path] = item
        unique = node.get("unique", False)
        pools = self._pools_made

        def make(rng: random.Random) -> list:
            n = lengths[int(self._size_quantile(rng) * LENGTH_TABLE)]
            next_item = item
            pool = (pools.get(item_path) or self._pool(item_path)) if pooled else ()
            if pool:
                own, coupling, draw = self._own_run(), self._coupling, rng.random
                if not unique:  # lists are most of a record's draws: one expression per item
                    return [
                        pool[
                            own + int(draw() * POOL)
                            if draw() < coupling
                            else FREE + int(draw() * FREE_POOL)
                        ]
                        for _ in range(n)
                    ]

                def next_item(rng: random.Random) -> Any:
                    if draw() < coupling:
                        return pool[own + int(draw() * POOL)]
                    return pool[FREE + int(draw() * FREE_POOL)]

            elif not unique:
                return [item(rng) for _ in range(n)]
            out, seen = [], set()
            for _ in range(n * 4):
                value = next_item(rng)
                key = value if isinstance(value, (str, int, float)) else id(value)
                if key not in seen:
                    seen.add(key)
                    out.append(value)
                    if len(out) == n:
                        break
            return out

        return make

    def _object(self, node: dict, path: str) -> Callable[[random.Random], dict]:
        """Lists and objects that hold no identifying kind and no rule touches are drawn from
        pools; the rest is made per record."""
        rules = self._rules.get(path, ())
        touched = {str(rule.get(key)).split("/")[0] for rule in rules for key in _RULE_KEYS}
        fields = []
        for key, child in (node.get("fields") or {}).items():
            child_path = f"{path}/{key}"
            make = self._compile(child, child_path)
            pooled = key not in touched and _container(child) and not _holds_kinds(child, PII_KINDS)
            if pooled:  # no rule reads it: kept as its JSON, which records then copy
                self._poolable[child_path] = lambda rng, make=make: _fragment(make(rng))
            fields.append((key, child.get("presence", 1.0), make, child_path if pooled else None))
        applied = [self._rule(rule) for rule in rules]
        pools = self._pools_made

        def make(rng: random.Random) -> dict:
            out = {}
            draw, coupling = rng.random, self._coupling  # the pool draw inlined: most fields
            own = self._own_run()
            for key, presence, child, path in fields:
                if presence < 1.0 and draw() >= presence:
                    continue
                if path is None:  # made per record: holds ids, or a rule reads it
                    out[key] = child(rng)
                    continue
                pool = pools.get(path) or self._pool(path)
                out[key] = (
                    pool[
                        own + int(draw() * POOL)
                        if draw() < coupling
                        else FREE + int(draw() * FREE_POOL)
                    ]
                    if pool
                    else child(rng)  # a pool too big to make
                )
            for rule in applied:
                rule(out, rng)
            return out

        return make

    # -- pools: parts made once per seed, drawn per record ----------------------------------
    def _own_run(self) -> int:
        """Where the pool values sized like this record start: its size octile's run."""
        return int(self._record_quantile * BUCKETS) * POOL

    def _pool(self, path: str) -> tuple[Any, ...]:
        """The pool at path, made once: the b-th run's values are sized wholly by quantiles in
        the b-th octile (a coupled draw), the last FREE_POOL values' sizes drawn freely. Empty
        (values made per record) when it would pass POOL_BYTES or the pools' TOTAL_POOL_BYTES,
        as judged from its first values."""
        pool = self._pools_made.get(path)
        if pool is not None:
            return pool
        make = self._poolable[path]
        rng = random.Random(zlib.crc32(f"{self.seed}:pool:{path}".encode()))
        outer = self._record_quantile, self._coupling  # a pool may be made inside a record
        made = []
        self._coupling = 1.0
        for i in range(FREE):
            self._record_quantile = (i // POOL + rng.random()) / BUCKETS
            made.append(make(rng))
            if i + 1 == _SIZE_PROBE:
                size = sum(len(orjson.dumps(v)) for v in made) / _SIZE_PROBE * (FREE + FREE_POOL)
                if size > POOL_BYTES or self._pooled_bytes + size > TOTAL_POOL_BYTES:
                    self._record_quantile, self._coupling = outer
                    self._pools_made[path] = ()
                    return ()
                self._pooled_bytes += size
        self._coupling = 0.0
        made.extend(make(rng) for _ in range(FREE_POOL))
        self._record_quantile, self._coupling = outer
        pool = self._pools_made[path] = tuple(made)
        return pool

    # -- cross-field rules ------------------------------------------------------------------
    def _rule(self, rule: dict) -> Callable[[dict, random.Random], None]:
        kind = rule["rule"]
        if kind == "date_order":
            gap = Sampler(rule["gap"])
            before, after = rule["before"], rule["after"]

            def order(out: dict, rng: random.Random) -> None:
                a, b = out.get(before), out.get(after)
                if isinstance(a, str) and isinstance(b, str):
                    start = _moment(a)
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
                    return
                # only lists whose items all have the date: the keys are all found before any
                # item moves, so a list with one item without it is left as made
                with contextlib.suppress(KeyError, TypeError):
                    items.sort(key=lambda v: _moment(v[by]) or 0.0, reverse=reverse)

            return sort
        if kind == "email_from_name":
            share, style, email = rule["share"], rule["style"], rule["email"]
            names = rule.get("names", "plain")  # profiles learned before it: plain
            if style not in learned._LOCAL_PARTS or names not in learned._NAME_FORMS:
                raise ProfileError(
                    f"rule email_from_name at {rule.get('object')!r}: style {style!r} or names "
                    f"{names!r} is none that `harness learn` writes"
                )
            keys = {"first_name": rule.get("first"), "last_name": rule.get("last")}
            keys["person_name"] = rule.get("full")

            def derive(out: dict, rng: random.Random) -> None:
                address = learned._get(out, email)
                if not isinstance(address, str) or "@" not in address:
                    return
                local, _, domain = address.rpartition("@")
                if rng.random() < share:
                    first, last = learned._names(out, keys)
                    if first and last:
                        derived = learned._local_part(style, first, last, names)
                        candidate = f"{derived}@{domain}"
                        for _ in range(5):
                            if not self.blocked(candidate):
                                _put(out, email, candidate)
                                return
                            # else a number after the name, as people do
                            candidate = f"{derived}{1 + int(rng.random() * 99)}@{domain}"
                for _ in range(16):  # the address stays: drawn unchecked, it is checked here
                    if not self.blocked(address):
                        break
                    address = f"{local}{_letters(rng, 3)}@{domain}"
                _put(out, email, address)

            return derive
        if kind == "full_name":
            share, first, last, full = (rule[x] for x in ("share", "first", "last", "full"))

            def join(out: dict, rng: random.Random) -> None:
                whole, a, b = out.get(full), out.get(first), out.get(last)
                if not isinstance(whole, str):
                    return
                paired = isinstance(a, str) and isinstance(b, str) and rng.random() < share
                if paired:
                    whole = f"{a} {b}"
                firsts, lasts = self._pools["first_name"], self._pools["last_name"]
                for _ in range(16):  # drawn unchecked, or a pair that may be a sample's person
                    if not self.blocked(whole):
                        break
                    a = firsts[int(rng.random() * len(firsts))]
                    b = lasts[int(rng.random() * len(lasts))]
                    whole = f"{a} {b}"
                if paired:
                    out[first], out[last] = a, b
                out[full] = whole

            return join
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

    # -- text ----------------------------------------------------------------------------
    def _word(self, rng: random.Random, previous: str | None) -> str:
        nexts = self._next.get(previous) if previous else None
        if nexts and rng.random() < 0.85:
            words, cumulative = nexts
            return words[_choose(cumulative, rng)]
        return self._words[_choose(self._word_cum, rng)]

    def _word_stream(self) -> list[str]:
        """STREAM_WORDS words of one Markov walk, drawn once per seed: sentences and phrases are
        slices of it, so a text costs a slice, not a draw per word."""
        if self._stream is None:
            rng = random.Random(zlib.crc32(f"{self.seed}:words".encode()))
            stream, previous = [], None
            for _ in range(STREAM_WORDS):
                previous = self._word(rng, previous)
                stream.append(previous)
            self._stream = stream
        return self._stream

    def _corpus(self, spec: dict, longest: int) -> tuple[str, tuple[int, ...]]:
        """A text field's corpus: CORPUS_SENTENCES sentences of the field's sentence lengths,
        joined, and where each word starts; drawn once per (seed, sentence lengths)."""
        sentences = spec.get("sentence_words") or {"counts": {"10": 1}}
        key = orjson.dumps(sentences, option=orjson.OPT_SORT_KEYS).decode()
        corpus = self._corpora.get(key)
        if corpus is None:
            rng = random.Random(zlib.crc32(f"{self.seed}:sentences:{key}".encode()))
            stream = self._word_stream()
            counts = _length_table(sentences, least=1, most=80)
            parts, size = [], 0
            while len(parts) < CORPUS_SENTENCES or size < 2 * longest:
                n = counts[int(rng.random() * LENGTH_TABLE)]
                at = int(rng.random() * (len(stream) - n))
                text = " ".join(stream[at : at + n])
                parts.append(text[:1].upper() + text[1:] + ".")
                size += len(parts[-1]) + 1
            joined = " ".join(parts)
            starts = (0, *(space.end() for space in re.finditer(" ", joined)))
            corpus = self._corpora[key] = (joined + " " + joined[: longest + 2], starts)
        return corpus

    def _text(self, spec: dict) -> Callable[[random.Random], str]:
        """Text of the field's lengths: a slice of its corpus from a word, capitalised, cut at
        a word and ended with a full stop."""
        lengths = _length_table(spec.get("length") or {"counts": {"8": 1}})
        if not self._words:
            return lambda rng: _letters(rng, lengths[int(rng.random() * LENGTH_TABLE)])
        corpus, starts = self._corpus(spec, max(lengths))
        size_quantile = self._size_quantile

        def text(rng: random.Random) -> str:
            target = lengths[int(size_quantile(rng) * LENGTH_TABLE)]
            if target <= 0:
                return ""
            start = starts[int(rng.random() * len(starts))]
            end = start + target
            out = corpus[start:end]
            if out[-1] != "." and corpus[end] != " ":
                cut = out.rfind(" ")
                out = out[:cut] if cut > 0 else out
            out = out[0].upper() + out[1:]
            return out if out[-1] == "." else out.rstrip(",;") + "."

        return text

    def _phrase(self, rng: random.Random, n: int, length: Sampler) -> str:
        if not self._words:
            return _letters(rng, max(1, round(length.draw(rng))))
        stream = self._word_stream()
        at = int(rng.random() * max(1, len(stream) - n))
        return " ".join(stream[at : at + n])

    # -- records ----------------------------------------------------------------------------
    def rng(self, i: int) -> random.Random:
        """Record i's generator, as build_json seeds it (a calibration record's for i < 0)."""
        return random.Random(self._record_seed(i) if i >= 0 else f"calibrate:{self.seed}:{i}")

    def _record_seed(self, i: int) -> int:
        return (self.seed * _MIX + i) & (2**128 - 1)

    def build_json(self, i: int) -> bytes:
        if i >= 0:  # one generator seeded again per record: a new one costs 20% more
            rng = self._record_rng
            _seed(rng, self._record_seed(i))
            rng.gauss_next = None  # as Random.seed does: nothing carries over from record i - 1
        else:
            rng = self.rng(i)
        self._record_quantile = rng.random()
        return orjson.dumps(self._root(rng))  # pooled lists and objects are orjson Fragments

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


def _pii_check(flt: dict) -> Callable[[str], bool]:
    """A profile's `pii_filter` as one call: value -> whether its bit is set."""
    bits = int(flt.get("bits", 0))
    if not bits:
        return lambda value: False
    bit_of = learned.pii_hasher(bytes.fromhex(flt.get("salt", "")), bits)
    bitmap = base64.b64decode(flt.get("bitmap", ""))

    def blocked(value: str) -> bool:
        bit = bit_of(value)
        return bool(bitmap[bit >> 3] >> (bit & 7) & 1)

    return blocked


def _cumulative(weights: list[float]) -> list[float]:
    """Cumulative shares ending at exactly 1.0, for `_choose`."""
    total = sum(weights)
    if not weights or total <= 0:
        return [1.0]
    out, running = [], 0.0
    for weight in weights:
        running += weight
        out.append(running / total)
    out[-1] = 1.0
    return out


def _choose(cumulative: list[float], rng: random.Random) -> int:
    return bisect.bisect_right(cumulative, rng.random())


def _fragment(value: Any) -> orjson.Fragment:
    """value's JSON, pre-encoded, in a bytes object of its own size (orjson's output keeps
    spare capacity: 4 KB for a 200-byte value, x 6,144 values a pool)."""
    return orjson.Fragment(bytes(memoryview(orjson.dumps(value))))


def _length_table(dist: dict, least: int = 0, most: int | None = None) -> tuple[int, ...]:
    """A length distribution as LENGTH_TABLE rounded quantiles: `table[int(u * LENGTH_TABLE)]`
    is the length at quantile u, one index instead of an interpolation per draw."""
    high = most if most is not None else 1 << 62
    if "counts" in dist:  # each value fills its share of the slots
        total = sum(dist["counts"].values()) or 1
        table: list[int] = []
        running = 0
        for value, n in dist["counts"].items():
            running += n
            slots = round(running / total * LENGTH_TABLE) - len(table)
            table += [min(high, max(least, round(float(value))))] * slots
        return tuple(table)
    sampler = Sampler(dist)
    return tuple(
        min(high, max(least, round(sampler.at((j + 0.5) / LENGTH_TABLE))))
        for j in range(LENGTH_TABLE)
    )


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=n))


_CLASSES = {"9": string.digits, "A": string.ascii_uppercase, "a": string.ascii_lowercase}
_CHUNK = 3  # letters are drawn 3 at a time from a table of every 3-letter string


def _shape(shape: str) -> tuple[tuple[int, Any, int], ...]:
    """An id shape ("AA-9999") as pieces to fill: (0, literal text, 0), (1, "%0nd", 10**n) for
    a run of n <= 15 digits (one number: a double holds 15), (2, table, its size) for up to 3
    letters (a table of every such string)."""
    runs: list[list[Any]] = []  # [class letters or literal text, length or 0]
    for c in shape:
        letters = _CLASSES.get(c)
        if runs and letters is not None and runs[-1][0] == letters and runs[-1][1]:
            runs[-1][1] += 1
        elif letters is not None:
            runs.append([letters, 1])
        elif runs and not runs[-1][1]:
            runs[-1][0] += c
        else:
            runs.append([c, 0])
    pieces: list[tuple[int, Any, int]] = []
    for letters, n in runs:
        if not n:
            pieces.append((0, letters, 0))
        step = 15 if letters == string.digits else _CHUNK
        while n > 0:
            size = min(n, step)
            if letters == string.digits:
                pieces.append((1, f"%0{size}d", 10**size))
            else:
                table = _letter_table(letters, size)
                pieces.append((2, table, len(table)))
            n -= size
    return tuple(pieces)


def _fill(pieces: tuple[tuple[int, Any, int], ...], rng: random.Random) -> str:
    """An id of a shape's pieces (see `_shape`): one draw a piece."""
    draw = rng.random
    return "".join(
        [
            text
            if kind == 0
            else text % int(draw() * size)
            if kind == 1
            else text[int(draw() * size)]
            for kind, text, size in pieces
        ]
    )


@functools.lru_cache(maxsize=16)
def _letter_table(letters: str, n: int) -> tuple[str, ...]:
    return tuple("".join(t) for t in itertools.product(letters, repeat=n))


def _container(node: dict) -> bool:
    """True when a node may be an object or a list: what is worth pooling (a scalar costs about
    as much to make as to draw, and made per record it keeps records apart)."""
    return bool({"object", "array"} & set(node.get("types") or ()))


def _as_drawn(make: Callable[[random.Random], str]) -> Callable[[random.Random], str]:
    return make


def _put(out: dict, key: str, value: Any) -> None:
    """out[key] = value, where key may be "child/field" (as `profile._get` reads it)."""
    head, _, tail = key.partition("/")
    if key not in out and tail and isinstance(out.get(head), dict):
        out[head][tail] = value
    else:
        out[key] = value


def _holds_kinds(node: dict, kinds: frozenset[str]) -> bool:
    """True when a profile node or any node below it is a string of one of kinds."""
    if (node.get("string") or {}).get("kind") in kinds:
        return True
    below = [*(node.get("fields") or {}).values(), *([node["items"]] if "items" in node else [])]
    return any(_holds_kinds(child, kinds) for child in below)


_moment = functools.lru_cache(maxsize=65_536)(learned.parse_moment)  # dates repeat: months, days


@functools.lru_cache(maxsize=64)
def _form_of(value: str) -> dict:
    """The format of a date already written (cached: one field has one format)."""
    return learned.moment_format(value)


def format_moment(seconds: float, form: dict) -> str:
    """A Unix time written as the profile's format says (date, year-month or datetime)."""
    seconds = max(0.0, seconds)
    whole = int(seconds)
    day, into_day = divmod(whole, 86_400)
    date = _date_text(day)
    kind = form.get("kind", "date")
    if kind == "date":
        return date
    if kind == "year_month":
        return date[:7]
    hours, into_hour = divmod(into_day, 3600)
    text = f"{date}{form.get('sep', 'T')}{hours:02d}:{into_hour // 60:02d}"
    if form.get("seconds", True):
        text += f":{into_hour % 60:02d}"
        if fraction := form.get("fraction"):
            text += "." + f"{int((seconds - whole) * 1_000_000):06d}"[:fraction].ljust(
                fraction, "0"
            )
    return text + form.get("zone", "")


@functools.lru_cache(maxsize=65_536)
def _date_text(day: int) -> str:
    """YYYY-MM-DD of a day since the epoch (cached: a dataset spans a few thousand days)."""
    return datetime.fromtimestamp(day * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")


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
