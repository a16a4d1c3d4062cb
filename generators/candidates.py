"""Candidate profiles: record i is a pure function of (seed, i, locale, as_of).

Internally consistent: roles are ordered and do not overlap, years of experience is the sum of the
roles, education ends before the career starts, skill years never exceed the career.

A record is assembled as JSON text from pieces escaped once, when the tables are built (names,
companies, role texts, templates), so building one is mostly picking and joining strings.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
import string
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

import orjson

from generators import _vocab as v
from generators._pools import Pools, pools

DEFAULT_AS_OF = "2026-01-01T00:00:00Z"
IN_FAMILY_SHARE = 0.7  # share of applicants from the job's own family; the rest apply across
_MIX = 0x9E3779B97F4A7C15
FAMILY_STREAM = 100


def parse_as_of(as_of: str) -> float:
    """Unix time of an ISO 8601 date or datetime (UTC when no zone is given)."""
    moment = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def record_rng(seed: int, i: int, stream: int = 0) -> random.Random:
    """A seeded RNG for the tables and the job (records draw from the cheaper `_Draws`)."""
    return random.Random((seed * _MIX + i * 2 + stream * 0x5851F42D4C957F2D) & (2**128 - 1))


# A record's randomness: 16-bit draws from SHAKE-128 over (seed, i // 50), counter-based like
# Philox: seeding a Mersenne Twister per record costs ~4.7 us, this ~1 us, and `draw() % n` is
# cheaper than int(random() * n). A record takes at most 83 draws (5 roles, 2 degrees, 3
# certificates); a choice among n <= 1000 by modulo is uniform to within 1.5%.
DRAWS_PER_RECORD = 128
_BLOCK = 50  # records whose draws come from one SHAKE-128 output (a divisor of CHUNK_SIZE)
_SWAP_BYTES = sys.byteorder == "big"  # draws are little-endian on every machine


class _Draws:
    """The draws of record i as a function of (seed, i) alone, so that any chunking or worker
    count gives the same bytes; the last block is kept, as records are built in order."""

    def __init__(self, seed: int) -> None:
        self._key = hashlib.shake_128(f"generators.candidates:{seed}:".encode())
        self._block = -1
        self._draws = array("H")

    def __call__(self, i: int) -> Callable[[], int]:
        """Record i's draws (0..65535 each), one per call."""
        block, k = divmod(i, _BLOCK)
        if block != self._block:
            state = self._key.copy()
            state.update(block.to_bytes(8, "little"))
            draws = array("H", state.digest(2 * DRAWS_PER_RECORD * _BLOCK))
            if _SWAP_BYTES:
                draws.byteswap()
            self._block, self._draws = block, draws
        return iter(self._draws[k * DRAWS_PER_RECORD : (k + 1) * DRAWS_PER_RECORD]).__next__


def _odds(share: float) -> int:
    """The draw below which an event of probability `share` happens."""
    return round(share * 65536)


def batch_family(seed: int) -> str:
    """The job family of a batch (its job posting and most of its applicants)."""
    return v.FAMILY_NAMES[record_rng(seed, -1, 1).randrange(len(v.FAMILY_NAMES))]


def iter_candidates(
    n: int,
    seed: int = 0,
    locale: str = "en_US",
    start: int = 0,
    as_of: str = DEFAULT_AS_OF,
) -> Iterator[dict[str, Any]]:
    """Candidates start .. start+n-1 of the batch defined by (seed, locale, as_of)."""
    builder = CandidateBuilder(seed, locale, as_of)
    for i in range(start, start + n):
        yield builder.build(i)


def candidate(i: int, seed: int = 0, locale: str = "en_US", as_of: str = DEFAULT_AS_OF) -> dict:
    """Candidate i of the batch defined by (seed, locale, as_of)."""
    return CandidateBuilder(seed, locale, as_of).build(i)


TEXT_POOL_SIZE = 1000
SKILL_POOL_SIZE = 24
SKILL_YEARS_CAP = 20
EDUCATION_POOL_SIZE = 300
LANGUAGE_POOL_SIZE = 200
_MONTH_SPAN = 12 * 90


def _esc(text: str) -> str:
    """`text` as it appears inside a JSON string: orjson's escaping, without the quotes.

    Escaping is per character, so a string joined from escaped pieces is the escaped string.
    """
    return orjson.dumps(text)[1:-1].decode()


