"""The job posting a batch is scored against: one per (seed, locale), long like real postings."""

from __future__ import annotations

from typing import Any

from generators import _vocab as v
from generators._pools import pools
from generators.candidates import batch_family, record_rng

_CRITERIA: tuple[tuple[str, str], ...] = (
    ("skills_match", "How many of the required skills the candidate shows, weighted by recency."),
    (
        "experience_depth",
        "Years and seniority of relevant experience compared with the role level.",
    ),
    ("impact", "Evidence of measurable results: metrics moved, projects shipped, teams led."),
    ("domain_fit", "Familiarity with the company's domain, customers and regulatory context."),
    ("communication", "Clarity of the summary and experience descriptions as a writing sample."),
    ("growth", "Trajectory: promotions, widening scope, learning new tools and certifications."),
    ("logistics", "Location, remote preference, notice period, salary range and authorization."),
)

_SCORING_GUIDE = (
    "90-100: exceptional {what}, clearly above the role's level with concrete evidence; "
    "70-89: solid {what} that meets the role's needs; 40-69: partial or unproven {what}; "
    "0-39: little or no evidence of {what} in the profile."
)

_PARAGRAPHS: tuple[str, ...] = (
    "{company} is hiring a {title} to join our {family} organisation in {city}. You will own "
    "{object} and work with {partner} to set direction, plan the work and deliver it with care. "
    "We are a team that measures what matters, writes things down and ships in small steps.",
    "In your first 90 days you will learn how {object} works today, meet the people who depend "
    "on it and agree on the two or three changes that will move {metric} the most. After that "
    "you will lead those changes end to end, from the first proposal to the last follow-up.",
    "You will be joining at an exciting time: demand for our products has tripled over the last "
    "two years, and {object} has to scale with it. The work is varied, the problems are real and "
    "the team is friendly, experienced and generous with its time.",
    "What we offer: a clear scope, a manager who invests in your growth, a sane on-call or "
    "workload policy, and colleagues who review each other's work thoughtfully. We value "
    "diverse backgrounds and encourage you to apply even if you do not meet every requirement.",
    "How we hire: a 30-minute introduction with the hiring manager, a practical exercise based "
    "on a real problem from {object} (paid, at most three hours), a conversation with the team "
    "and a final discussion about expectations. We aim to decide within two weeks.",
    "About {company}: we build products that thousands of customers rely on every day, and we "
    "take that responsibility seriously. Our teams are small, autonomous and accountable for "
    "outcomes rather than output. We publish our engineering and operating principles, run "
    "blameless reviews after incidents and invest in tooling that makes the right thing easy.",
    "Working here: you will have a dedicated onboarding buddy, a written 30-60-90 day plan and "
    "regular one-to-ones. We budget time for learning, maintenance and paying down debt every "
    "cycle, and we expect people to take their full holiday allowance. Most teams overlap four "
    "core hours a day and keep meetings to a minimum so there is room for focused work.",
    "Day to day you will use {skill}, {skill2} and {skill3}, and you will shape how the team "
    "uses them. You will also mentor newer colleagues, document decisions and contribute to the "
    "hiring of the people who will join after you.",
)


def job(seed: int = 0, locale: str = "en_US") -> dict[str, Any]:
    """The job posting of the batch defined by (seed, locale)."""
    rng = record_rng(seed, -2, 2)
    rnd = rng.random
    p = pools(seed, locale)

    def pick(seq):
        return seq[int(rnd() * len(seq))]

    family_name = batch_family(seed)
    family = v.FAMILIES[family_name]
    seniority = pick(("", "Senior", "Senior", "Lead"))
    title = f"{seniority} {pick(family['titles'])}".strip()
    skills = rng.sample(family["skills"], 14)
    company = pick(p.companies)
    city = pick(p.cities)
    values = {
        "company": company,
        "title": title,
        "family": family_name,
        "city": city,
        "object": pick(family["objects"]),
        "partner": pick(v.PARTNERS),
        "metric": pick(family["metrics"]),
        "skill": skills[0],
        "skill2": skills[1],
        "skill3": skills[2],
    }
    description = "\n\n".join(paragraph.format(**values) for paragraph in _PARAGRAPHS)
    min_years = {"": 2, "Senior": 5, "Lead": 8}[seniority]
    requirements = [
        f"{min_years}+ years of professional experience as a {title.lower()} or similar role",
        *(f"Strong, hands-on experience with {skill}" for skill in skills[:6]),
        f"Track record of improving {pick(family['metrics'])} in a production setting",
        "Clear written and verbal communication with technical and non-technical colleagues",
        f"Degree in {pick(family['fields'])} or equivalent practical experience",
    ]
    nice_to_have = [
        *(f"Experience with {skill}" for skill in skills[6:11]),
        f"{pick(family['certs'])[0]} or a comparable certification",
        "Experience mentoring or leading a small team",
    ]
    weights = [3 + int(rnd() * 5) for _ in _CRITERIA]
    total = sum(weights)
    criteria = [
        {
            "name": name,
            "weight": round(weight / total, 3),
            "description": text,
            "scoring_guide": _SCORING_GUIDE.format(what=name.replace("_", " ")),
        }
        for (name, text), weight in zip(_CRITERIA, weights, strict=True)
    ]
    salary_min = int((60_000 + min_years * 9_000) * p.salary_scale / 1000) * 1000
    return {
        "id": f"job-{seed}",
        "title": title,
        "company": company,
        "location": {"city": city, "country": p.country, "remote_policy": pick(v.REMOTE)},
        "family": family_name,
        "employment_type": "full_time",
        "description": description,
        "requirements": requirements,
        "nice_to_have": nice_to_have,
        "evaluation_criteria": criteria,
        "salary_range": {
            "currency": p.currency,
            "min": salary_min,
            "max": int(salary_min * 1.35 / 1000) * 1000,
            "period": "year",
        },
        "benefits": list(v.JOB_PERKS),
    }
