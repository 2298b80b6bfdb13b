"""Tests: PostgreSQL and Redis from the environment (defaults on loopback), mail in memory."""

import os

from config.env import env_str, parse_database_url
from config.settings.base import *

SECRET_KEY = "test-secret-key-not-for-production-use-0123456789"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS = ["*"]
PUBLIC_BASE_URL = "http://testserver"

DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/funnelwerk")
DATABASES = {"default": parse_database_url(DATABASE_URL)}
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/15")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"fwtest{os.getpid()}",
    }
}
CELERY_BROKER_URL = REDIS_URL
TRACKING_BUFFER_URL = REDIS_URL
TRACKING_STREAM = f"fwtest{os.getpid()}:tracking:hits"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True

EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING["root"]["level"] = "WARNING"  # type: ignore[index]
