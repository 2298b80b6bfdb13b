"""Signed tokens: one salt per purpose, so a token made for one link is useless at another."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import time
from datetime import timedelta

from django.conf import settings
from django.core import signing


class TokenPurpose:
    INVITATION = "funnelwerk.core.invitation"
    CONFIRM = "funnelwerk.contacts.confirm"
    UNSUBSCRIBE = "funnelwerk.contacts.unsubscribe"


@functools.lru_cache(maxsize=32)
def signing_key(salt: str, secret: str) -> bytes:
    """The key django.core.signing derives for a salt (salted_hmac(salt + "signer", ...,
    secret)), computed once per salt and secret. Our tokens of every kind use it, each with a
    salt of its own."""
    return hashlib.sha256(f"{salt}signer{secret}".encode()).digest()


def token_make(*, purpose: str, value: str) -> str:
    """`value` signed for `purpose`: the very token django.core.signing.dumps(value,
    salt=purpose) makes (a test holds the two together; token_read is Django's), with the key
    derived once per purpose instead of per token. The send path makes one per mail (the
    unsubscribe link): a third of the time."""
    data = signing.b64_encode(json.dumps(value, separators=(",", ":")).encode("latin-1"))
    signed = f"{data.decode()}:{signing.b62_encode(int(time.time()))}"
    digest = hmac.digest(signing_key(purpose, settings.SECRET_KEY), signed.encode(), "sha256")
    return f"{signed}:{signing.b64_encode(digest).decode()}"


def token_read(*, purpose: str, token: str, max_age: timedelta | None = None) -> str | None:
    """The value signed into `token`, or None for a tampered, foreign or expired token."""
    try:
        value = signing.loads(token, salt=purpose, max_age=max_age)
    except signing.BadSignature:
        return None
    return value if isinstance(value, str) else None
