"""Candidate profiles: record i is a pure function of (seed, i, locale, as_of).

Internally consistent: roles are ordered and do not overlap, years of experience is the sum of the
roles, education ends before the career starts, skill years never exceed the career.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import time
from collections.abc import Iterator
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
    """The RNG of record i: independent of other records, so any chunking gives the same bytes."""
    return random.Random((seed * _MIX + i * 2 + stream * 0x5851F42D4C957F2D) & (2**128 - 1))


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


class _RoleText(NamedTuple):
    """Pre-rendered text of one role: JSON fragments for the record, a block for the resume."""

    description: orjson.Fragment
    highlights: orjson.Fragment
    skills_used: orjson.Fragment
    resume_block: str


class _SkillSet(NamedTuple):
    """A pre-rendered skills list whose per-skill years never exceed its career-years bucket."""

    top3: tuple[str, str, str]
    fragment: orjson.Fragment
    resume_line: str


class _Education(NamedTuple):
    degree: str
    length: int
    institution: str
    field: str


class _Tables:
    """Everything records pick from for one (seed, locale): Faker pools plus pre-rendered text.

    Building them costs ~0.5 s once; a record then picks instead of formatting, ~10x cheaper.
    """

    def __init__(self, seed: int, locale: str) -> None:
        self.pools: Pools = pools(seed, locale)
        self.role_texts = {f: _role_texts(seed, f) for f in v.FAMILY_NAMES}
        self.skill_sets = {
            f: tuple(_skill_sets(seed, f, y) for y in range(SKILL_YEARS_CAP + 1))
            for f in v.FAMILY_NAMES
        }
        self.educations = {f: _educations(seed, f, self.pools) for f in v.FAMILY_NAMES}
        self.cert_combos = {f: _cert_combos(v.FAMILIES[f]["certs"]) for f in v.FAMILY_NAMES}
        self.languages = _language_sets(seed)
        self.screening = {f: _screening_answers(seed, f) for f in v.FAMILY_NAMES}


@functools.lru_cache(maxsize=8)
def _tables(seed: int, locale: str) -> _Tables:
    return _Tables(seed, locale)


def _table_rng(seed: int, table: int, family_name: str = "") -> random.Random:
    family_index = v.FAMILY_NAMES.index(family_name) + 1 if family_name else 0
    return record_rng(seed, -table, FAMILY_STREAM + family_index)


def _role_texts(seed: int, family_name: str) -> tuple[_RoleText, ...]:
    family = v.FAMILIES[family_name]
    rng = _table_rng(seed, 3, family_name)
    choice = rng.choice
    texts = []
    for _ in range(TEXT_POOL_SIZE):
        skills = [choice(family["skills"]), choice(family["skills"])]
        object_ = choice(family["objects"])
        description = " ".join(
            choice(v.DUTIES).format(
                object=object_,
                partner=choice(v.PARTNERS),
                metric=choice(family["metrics"]),
                team=rng.randint(3, 22),
                skill=skills[0],
                skill2=skills[1],
            )
            for _ in range(2)
        )
        highlights = [
            choice(v.HIGHLIGHTS).format(
                metric=choice(family["metrics"]),
                pct=rng.randint(5, 64),
                object=choice(family["objects"]),
                team=rng.randint(2, 13),
                months=rng.randint(2, 17),
                users=f"{rng.randint(1, 900)}K",
                hours=rng.randint(10, 199),
            )
            for _ in range(rng.randint(2, 4))
        ]
        texts.append(
            _RoleText(
                _fragment(description),
                _fragment(highlights),
                _fragment(skills),
                "\n".join([description, *(f"* {h}" for h in highlights)]),
            )
        )
    return tuple(texts)


def _skill_sets(seed: int, family_name: str, years: int) -> tuple[_SkillSet, ...]:
    family = v.FAMILIES[family_name]
    rng = _table_rng(seed, 100 + years, family_name)
    sets = []
    for _ in range(SKILL_POOL_SIZE):
        names = rng.sample(family["skills"], min(rng.randint(8, 18), len(family["skills"])))
        skills = []
        for name in names:
            # a career under a year gets skills of a few months, never more than the career
            skill_years = round(min(years, 0.5 + rng.random() * years), 1) if years else 0.1
            level = _band(skill_years, v.SKILL_LEVELS)
            skills.append({"name": name, "level": level, "years": skill_years})
        sets.append(
            _SkillSet(
                (names[0], names[1], names[2]),
                _fragment(skills),
                ", ".join(f"{s['name']} ({s['level']})" for s in skills),
            )
        )
    return tuple(sets)


def _educations(seed: int, family_name: str, p: Pools) -> tuple[_Education, ...]:
    rng = _table_rng(seed, 4, family_name)
    choice = rng.choice
    return tuple(
        _Education(
            *choice(v.DEGREES),
            choice(v.UNIVERSITY_FORMS).format(
                city=choice(p.cities), last=choice(p.last_names), region=choice(p.regions)
            ),
            choice(v.FAMILIES[family_name]["fields"]),
        )
        for _ in range(EDUCATION_POOL_SIZE)
    )


def _cert_combos(certs: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], ...]:
    """For k = 0..3, every k-subset of the family's certifications (a record picks k, then one)."""
    return tuple(tuple(itertools.combinations(certs, k)) for k in range(4))


