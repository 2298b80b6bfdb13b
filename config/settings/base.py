"""Settings shared by every environment. Everything that differs comes from the environment."""

from __future__ import annotations

from pathlib import Path

import django_stubs_ext
from django.utils.translation import gettext_lazy as _

from config.env import env_bool, env_int, env_list, env_str, parse_database_url, parse_email_url

# Lets model forms, querysets and managers be subscripted at run time (ModelForm[Workspace]).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("FUNNELWERK_VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env_str("SECRET_KEY")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "anymail",
    "core",
    "contacts",
    "funnel",
    "campaigns",
    "tracking",
    "analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Open pixel and click redirect: answered here, before sessions, CSRF, auth and workspace.
    "tracking.middleware.TrackingMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "core.middleware.CurrentWorkspaceMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.workspace",
            ],
        },
    },
]

# Database: DATABASE_URL, or SQLite under var/ (the embedded default).
SQLITE_PATH = VAR_DIR / "funnelwerk.sqlite3"
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": parse_database_url(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(SQLITE_PATH),
            # Web, worker and beat share the file: WAL lets readers run beside a writer, the
            # busy timeout waits instead of failing, and IMMEDIATE takes the write lock when a
            # transaction starts so two writers never deadlock on lock upgrade.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The send path's statements are prepared once per PostgreSQL session (core.prepared); off
# behind a pooler in transaction mode, which gives each transaction another session.
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "fw",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "funnelwerk_cache",
        }
    }

