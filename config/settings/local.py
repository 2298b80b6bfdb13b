"""The embedded default for one machine: SQLite, filesystem broker, local outbox."""

from config.env import env_bool, env_list, env_str
from config.settings.base import *

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = SECRET_KEY or env_str("FUNNELWERK_LOCAL_SECRET", "insecure-local-development-key-only")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
