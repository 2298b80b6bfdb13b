"""Configuration from the environment (12-factor): the only place that reads os.environ."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import dj_database_url


class ConfigurationError(RuntimeError):
    """A variable in the environment has a value we cannot use."""


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer, not {value!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


@dataclass(frozen=True)
class EmailTransport:
    """Django settings for one EMAIL_URL."""

    backend: str
    settings: dict[str, Any] = field(default_factory=dict)
    anymail: dict[str, str] = field(default_factory=dict)


OUTBOX_BACKEND = "core.mail.OutboxEmailBackend"


def parse_database_url(url: str, **kwargs: Any) -> dict[str, Any]:
    """Django's database settings for DATABASE_URL (dj-database-url), with our connection
    options for PostgreSQL.

    PostgreSQL's planner assumes by default that a random read costs four sequential ones
    (spinning disks); on SSDs or a working set in memory it then scans a whole table to update
    a few hundred rows by primary key (the milestones of an ESP webhook batch: 9 ms instead of
    3 in bench/webhooks.py). Our connections say DATABASE_RANDOM_PAGE_COST, 1.1 unless set, as
    PostgreSQL's documentation suggests for SSDs; empty leaves the server's own setting (e.g.
    behind a pooler that refuses startup options). An `options` in the URL wins.
    """
    database: dict[str, Any] = dict(dj_database_url.parse(url, **kwargs))
    cost = env_str("DATABASE_RANDOM_PAGE_COST", "1.1")
    if cost and database["ENGINE"].endswith("postgresql"):
        database.setdefault("OPTIONS", {}).setdefault(
            "options", f"-c random_page_cost={float(cost)}"
        )
    return database


def parse_email_url(url: str, environ: dict[str, str] | None = None) -> EmailTransport:
    """Turn EMAIL_URL into an email backend and its settings.

    outbox://                      the local outbox (stored, shown in the UI, never sent)
    smtp://user:pass@host:port     plain SMTP (smtp+tls:// for STARTTLS, smtps:// for TLS)
    anymail://<esp>                django-anymail's backend for that ESP; its credentials come
                                   from ANYMAIL_* variables (ANYMAIL_SENDGRID_API_KEY, ...)
    """
    environ = dict(os.environ) if environ is None else environ
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "outbox":
        return EmailTransport(backend=OUTBOX_BACKEND)
    if scheme in {"smtp", "smtp+tls", "smtps"}:
        if not parts.hostname:
            raise ConfigurationError("EMAIL_URL for SMTP needs a host: smtp://user:pass@host:port")
        query = parse_qs(parts.query)
        default_port = {"smtp": 25, "smtp+tls": 587, "smtps": 465}[scheme]
        return EmailTransport(
            backend="core.smtp.SmtpEmailBackend",
            settings={
                "EMAIL_HOST": parts.hostname,
                "EMAIL_PORT": parts.port or default_port,
                "EMAIL_HOST_USER": unquote(parts.username or ""),
                "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
                "EMAIL_USE_TLS": scheme == "smtp+tls",
                "EMAIL_USE_SSL": scheme == "smtps",
                "EMAIL_TIMEOUT": int(query.get("timeout", ["30"])[0]),
            },
        )
    if scheme == "anymail":
        esp = (parts.hostname or parts.netloc).strip().lower()
        if not esp or not esp.replace("_", "").isalnum():
            raise ConfigurationError("EMAIL_URL for anymail names the ESP: anymail://sendgrid")
        anymail = {
            key.removeprefix("ANYMAIL_"): value
            for key, value in environ.items()
            if key.startswith("ANYMAIL_")
        }
        return EmailTransport(backend=f"anymail.backends.{esp}.EmailBackend", anymail=anymail)
    raise ConfigurationError(
        f"EMAIL_URL scheme {scheme!r} is not supported: use outbox://, smtp://, smtp+tls://, "
        "smtps:// or anymail://<esp>"
    )