def _language_sets(seed: int) -> tuple[tuple[orjson.Fragment, str], ...]:
    rng = _table_rng(seed, 5)
    sets = []
    for _ in range(LANGUAGE_POOL_SIZE):
        languages = [{"language": "English", "proficiency": rng.choice(v.PROFICIENCY[2:])}]
        for language in rng.sample(v.LANGUAGES[1:], rng.randint(0, 2)):
            languages.append({"language": language, "proficiency": rng.choice(v.PROFICIENCY)})
        line = ", ".join(f"{x['language']} ({x['proficiency']})" for x in languages)
        sets.append((_fragment(languages), line))
    return tuple(sets)


def _screening_answers(seed: int, family_name: str) -> tuple[orjson.Fragment, ...]:
    family = v.FAMILIES[family_name]
    rng = _table_rng(seed, 6, family_name)
    choice = rng.choice
    sets = []
    for _ in range(TEXT_POOL_SIZE // 4):
        answers = [
            {
                "question": question,
                "answer": choice(templates).format(
                    object=choice(family["objects"]),
                    skill=choice(family["skills"]),
                    metric=choice(family["metrics"]),
                    pct=rng.randint(5, 60),
                ),
            }
            for question, templates in rng.sample(v.SCREENING, 2)
        ]
        sets.append(_fragment(answers))
    return tuple(sets)


def _fragment(value: Any) -> orjson.Fragment:
    """Pre-serialised JSON; copied to its exact size (orjson's buffers keep ~4 KB each)."""
    return orjson.Fragment(bytes(memoryview(orjson.dumps(value))))


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


_QUANTILES = 1024
_CAREER_YEARS = _career_years_quantiles(_QUANTILES)
_GOLDEN = 0.6180339887498949
_SENIORITY_BY_YEAR = tuple(_band(y, v.SENIORITY) for y in range(61))
_FLUENT_NOTICE_DAYS = (0, 14, 30, 60, 90)
_NOT_NOTICE = tuple(s for s in v.AVAILABILITY if s != "notice_period")
_TECH_FAMILIES = frozenset(("software", "data", "infrastructure"))
_SPONSORED = frozenset(("work_visa", "requires_sponsorship"))


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
        self.family = batch_family(seed)
        self.career_phase = record_rng(seed, -5, 3).random()
        self.other_families = tuple(f for f in v.FAMILY_NAMES if f != self.family)
        as_of_day = int(self.as_of_t // 86400)
        self.start_dates = {d: _iso_day(as_of_day + d + 7) for d in _FLUENT_NOTICE_DAYS}

    def build(self, i: int) -> dict[str, Any]:
        """Candidate i as a dict (parsed from build_json, so both are always the same record)."""
        return orjson.loads(self.build_json(i))

    def build_json(self, i: int) -> bytes:
        """Candidate i as compact JSON bytes (the writers' fast path)."""
        rng = record_rng(self.seed, i)
        rnd = rng.random
        t = self.tables
        p = t.pools
        months = self.months
        first_month = self.first_month

        family_name = (
            self.family
            if rnd() < IN_FAMILY_SHARE
            else self.other_families[int(rnd() * len(self.other_families))]
        )
        family = v.FAMILIES[family_name]
        role_texts = t.role_texts[family_name]
        companies = p.companies
        cities = p.cities
        first_index = int(rnd() * len(p.first_names))
        last_index = int(rnd() * len(p.last_names))
        first, last = p.first_names[first_index], p.last_names[last_index]
        full_name = f"{first} {last}"
        first_slug, last_slug = p.first_slugs[first_index], p.last_slugs[last_index]
        name_slug = f"{first_slug}-{last_slug}".strip("-") or "candidate"
        city = cities[int(rnd() * len(cities))]

        # Career: total months split into ordered, non-overlapping roles with short gaps.
        # Career length is stratified (a golden-ratio sequence over its quantiles), so even ten
        # consecutive candidates have a production-like mix of juniors and seniors.
        quantile = (self.career_phase + i * _GOLDEN) % 1.0
        career_months = max(6, int(_CAREER_YEARS[int(quantile * _QUANTILES)] * 12))
        cut_count = min(4, max(1, int(career_months / (24 + rnd() * 24))))
        cuts = sorted({1 + int(rnd() * (career_months - 1)) for _ in range(cut_count)})
        bounds = [0, *cuts, career_months]
        role_count = len(bounds) - 1
        career_start = self.as_of_month - career_months - int(rnd() * 4)
        employed = rnd() < 0.82
        titles = family["titles"]
        title_base = titles[int(rnd() * len(titles))]
        roles = []
        resume_roles = []
        worked = 0
        last_role = role_count - 1
        for r in range(role_count):
            start = career_start + bounds[r]
            end = career_start + bounds[r + 1]
            if r < last_role:
                end = max(start + 1, end - int(rnd() * 3))  # a short gap between jobs
            elif employed:
                end = self.as_of_month  # a current role runs until today
            else:
                end = max(start + 1, end - 1 - int(rnd() * 6))
            seniority = _SENIORITY_BY_YEAR[worked // 12]
            worked += end - start
            title = f"{seniority} {title_base}" if seniority else title_base
            company = companies[int(rnd() * len(companies))]
            current = employed and r == last_role
            start_str = months[start - first_month]
            end_str = None if current else months[end - first_month]
            location = f"{cities[int(rnd() * len(cities))]}, {p.country}"
            text = role_texts[int(rnd() * TEXT_POOL_SIZE)]
            roles.append(
                {
                    "title": title,
                    "company": company,
                    "location": location,
                    "employment_type": "full_time" if rnd() < 0.9 else "contract",
                    "start_date": start_str,
                    "end_date": end_str,
                    "current": current,
                    "description": text.description,
                    "highlights": text.highlights,
                    "skills_used": text.skills_used,
                }
            )
            resume_roles.append(
                f"{title} - {company} ({start_str} to {end_str or 'Present'})\n{location}\n"
                f"{text.resume_block}\n"
            )
        roles.reverse()  # resumes list the most recent role first
        resume_roles.reverse()
        years_experience = round(worked / 12, 1)
        latest = roles[0]

        # Education ends before the career starts.
        educations = t.educations[family_name]
        education = []
        end_year = (career_start - 1 - int(rnd() * 12)) // 12
        for _ in range(1 if rnd() < 0.7 else 2):
            edu = educations[int(rnd() * EDUCATION_POOL_SIZE)]
            education.append(
                {
                    "institution": edu.institution,
                    "degree": edu.degree,
                    "field": edu.field,
                    "start_year": end_year - edu.length,
                    "end_year": end_year,
                    "gpa": round(2.6 + rnd() * 1.4, 2) if rnd() < 0.4 else None,
                }
            )
            end_year -= edu.length + int(rnd() * 3)
        education.reverse()

        skill_sets = t.skill_sets[family_name][min(int(years_experience), SKILL_YEARS_CAP)]
        skill_set = skill_sets[int(rnd() * SKILL_POOL_SIZE)]
        skill1, skill2, skill3 = skill_set.top3
        combos = t.cert_combos[family_name][int(rnd() * 4)]
        certifications = [
            {
                "name": name,
                "issuer": issuer,
                "year": (self.as_of_month - int(rnd() * career_months)) // 12,
                "credential_id": f"{issuer[:3].upper()}-{rng.getrandbits(32):08X}",
            }
            for name, issuer in combos[int(rnd() * len(combos))]
        ]
        languages, language_line = t.languages[int(rnd() * LANGUAGE_POOL_SIZE)]
        screening = t.screening[family_name]

        seniority_now = _SENIORITY_BY_YEAR[int(years_experience)]
        remote = v.REMOTE[int(rnd() * 3)]
        objects = family["objects"]
        summary_vars = {
            "seniority": f"{seniority_now} " if seniority_now else "",
            "seniority_lower": f"{seniority_now.lower()} " if seniority_now else "",
            "title": title_base,
            "title_lower": title_base.lower(),
            "years": years_experience,
            "skill": skill1,
            "skill2": skill2,
            "skill3": skill3,
            "company": latest["company"],
            "object": objects[int(rnd() * len(objects))],
            "object_generic": objects[int(rnd() * len(objects))].removeprefix("the "),
            "metric": family["metrics"][int(rnd() * len(family["metrics"]))],
            "pct": 5 + int(rnd() * 50),
            "partner": v.PARTNERS[int(rnd() * len(v.PARTNERS))],
            "remote": remote,
        }
        summary = " ".join(
            (
                v.SUMMARY_OPENERS[int(rnd() * len(v.SUMMARY_OPENERS))].format_map(summary_vars),
                v.SUMMARY_MIDDLES[int(rnd() * len(v.SUMMARY_MIDDLES))].format_map(summary_vars),
                v.SUMMARY_MIDDLES[int(rnd() * len(v.SUMMARY_MIDDLES))].format_map(summary_vars),
                v.SUMMARY_CLOSERS[int(rnd() * len(v.SUMMARY_CLOSERS))].format_map(summary_vars),
            )
        )

        base_salary = 45_000 + 6_500 * min(years_experience, 20) + int(rnd() * 25_000)
        salary_min = int(base_salary * p.salary_scale / 1000) * 1000
        notice_days = _FLUENT_NOTICE_DAYS[int(rnd() * 5)] if employed else 0
        authorization = v.AUTHORIZATION[int(rnd() * len(v.AUTHORIZATION))]
        email = f"{name_slug.replace('-', '.')}.{i}@{v.EMAIL_DOMAINS[int(rnd() * 3)]}"
        phone = (
            f"+1-{200 + int(rnd() * 790)}-555-01{int(rnd() * 100):02d}"
            if p.country_code == "US"
            else p.phones[int(rnd() * len(p.phones))]
        )
        linkedin = f"https://linkedin.example.com/in/{name_slug}-{i:x}"
        street = p.streets[int(rnd() * len(p.streets))]
        record = {
            "id": candidate_id(i),
            "name": {"first": first, "last": last, "full": full_name},
            "contact": {"email": email, "phone": phone, "address": f"{street}, {city}"},
            "location": {
                "city": city,
                "region": p.regions[int(rnd() * len(p.regions))],
                "country": p.country,
                "remote_preference": remote,
                "willing_to_relocate": rnd() < 0.3,
            },
            "headline": f"{latest['title']} | {skill1}, {skill2}, {skill3}",
            "summary": summary,
            "current_title": latest["title"] if employed else None,
            "current_company": latest["company"] if employed else None,
            "years_experience": years_experience,
            "job_family": family_name,
            "skills": skill_set.fragment,
            "experience": roles,
            "education": education,
            "certifications": certifications,
            "languages": languages,
            "links": {
                "linkedin": linkedin,
                "github": f"https://github.example.com/{name_slug}{i % 1000}"
                if family_name in _TECH_FAMILIES
                else None,
                "portfolio": f"https://{name_slug}.example.org" if rnd() < 0.35 else None,
            },
            "availability": {
                "status": "notice_period"
                if notice_days
                else _NOT_NOTICE[int(rnd() * len(_NOT_NOTICE))],
                "notice_period_days": notice_days,
                "earliest_start": self.start_dates[notice_days],
            },
            "salary_expectation": {
                "currency": p.currency,
                "min": salary_min,
                "max": salary_min + int(salary_min * (0.1 + rnd() * 0.25) / 1000) * 1000,
                "period": "year",
            },
            "work_authorization": {
                "country": p.country,
                "status": authorization,
                "requires_sponsorship": authorization in _SPONSORED,
            },
            "source": v.SOURCES[int(rnd() * len(v.SOURCES))],
            "screening_answers": screening[int(rnd() * len(screening))],
            "applied_at": _iso_seconds(self.as_of_t - int(rnd() * 45 * 86400)),
        }
        education_lines = "\n".join(
            f"{e['degree']} in {e['field']}, {e['institution']} ({e['start_year']}-{e['end_year']})"
            for e in education
        )
        certification_lines = "".join(
            f"\n{c['name']}, {c['issuer']} ({c['year']})" for c in certifications
        )
        record["resume_text"] = (
            f"{full_name.upper()}\n{email} | {phone} | {city}, {p.country}\n{linkedin}\n\n"
            f"PROFESSIONAL SUMMARY\n{summary}\n\nEXPERIENCE\n{''.join(resume_roles)}\n"
            f"EDUCATION\n{education_lines}\n\nSKILLS\n{skill_set.resume_line}\n"
            + (f"\nCERTIFICATIONS{certification_lines}\n" if certifications else "")
            + f"\nLANGUAGES\n{language_line}"
        )
        return orjson.dumps(record)


@functools.lru_cache(maxsize=65536)
def _iso_day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


def _iso_seconds(t: float) -> str:
    t = int(t)
    s = t % 86400
    return f"{_iso_day(t // 86400)}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z"
