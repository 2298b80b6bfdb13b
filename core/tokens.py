"""Signed tokens: one salt per purpose, so a token made for one link is useless at another."""

from __future__ import annotations

from datetime import timedelta

from django.core import signing


class TokenPurpose:
    INVITATION = "funnelwerk.core.invitation"
    CONFIRM = "funnelwerk.contacts.confirm"
    UNSUBSCRIBE = "funnelwerk.contacts.unsubscribe"


def token_make(*, purpose: str, value: str) -> str:
    return signing.dumps(value, salt=purpose, compress=False)


def token_read(*, purpose: str, token: str, max_age: timedelta | None = None) -> str | None:
    """The value signed into `token`, or None for a tampered, foreign or expired token."""
    try:
        value = signing.loads(token, salt=purpose, max_age=max_age)
    except signing.BadSignature:
        return None
    return value if isinstance(value, str) else None