def _json(value: Any) -> str:
    """`value` as compact JSON text (what orjson.dumps writes)."""
    return orjson.dumps(value).decode()


class _RoleText(NamedTuple):
    """Pre-rendered text of one role: the end of its JSON object, and its block in the resume."""

    json_tail: str  # "description":...,"highlights":[...],"skills_used":[...]}
    resume_block: str  # escaped


class _SkillSet(NamedTuple):
    """A pre-rendered skills list whose per-skill years never exceed its career-years bucket."""

    top3: tuple[str, str, str]  # escaped
    json: str
    resume_line: str  # escaped


class _Education(NamedTuple):
    """A degree: its JSON object up to start_year, its resume line up to the years, its length."""

    json_head: str
    resume_head: str
    length: int


class _Certification(NamedTuple):
    """A certificate: its JSON object up to year, resume line up to year, credential id prefix."""

    json_head: str
    resume_head: str
    credential_prefix: str


class _Family(NamedTuple):
    """The tables of one job family, every string already JSON-escaped."""

    name: str
    titles: tuple[tuple[str, ...], ...]  # [years worked before the role][title]: with seniority
    title_bases: tuple[str, ...]
    title_lowers: tuple[str, ...]
    objects: tuple[str, ...]
    objects_generic: tuple[str, ...]
    metrics: tuple[str, ...]
    role_texts: tuple[_RoleText, ...]
    skill_sets: tuple[tuple[_SkillSet, ...], ...]  # [career years, capped][set]
    educations: tuple[_Education, ...]
    cert_combos: tuple[tuple[tuple[_Certification, ...], ...], ...]  # [k][k-subset]
    screening: tuple[str, ...]  # JSON arrays


class _Tables:
    """Everything records pick from for one (seed, locale): Faker pools plus pre-rendered text,
    all escaped for JSON once here.

    Building them costs ~0.4 s once (Faker ~0.2 s); a record then picks and joins strings
    instead of formatting and serialising, many times cheaper.
    """

    def __init__(self, seed: int, locale: str) -> None:
        p: Pools = pools(seed, locale)
        self.country = _esc(p.country)
        self.us_phones = p.country_code == "US"
        self.currency = _esc(p.currency)
        self.salary_scale = p.salary_scale
        self.first_names = tuple(map(_esc, p.first_names))
        self.last_names = tuple(map(_esc, p.last_names))
        self.first_upper = tuple(_esc(name.upper()) for name in p.first_names)
        self.last_upper = tuple(_esc(name.upper()) for name in p.last_names)
        self.first_slugs = p.first_slugs
        self.last_slugs = p.last_slugs
        self.cities = tuple(map(_esc, p.cities))
        self.locations = tuple(_esc(f"{city}, {p.country}") for city in p.cities)
        self.regions = tuple(map(_esc, p.regions))
        self.companies = tuple(map(_esc, p.companies))
        self.phones = tuple(map(_esc, p.phones))
        self.streets = tuple(map(_esc, p.streets))
        self.families = tuple(_family(seed, name, p) for name in v.FAMILY_NAMES)
        self.languages = _language_sets(seed)


@functools.lru_cache(maxsize=8)
def _tables(seed: int, locale: str) -> _Tables:
    return _Tables(seed, locale)


def _table_rng(seed: int, table: int, family_name: str = "") -> random.Random:
    family_index = v.FAMILY_NAMES.index(family_name) + 1 if family_name else 0
    return record_rng(seed, -table, FAMILY_STREAM + family_index)


def _family(seed: int, name: str, p: Pools) -> _Family:
    family = v.FAMILIES[name]
    titles = tuple(map(_esc, family["titles"]))
    with_seniority = {
        seniority: tuple(f"{_esc(seniority)} {title}" if seniority else title for title in titles)
        for seniority in set(_SENIORITY_BY_YEAR)
    }
    objects = tuple(map(_esc, family["objects"]))
    return _Family(
        name=name,
        titles=tuple(with_seniority[seniority] for seniority in _SENIORITY_BY_YEAR),
        title_bases=titles,
        title_lowers=tuple(_esc(title.lower()) for title in family["titles"]),
        objects=objects,
        objects_generic=tuple(_esc(o.removeprefix("the ")) for o in family["objects"]),
        metrics=tuple(map(_esc, family["metrics"])),
        role_texts=_role_texts(seed, name),
        skill_sets=tuple(_skill_sets(seed, name, y) for y in range(SKILL_YEARS_CAP + 1)),
        educations=_educations(seed, name, p),
        cert_combos=_cert_combos(family["certs"]),
        screening=_screening_answers(seed, name),
    )


