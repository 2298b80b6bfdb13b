"""Production: everything from the environment; refuses to start without the essentials."""

from config.env import ConfigurationError, env_bool, env_int
from config.settings.base import *

DEBUG = False
if not SECRET_KEY or len(SECRET_KEY) < 32:
    raise ConfigurationError("SECRET_KEY must be set to a random string of 32 characters or more")
if not ALLOWED_HOSTS:
    raise ConfigurationError("ALLOWED_HOSTS must name the host names this installation serves")
if not DATABASE_URL:
    raise ConfigurationError("DATABASE_URL must point at PostgreSQL in production")

STORAGES["staticfiles"] = {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
