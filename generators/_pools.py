"""Per-(seed, locale) pools of Faker values, built once and shared by every record.

Calling Faker per field costs tens of microseconds; drawing from pools with one seeded RNG per
record is ~100x faster and keeps record i a pure function of (seed, i, locale).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from faker import Faker
from faker.config import AVAILABLE_LOCALES

POOL_SIZE = 400
_SLUG = re.compile(r"[^a-z0-9]+")

# Currency and a rough salary scale relative to USD, by the locale's country.
_CURRENCIES: dict[str, tuple[str, float]] = {
    "US": ("USD", 1.0),
    "CA": ("CAD", 1.3),
    "GB": ("GBP", 0.7),
    "IE": ("EUR", 0.8),
    "DE": ("EUR", 0.8),
    "FR": ("EUR", 0.75),
    "ES": ("EUR", 0.6),
    "IT": ("EUR", 0.6),
    "NL": ("EUR", 0.8),
    "PL": ("PLN", 1.8),
    "JP": ("JPY", 110.0),
    "IN": ("INR", 20.0),
    "BR": ("BRL", 2.5),
    "AU": ("AUD", 1.4),
    "MX": ("MXN", 8.0),
}


class UnknownLocale(ValueError):
    """The locale is not one Faker provides."""


@dataclass(frozen=True)
class Pools:
    """Locale-specific value pools (plain tuples) for one seed."""

    locale: str
    country: str
    country_code: str
    currency: str
    salary_scale: float
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    first_slugs: tuple[str, ...]
    last_slugs: tuple[str, ...]
    cities: tuple[str, ...]
    regions: tuple[str, ...]
    companies: tuple[str, ...]
    phones: tuple[str, ...]
    streets: tuple[str, ...]


def slug(text: str) -> str:
    """ASCII slug for emails and URLs, whatever the locale's script."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _SLUG.sub("-", ascii_text.lower()).strip("-")


def check_locale(locale: str) -> None:
    if locale not in AVAILABLE_LOCALES:
        raise UnknownLocale(locale)


@functools.lru_cache(maxsize=8)
def pools(seed: int, locale: str = "en_US") -> Pools:
    """Pools for (seed, locale); cached, and rebuilt identically in every worker process."""
    check_locale(locale)
    fake = Faker(locale)
    fake.seed_instance(seed)
    country_code = locale.split("_")[-1].upper() if "_" in locale else "US"
    currency, scale = _CURRENCIES.get(country_code, ("USD", 1.0))
    first_names = _unique(fake.first_name, POOL_SIZE)
    last_names = _unique(fake.last_name, POOL_SIZE)
    return Pools(
        locale=locale,
        country=_country(fake, country_code),
        country_code=country_code,
        currency=currency,
        salary_scale=scale,
        first_names=first_names,
        last_names=last_names,
        first_slugs=tuple(slug(name) for name in first_names),
        last_slugs=tuple(slug(name) for name in last_names),
        cities=_unique(fake.city, POOL_SIZE // 2),
        regions=_unique(_region_source(fake), 40),
        companies=_unique(fake.company, POOL_SIZE),
        phones=_unique(fake.phone_number, POOL_SIZE // 2),
        streets=_unique(fake.street_address, POOL_SIZE // 2),
    )


def _unique(source, size: int) -> tuple[str, ...]:
    """Up to `size` distinct values from a Faker method (small locale lists may give fewer)."""
    seen: dict[str, None] = {}
    for _ in range(size * 3):
        seen.setdefault(source(), None)
        if len(seen) >= size:
            break
    return tuple(seen)


def _region_source(fake: Faker):
    for name in ("state", "administrative_unit", "region", "prefecture", "province"):
        method = getattr(fake, name, None)
        if method is not None:
            try:
                method()
            except (AttributeError, TypeError):
                continue
            return method
    return fake.city


def _country(fake: Faker, code: str) -> str:
    try:
        return fake.current_country()
    except (AttributeError, ValueError):
        return code
