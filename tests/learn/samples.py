"""Sample records of shapes unlike ours, made with Faker: what a user might bring to `learn`."""

from __future__ import annotations

import random
from datetime import date, timedelta

from faker import Faker

STATUSES = ("pending", "paid", "shipped", "cancelled")


def orders(n: int, seed: int = 7, locale: str = "de_DE") -> list[dict]:
    """Deeply nested orders: customer (name, email from it, phone, address), optional fields,
    items (lists of objects, prices as strings), a sorted event list, ordered dates."""
    fake = Faker(locale)
    fake.seed_instance(seed)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        first, last = fake.first_name(), fake.last_name()
        start = date(2024, 1, 1) + timedelta(days=rng.randrange(300))
        end = start + timedelta(days=rng.randrange(1, 60))
        events = sorted(
            start + timedelta(days=rng.randrange(90)) for _ in range(rng.randrange(2, 5))
        )
        record = {
            "order_id": f"ORD-{100000 + i}",
            "status": rng.choice(STATUSES),
            "customer": {
                "name": {"first": first, "last": last},
                "email": f"{first.lower()}.{last.lower()}@{rng.choice(('web.de', 'gmx.de'))}",
                "phone": fake.phone_number(),
                "address": {
                    "street": fake.street_address(),
                    "postal_code": fake.postcode(),
                    "city": fake.city(),
                    "country": "Deutschland",
                    "geo": {
                        "lat": round(rng.uniform(47, 55), 5),
                        "lon": round(rng.uniform(6, 15), 5),
                    },
                },
            },
            "items": [
                {
                    "sku": f"SKU{rng.randrange(10**6):06d}",
                    "quantity": rng.randrange(1, 6),
                    "price": f"{rng.uniform(2, 300):.2f}",
                    "category": rng.choice(("books", "garden", "toys", "tools")),
                }
                for _ in range(rng.randrange(1, 6))
            ],
            "period": {"start": start.isoformat(), "end": end.isoformat()},
            "events": [d.isoformat() for d in events],
            "note": fake.paragraph(nb_sentences=rng.randrange(1, 4)),
        }
        if rng.random() < 0.5:
            record["coupon"] = rng.choice(("SUMMER", "WELCOME", None))
        out.append(record)
    return out