AUTH_USER_MODEL = "core.User"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
PASSWORD_RESET_TIMEOUT = 60 * 60 * 3
SIGNUP_OPEN = env_bool("SIGNUP_OPEN", True)
INVITATION_VALID_DAYS = env_int("INVITATION_VALID_DAYS", 7)

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("de", _("German"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Mail: EMAIL_URL picks the transport (see config/env.py).
EMAIL_URL = env_str("EMAIL_URL", "outbox://")
_email = parse_email_url(EMAIL_URL)
EMAIL_BACKEND = _email.backend
globals().update(_email.settings)
ANYMAIL: dict[str, object] = dict(_email.anymail)
# ESP tracking webhooks (tracking.esp, docs/esp-webhooks.md), whatever EMAIL_URL sends through
# (the SMTP relays of SES, Mailgun and SendGrid report events too). anymail checks every request:
# WEBHOOK_SECRET is the "user:password" of the basic auth in the webhook URL (comma-separated
# while rotating; without it Funnelwerk refuses the webhooks); Mailgun also signs with its
# webhook signing key, SendGrid optionally with a public verification key.
ANYMAIL["WEBHOOK_SECRET"] = env_list("ANYMAIL_WEBHOOK_SECRET", [])
ANYMAIL["AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS"] = env_bool(
    "ANYMAIL_AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS", True
)
for _key in ("MAILGUN_WEBHOOK_SIGNING_KEY", "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"):
    # Only when given: an empty signing key would make anyone's signature valid.
    if env_str(f"ANYMAIL_{_key}"):
        ANYMAIL[_key] = env_str(f"ANYMAIL_{_key}")
    else:
        ANYMAIL.pop(_key, None)
# SES events come through SNS, which signs every message: tracking.sns checks the signature
# before anymail's view reads it (on top of the basic auth), with certificates only from these
# hosts. Off only for a relay that re-posts SNS messages unsigned.
SES_VERIFY_SNS_SIGNATURES = env_bool("SES_VERIFY_SNS_SIGNATURES", True)
SNS_SIGNING_CERT_HOSTS = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Funnelwerk <noreply@funnelwerk.local>")
# Complaint-rate guard (campaigns.complaints): pause a workspace's marketing mail above this
# rate of the last 24 hours (Gmail's 0.3 %), once at least this many mails were delivered.
COMPLAINT_RATE_LIMIT = float(env_str("COMPLAINT_RATE_LIMIT", "0.003"))
COMPLAINT_GUARD_MIN_DELIVERED = int(env_str("COMPLAINT_GUARD_MIN_DELIVERED", "200"))
SERVER_EMAIL = DEFAULT_FROM_EMAIL

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["core.api.permissions.HasWorkspaceApiKey"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.PageNumberPagination",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_RATES": {"api_key": env_str("API_RATE_LIMIT", "1200/min")},
    "DEFAULT_THROTTLE_CLASSES": ["core.api.throttling.ApiKeyRateThrottle"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Funnelwerk API",
    "DESCRIPTION": "The public REST contract of Funnelwerk (v1). Authenticate with "
    "`Authorization: Bearer <api key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "status"; each gets its own, stable enum name in the schema.
    "ENUM_NAME_OVERRIDES": {
        "ContactStatusEnum": "contacts.models.ContactStatus",
        "SubscriptionStatusEnum": "contacts.models.SubscriptionStatus",
        "ImportStatusEnum": "contacts.models.ImportStatus",
        "SequenceStatusEnum": "campaigns.models.SequenceStatus",
        "EnrollmentStatusEnum": "campaigns.models.EnrollmentStatus",
        "BroadcastStatusEnum": "campaigns.models.BroadcastStatus",
        "MessageStatusEnum": "campaigns.models.MessageStatus",
        "DeliveryStatusEnum": "funnel.models.DeliveryStatus",
        "LanguageEnum": "django.conf.settings.LANGUAGES",
    },
}

# Opens and clicks are buffered in a Redis stream and written in batches (tracking.buffer);
# without one (the embedded default) they are written in the request.
TRACKING_BUFFER_URL = env_str("TRACKING_BUFFER_URL", REDIS_URL or "")
TRACKING_STREAM = env_str("TRACKING_STREAM", "fw:tracking:hits")

# Celery: Redis in production; kombu's filesystem transport under var/ for the embedded default.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60 * 60}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "idempotency-records-purge": {"task": "core.idempotency_records_purge", "schedule": 3600.0},
    "confirmations-maintain": {"task": "contacts.confirmations_maintain", "schedule": 900.0},
    "import-files-purge": {"task": "contacts.import_files_purge", "schedule": 3600.0},
    "events-process-pending": {"task": "funnel.events_process_pending", "schedule": 60.0},
    "webhook-deliveries-due": {"task": "funnel.webhook_deliveries_due", "schedule": 30.0},
    "webhook-deliveries-purge": {"task": "funnel.webhook_deliveries_purge", "schedule": 3600.0},
    "campaigns-tick": {"task": "campaigns.tick", "schedule": 5.0},
    "campaigns-stalled-scan": {"task": "campaigns.stalled_scan", "schedule": 300.0},
    "campaigns-segment-scan": {"task": "campaigns.segment_scan", "schedule": 300.0},
    "messages-retry-due": {"task": "campaigns.messages_retry_due", "schedule": 30.0},
    "broadcasts-dispatch": {"task": "campaigns.broadcasts_dispatch", "schedule": 10.0},
    "broadcasts-ab-decide": {"task": "campaigns.broadcast_ab_decide", "schedule": 60.0},
    "messages-recover-stuck": {"task": "campaigns.messages_recover_stuck", "schedule": 60.0},
    "campaigns-step-webhooks-due": {"task": "campaigns.step_webhooks_due", "schedule": 30.0},
    "analytics-rollups-refresh": {"task": "analytics.rollups_refresh", "schedule": 5.0},
}
if TRACKING_BUFFER_URL:  # without a buffer, hits are written in the request
    CELERY_BEAT_SCHEDULE["tracking-hits-drain"] = {
        "task": "tracking.hits_drain",
        "schedule": 1.0,
        "options": {"expires": 5},
    }
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TASK_ALWAYS_EAGER = False

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
MEDIA_URL = "/media/"  # uploads are never served publicly; imports are read by the worker
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
DOUBLE_OPT_IN_LIFETIME_DAYS = env_int("DOUBLE_OPT_IN_LIFETIME_DAYS", 7)
DOUBLE_OPT_IN_REMINDER_AFTER_HOURS = env_int("DOUBLE_OPT_IN_REMINDER_AFTER_HOURS", 48)
CONFIRMATION_MAIL_INTERVAL_MINUTES = 10
SIGNUP_RATE_LIMIT_PER_IP = env_str("SIGNUP_RATE_LIMIT_PER_IP", "20/h")
NUM_PROXIES = env_int("NUM_PROXIES", 0)
IMPORT_FILE_RETENTION_DAYS = env_int("IMPORT_FILE_RETENTION_DAYS", 7)
# Tests only: lets webhooks go to http://127.0.0.1 (DESIGN: outgoing HTTP is https to public
# addresses only).
WEBHOOKS_ALLOW_INSECURE_LOOPBACK = False
