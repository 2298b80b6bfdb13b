"""Settings of bench/tracking.py: production's, on the bench's own database and Redis database.

Used by the gunicorn the bench starts and by the bench process itself (fixtures, drain). The
bench puts SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL and REDIS_URL into the environment before
anything imports this (config.settings.production refuses to load without them); whatever
database and Redis database they name, this module pins the bench's own:

- PostgreSQL database fw_bench_tracking (host, port and user from DATABASE_URL), persistent
  connections as in production;
- Redis database 9 (host from REDIS_URL) with its own stream, bench:tracking:hits;
- ROOT_URLCONF bench.tracking_urls: the app's URLs plus the bench's reference views;
- one bench middleware right after tracking.middleware.TrackingMiddleware that serves the
  synchronous variants and the early bare GIF at the same place in the stack as the pixel.

DEBUG is off (production sets it), and plain HTTP is served on loopback (production sits
behind a TLS-terminating proxy), so SECURE_SSL_REDIRECT is off.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from config.settings.production import *  # noqa: F403
from config.settings.production import DATABASES, LOGGING, MIDDLEWARE, REDIS_URL

DATABASE_NAME = "fw_bench_tracking"
REDIS_DB = 9
STREAM = "bench:tracking:hits"

DATABASES["default"]["NAME"] = DATABASE_NAME

_redis = urlsplit(REDIS_URL or "redis://127.0.0.1:6379/0")
BENCH_REDIS_URL = urlunsplit(_redis._replace(path=f"/{REDIS_DB}"))
REDIS_URL = BENCH_REDIS_URL
TRACKING_BUFFER_URL = BENCH_REDIS_URL
TRACKING_STREAM = STREAM
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": BENCH_REDIS_URL,
        "KEY_PREFIX": "bench-tracking",
    }
}
# Nothing consumes it during the bench; reactions that would publish a task land here.
CELERY_BROKER_URL = BENCH_REDIS_URL

DEBUG = False
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False

ROOT_URLCONF = "bench.tracking_urls"
_after = MIDDLEWARE.index("tracking.middleware.TrackingMiddleware") + 1
MIDDLEWARE = [*MIDDLEWARE[:_after], "bench.tracking_urls.BenchMiddleware", *MIDDLEWARE[_after:]]

LOGGING["root"]["level"] = "WARNING"
