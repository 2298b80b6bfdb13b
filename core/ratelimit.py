"""Fixed-window rate limits in the cache (Redis in production), for public endpoints."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.core.cache import cache

PERIODS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """'20/h', '5/min', '100/d'."""
        count, _slash, period = text.partition("/")
        return cls(count=int(count), seconds=PERIODS[period.strip().lower()])


def rate_limit_hit(*, scope: str, key: str, rate: Rate) -> bool:
    """Count one hit; True when `key` has gone over `rate` in the current window."""
    window = int(time.time() // rate.seconds)
    cache_key = f"ratelimit:{scope}:{key}:{window}"
    if cache.add(cache_key, 1, timeout=rate.seconds + 1):
        hits = 1
    else:
        try:
            hits = cache.incr(cache_key)
        except ValueError:  # expired between add and incr
            cache.add(cache_key, 1, timeout=rate.seconds + 1)
            hits = 1
    return hits > rate.count