def _picker(rng: random.Random) -> tuple[Callable[[Sequence[Any]], Any], Callable[[int, int], int]]:
    """choice and randint for building tables, ~5x cheaper than random's: the tables take
    ~300,000 draws, all before the first record."""
    rnd = rng.random

    def pick(seq: Sequence[Any]) -> Any:
        return seq[int(rnd() * len(seq))]

    def between(low: int, high: int) -> int:
        return low + int(rnd() * (high - low + 1))

    return pick, between


def _role_texts(seed: int, family_name: str) -> tuple[_RoleText, ...]:
    family = v.FAMILIES[family_name]
    pick, between = _picker(_table_rng(seed, 3, family_name))
    skills_, objects, metrics = family["skills"], family["objects"], family["metrics"]
    texts = []
    for _ in range(TEXT_POOL_SIZE):
        skills = [pick(skills_), pick(skills_)]
        object_ = pick(objects)
        description = " ".join(
            pick(v.DUTIES).format(
                object=object_,
                partner=pick(v.PARTNERS),
                metric=pick(metrics),
                team=between(3, 22),
                skill=skills[0],
                skill2=skills[1],
            )
            for _ in range(2)
        )
        highlights = [
            pick(v.HIGHLIGHTS).format(
                metric=pick(metrics),
                pct=between(5, 64),
                object=pick(objects),
                team=between(2, 13),
                months=between(2, 17),
                users=f"{between(1, 900)}K",
                hours=between(10, 199),
            )
            for _ in range(between(2, 4))
        ]
        texts.append(
            _RoleText(
                f'"description":{_json(description)},"highlights":{_json(highlights)},'
                f'"skills_used":{_json(skills)}}}',
                _esc("\n".join([description, *(f"* {h}" for h in highlights)])),
            )
        )
    return tuple(texts)


def _skill_sets(seed: int, family_name: str, years: int) -> tuple[_SkillSet, ...]:
    skills_ = v.FAMILIES[family_name]["skills"]
    rng = _table_rng(seed, 100 + years, family_name)
    rnd = rng.random
    _, between = _picker(rng)
    sets = []
    for _ in range(SKILL_POOL_SIZE):
        names = rng.sample(skills_, min(between(8, 18), len(skills_)))
        skills = []
        for name in names:
            # a career under a year gets skills of a few months, never more than the career
            skill_years = round(min(years, 0.5 + rnd() * years), 1) if years else 0.1
            level = _SKILL_LEVEL_BY_TENTH[round(skill_years * 10)]
            skills.append({"name": name, "level": level, "years": skill_years})
        sets.append(
            _SkillSet(
                (_esc(names[0]), _esc(names[1]), _esc(names[2])),
                _json(skills),
                _esc(", ".join(f"{s['name']} ({s['level']})" for s in skills)),
            )
        )
    return tuple(sets)


def _educations(seed: int, family_name: str, p: Pools) -> tuple[_Education, ...]:
    pick, _ = _picker(_table_rng(seed, 4, family_name))
    educations = []
    for _ in range(EDUCATION_POOL_SIZE):
        degree, length = pick(v.DEGREES)
        institution = pick(v.UNIVERSITY_FORMS).format(
            city=pick(p.cities), last=pick(p.last_names), region=pick(p.regions)
        )
        field = pick(v.FAMILIES[family_name]["fields"])
        head = {"institution": institution, "degree": degree, "field": field}
        educations.append(
            _Education(
                f'{_json(head)[:-1]},"start_year":',
                _esc(f"{degree} in {field}, {institution} ("),
                length,
            )
        )
    return tuple(educations)


def _cert_combos(
    certs: tuple[tuple[str, str], ...],
) -> tuple[tuple[tuple[_Certification, ...], ...], ...]:
    """For k = 0..3, every k-subset of the family's certifications (a record picks k, then one)."""
    rendered = tuple(
        _Certification(
            f'{_json({"name": name, "issuer": issuer})[:-1]},"year":',
            _esc(f"\n{name}, {issuer} ("),
            _esc(f"{issuer[:3].upper()}-"),
        )
        for name, issuer in certs
    )
    return tuple(tuple(itertools.combinations(rendered, k)) for k in range(4))


def _language_sets(seed: int) -> tuple[tuple[str, str], ...]:
    """(JSON array, escaped resume line) of spoken languages."""
    rng = _table_rng(seed, 5)
    sets = []
    for _ in range(LANGUAGE_POOL_SIZE):
        languages = [{"language": "English", "proficiency": rng.choice(v.PROFICIENCY[2:])}]
        for language in rng.sample(v.LANGUAGES[1:], rng.randint(0, 2)):
            languages.append({"language": language, "proficiency": rng.choice(v.PROFICIENCY)})
        line = ", ".join(f"{x['language']} ({x['proficiency']})" for x in languages)
        sets.append((_json(languages), _esc(line)))
    return tuple(sets)


def _screening_answers(seed: int, family_name: str) -> tuple[str, ...]:
    family = v.FAMILIES[family_name]
    rng = _table_rng(seed, 6, family_name)
    pick, between = _picker(rng)
    sets = []
    for _ in range(TEXT_POOL_SIZE // 4):
        answers = [
            {
                "question": question,
                "answer": pick(templates).format(
                    object=pick(family["objects"]),
                    skill=pick(family["skills"]),
                    metric=pick(family["metrics"]),
                    pct=between(5, 60),
                ),
            }
            for question, templates in rng.sample(v.SCREENING, 2)
        ]
        sets.append(_json(answers))
    return tuple(sets)


def _band(years: float, bands: tuple[tuple[float, str], ...]) -> str:
    """The name of the highest band whose threshold `years` reaches (bands start at 0)."""
    label = bands[0][1]
    for threshold, name in bands:
        if years >= threshold:
            label = name
    return label


def _career_years_quantiles(count: int, shape_years: float = 3.2) -> tuple[float, ...]:
    """Quantiles of 0.5 + Gamma(2, shape) years (mean ~6.9, long tail), capped at 35."""

    def cdf(x: float) -> float:
        z = x / shape_years
        return 1.0 - math.exp(-z) * (1.0 + z)

    quantiles = []
    for k in range(count):
        target = (k + 0.5) / count
        low, high = 0.0, 200.0
        for _ in range(50):
            middle = (low + high) / 2
            low, high = (middle, high) if cdf(middle) < target else (low, middle)
        quantiles.append(min(35.0, 0.5 + low))
    return tuple(quantiles)


# Summary: one of the opener x middle x middle x closer combinations, escaped for JSON, each
# compiled into a function of a tuple of field values.
_SUMMARY_FIELDS = (
    "seniority",
    "seniority_lower",
    "title",
    "title_lower",
    "years",
    "skill",
    "skill2",
    "skill3",
    "company",
    "object",
    "object_generic",
    "metric",
    "pct",
    "partner",
    "remote",
)


def _template_function(template: str, fields: tuple[str, ...]) -> Callable[[tuple], str]:
    """`template` (str.format syntax, named fields) as a function of a tuple of str values in
    `fields` order: a generated join of its pieces, ~3x faster than str.format per call."""
    pieces = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if literal:
            pieces.append(repr(literal))
        if name is not None:
            if spec or conversion:
                raise ValueError(f"{template!r}: only plain {{name}} fields are supported")
            pieces.append(f"values[{fields.index(name)}]")
    return eval(f"lambda values: ''.join(({', '.join(pieces)},))")  # code built from the pieces


_SUMMARIES = tuple(
    _template_function(_esc(" ".join(parts)), _SUMMARY_FIELDS)
    for parts in itertools.product(
        v.SUMMARY_OPENERS, v.SUMMARY_MIDDLES, v.SUMMARY_MIDDLES, v.SUMMARY_CLOSERS
    )
)
_PERCENTS = tuple(str(pct) for pct in range(5, 55))
_QUANTILES = 1024
_CAREER_MONTHS = tuple(max(6, int(years * 12)) for years in _career_years_quantiles(_QUANTILES))
# by months worked: up to 3 more than the longest career (a career may start up to 3 months early)
_YEARS_EXPERIENCE = tuple(round(months / 12, 1) for months in range(max(_CAREER_MONTHS) + 4))
_YEARS_TEXT = tuple(map(str, _YEARS_EXPERIENCE))  # as JSON and str.format write them
_GOLDEN = 0.6180339887498949
_SENIORITY_BY_YEAR = tuple(_band(y, v.SENIORITY) for y in range(61))
_SKILL_LEVEL_BY_TENTH = tuple(
    _band(t / 10, v.SKILL_LEVELS) for t in range(10 * SKILL_YEARS_CAP + 1)
)
_SENIORITY_PREFIX = tuple(  # the summary's {seniority} and {seniority_lower}, by career years
    (f"{s} ", f"{s.lower()} ") if s else ("", "") for s in _SENIORITY_BY_YEAR
)
_FLUENT_NOTICE_DAYS = (0, 14, 30, 60, 90)
_NOT_NOTICE = tuple(s for s in v.AVAILABILITY if s != "notice_period")
_TECH_FAMILIES = frozenset(("software", "data", "infrastructure"))
_SPONSORED = frozenset(("work_visa", "requires_sponsorship"))
_APPLY_WINDOW = 45 * 86400  # applied_at lies within this many seconds before as_of
_IN_FAMILY = _odds(IN_FAMILY_SHARE)
_EMPLOYED = _odds(0.82)
_FULL_TIME = _odds(0.9)
_ONE_DEGREE = _odds(0.7)
_HAS_GPA = _odds(0.4)
_GPAS = tuple(str(round(2.6 + hundredths / 100, 2)) for hundredths in range(141))  # 2.6 .. 4.0
_RELOCATES = _odds(0.3)
_HAS_PORTFOLIO = _odds(0.35)


def candidate_id(i: int) -> str:
    """The id (and Batch API custom_id) of candidate i."""
    return f"cand-{i:07d}"


class CandidateBuilder:
    """Builds the records of one batch from its shared tables."""

    def __init__(self, seed: int, locale: str = "en_US", as_of: str = DEFAULT_AS_OF) -> None:
        self.seed = seed
        self.tables = _tables(seed, locale)
        self.as_of_t = parse_as_of(as_of)
        as_of_dt = datetime.fromtimestamp(self.as_of_t, tz=timezone.utc)
        self.as_of_month = as_of_dt.year * 12 + as_of_dt.month - 1
        self.first_month = self.as_of_month - _MONTH_SPAN
        self.months = tuple(
            f"{m // 12:04d}-{m % 12 + 1:02d}" for m in range(self.first_month, self.as_of_month + 1)
        )
        self.months_json = tuple(f'"{month}"' for month in self.months)
        self.family = batch_family(seed)
        self.career_phase = record_rng(seed, -5, 3).random()
        families = self.tables.families
        self.own_family = families[v.FAMILY_NAMES.index(self.family)]
        self.other_families = tuple(f for f in families if f.name != self.family)
        as_of_day = int(self.as_of_t // 86400)
        self.start_dates = {d: _iso_day(as_of_day + d + 7) for d in _FLUENT_NOTICE_DAYS}
        self._draws = _Draws(seed)

    def build(self, i: int) -> dict[str, Any]:
        """Candidate i as a dict (parsed from build_json, so both are always the same record)."""
        return orjson.loads(self.build_json(i))

    def build_json(self, i: int) -> bytes:
        """Candidate i as compact JSON bytes, exactly as orjson.dumps would write the dict."""
        draw = self._draws(i)
        t = self.tables
        months, months_json = self.months, self.months_json
        first_month = self.first_month
        as_of_month = self.as_of_month

        family = (
            self.own_family
            if draw() < _IN_FAMILY
            else self.other_families[draw() % len(self.other_families)]
        )
        first_index = draw() % len(t.first_names)
        last_index = draw() % len(t.last_names)
        first, last = t.first_names[first_index], t.last_names[last_index]
        name_slug = (
            f"{t.first_slugs[first_index]}-{t.last_slugs[last_index]}".strip("-") or "candidate"
        )
        city_index = draw() % len(t.cities)
        city = t.cities[city_index]

        # Career: total months split into ordered, non-overlapping roles with short gaps.
        # Career length is stratified (a golden-ratio sequence over its quantiles), so even ten
        # consecutive candidates have a production-like mix of juniors and seniors.
        quantile = (self.career_phase + i * _GOLDEN) % 1.0
        career_months = _CAREER_MONTHS[int(quantile * _QUANTILES)]
        cut_count = min(4, max(1, career_months * 65536 // (24 * 65536 + 24 * draw())))
        cuts = sorted({1 + draw() % (career_months - 1) for _ in range(cut_count)})
        bounds = [0, *cuts, career_months]
        role_count = len(bounds) - 1
        career_start = as_of_month - career_months - (draw() % 4)
        employed = draw() < _EMPLOYED
        title_index = draw() % len(family.title_bases)
        titles = family.titles
        companies, company_count = t.companies, len(t.companies)
        locations, location_count = t.locations, len(t.locations)
        role_texts = family.role_texts
        roles = []
        resume_roles = []
        worked = 0
        last_role = role_count - 1
        title = company = ""
        for r in range(role_count):
            start = career_start + bounds[r]
            end = career_start + bounds[r + 1]
            if r < last_role:
                end -= draw() % 3  # a short gap between jobs
            elif employed:
                end = as_of_month  # a current role runs until today
            else:
                end -= 1 + (draw() % 6)
            if end <= start:
                end = start + 1
            title = titles[worked // 12][title_index]
            worked += end - start
            company = companies[draw() % company_count]
            location = locations[draw() % location_count]
            text = role_texts[draw() % TEXT_POOL_SIZE]
            employment = "full_time" if draw() < _FULL_TIME else "contract"
            start_str = months[start - first_month]
            if employed and r == last_role:
                end_json, end_text, current = "null", "Present", "true"
            else:
                end_text = months[end - first_month]
                end_json, current = months_json[end - first_month], "false"
            roles.append(
                f'{{"title":"{title}","company":"{company}","location":"{location}",'
                f'"employment_type":"{employment}","start_date":"{start_str}",'
                f'"end_date":{end_json},"current":{current},{text.json_tail}'
            )
            resume_roles.append(
                f"{title} - {company} ({start_str} to {end_text})\\n{location}\\n"
                f"{text.resume_block}\\n"
            )
        roles.reverse()  # resumes list the most recent role first
        resume_roles.reverse()
        years = worked // 12
        years_experience = _YEARS_EXPERIENCE[worked]

        # Education ends before the career starts.
        educations = family.educations
        education = []
        education_lines = []
        end_year = (career_start - 1 - (draw() % 12)) // 12
        for _ in range(1 if draw() < _ONE_DEGREE else 2):
            edu = educations[draw() % EDUCATION_POOL_SIZE]
            start_year = end_year - edu.length
            gpa = _GPAS[draw() % len(_GPAS)] if draw() < _HAS_GPA else "null"
            education.append(f'{edu.json_head}{start_year},"end_year":{end_year},"gpa":{gpa}}}')
            education_lines.append(f"{edu.resume_head}{start_year}-{end_year})")
            end_year -= edu.length + (draw() % 3)
        education.reverse()
        education_lines.reverse()

        skill_set = family.skill_sets[min(years, SKILL_YEARS_CAP)][draw() % SKILL_POOL_SIZE]
        skill1, skill2, skill3 = skill_set.top3
        combos = family.cert_combos[draw() % 4]
        certifications = []
        certification_lines = []
        for cert in combos[draw() % len(combos)]:
            year = (as_of_month - draw() % career_months) // 12
            credential = f"{cert.credential_prefix}{draw() << 16 | draw():08X}"
            certifications.append(f'{cert.json_head}{year},"credential_id":"{credential}"}}')
            certification_lines.append(f"{cert.resume_head}{year})")
        languages, language_line = t.languages[draw() % LANGUAGE_POOL_SIZE]

        remote = v.REMOTE[draw() % 3]
        objects = family.objects
        metrics = family.metrics
        seniority, seniority_lower = _SENIORITY_PREFIX[years]
        summary = _SUMMARIES[draw() % len(_SUMMARIES)](
            (
                seniority,
                seniority_lower,
                family.title_bases[title_index],
                family.title_lowers[title_index],
                _YEARS_TEXT[worked],
                skill1,
                skill2,
                skill3,
                company,  # of the latest role
                objects[draw() % len(objects)],
                family.objects_generic[draw() % len(objects)],
                metrics[draw() % len(metrics)],
                _PERCENTS[draw() % len(_PERCENTS)],
                v.PARTNERS[draw() % len(v.PARTNERS)],
                remote,
            )
        )

        base_salary = 45_000 + 6_500 * min(years_experience, 20.0) + (draw() * 25_000 >> 16)
        salary_min = int(base_salary * t.salary_scale / 1000) * 1000
        salary_max = salary_min + int(salary_min * (0.1 + draw() * 0.25 / 65536) / 1000) * 1000
        notice_days = _FLUENT_NOTICE_DAYS[draw() % 5] if employed else 0
        status = "notice_period" if notice_days else _NOT_NOTICE[draw() % len(_NOT_NOTICE)]
        authorization = v.AUTHORIZATION[draw() % len(v.AUTHORIZATION)]
        sponsorship = "true" if authorization in _SPONSORED else "false"
        email = f"{name_slug.replace('-', '.')}.{i}@{v.EMAIL_DOMAINS[draw() % 3]}"
        phone = (
            f"+1-{200 + (draw() % 790)}-555-01{_TWO_DIGITS[draw() % 100]}"
            if t.us_phones
            else t.phones[draw() % len(t.phones)]
        )
        linkedin = f"https://linkedin.example.com/in/{name_slug}-{i:x}"
        street = t.streets[draw() % len(t.streets)]
        region = t.regions[draw() % len(t.regions)]
        relocate = "true" if draw() < _RELOCATES else "false"
        github = (
            f'"https://github.example.com/{name_slug}{i % 1000}"'
            if family.name in _TECH_FAMILIES
            else "null"
        )
        portfolio = f'"https://{name_slug}.example.org"' if draw() < _HAS_PORTFOLIO else "null"
        if employed:
            current_title, current_company = f'"{title}"', f'"{company}"'
        else:
            current_title = current_company = "null"
        source = v.SOURCES[draw() % len(v.SOURCES)]
        screening = family.screening[draw() % len(family.screening)]
        applied_at = _iso_seconds(self.as_of_t - (draw() * _APPLY_WINDOW >> 16))
        country = t.country
        certification_block = (
            f"\\nCERTIFICATIONS{''.join(certification_lines)}\\n" if certifications else ""
        )
        education_block = "\\n".join(education_lines)
        return (
            f'{{"id":"cand-{i:07d}",'
            f'"name":{{"first":"{first}","last":"{last}","full":"{first} {last}"}},'
            f'"contact":{{"email":"{email}","phone":"{phone}","address":"{street}, {city}"}},'
            f'"location":{{"city":"{city}","region":"{region}","country":"{country}",'
            f'"remote_preference":"{remote}","willing_to_relocate":{relocate}}},'
            f'"headline":"{title} | {skill1}, {skill2}, {skill3}","summary":"{summary}",'
            f'"current_title":{current_title},"current_company":{current_company},'
            f'"years_experience":{_YEARS_TEXT[worked]},"job_family":"{family.name}",'
            f'"skills":{skill_set.json},"experience":[{",".join(roles)}],'
            f'"education":[{",".join(education)}],'
            f'"certifications":[{",".join(certifications)}],"languages":{languages},'
            f'"links":{{"linkedin":"{linkedin}","github":{github},"portfolio":{portfolio}}},'
            f'"availability":{{"status":"{status}","notice_period_days":{notice_days},'
            f'"earliest_start":"{self.start_dates[notice_days]}"}},'
            f'"salary_expectation":{{"currency":"{t.currency}","min":{salary_min},'
            f'"max":{salary_max},"period":"year"}},'
            f'"work_authorization":{{"country":"{country}","status":"{authorization}",'
            f'"requires_sponsorship":{sponsorship}}},'
            f'"source":"{source}","screening_answers":{screening},"applied_at":"{applied_at}",'
            f'"resume_text":"{t.first_upper[first_index]} {t.last_upper[last_index]}\\n'
            f"{email} | {phone} | {t.locations[city_index]}\\n{linkedin}\\n\\n"
            f"PROFESSIONAL SUMMARY\\n{summary}\\n\\nEXPERIENCE\\n{''.join(resume_roles)}\\n"
            f"EDUCATION\\n{education_block}\\n\\nSKILLS\\n{skill_set.resume_line}\\n"
            f'{certification_block}\\nLANGUAGES\\n{language_line}"}}'
        ).encode()


@functools.lru_cache(maxsize=65536)
def _iso_day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


_TWO_DIGITS = tuple(f"{k:02d}" for k in range(100))
_CLOCK = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))  # by minute of the day


def _iso_seconds(t: float) -> str:
    t = int(t)
    s = t % 86400
    return f"{_iso_day(t // 86400)}T{_CLOCK[s // 60]}{_TWO_DIGITS[s % 60]}Z"
