"""Amazon SNS message signatures, checked before anymail's SES webhook reads a message.

anymail accepts SES events on the strength of the webhook URL's basic auth alone. SNS also
signs every message it posts (notifications and subscription confirmations) with a key whose
certificate it publishes at an amazonaws.com URL named in the message
(https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html). Checking
that signature as well means a leaked basic-auth secret is not enough to forge bounces or
complaints, which suppress contacts and can pause a workspace's sending.

A message passes when: its Type is one SNS signs, its SignatureVersion is 1 (SHA1withRSA) or 2
(SHA256withRSA), its SigningCertURL is https on an SNS host of AWS (SNS_SIGNING_CERT_HOSTS) and
ends in .pem, that certificate is current, and the signature over the message's canonical
string verifies with it. Certificates are fetched through funnel.outbound_http (public
addresses, timeouts, no redirects) and cached for a day. Turned off with
SES_VERIFY_SNS_SIGNATURES=false (for a relay that re-posts SNS messages unsigned).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.core.cache import cache

from funnel import outbound_http

logger = logging.getLogger(__name__)

CERT_CACHE_SECONDS = 24 * 60 * 60
# The fields each message type's signature covers, in the order SNS signs them.
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_OPTIONAL_FIELDS = frozenset({"Subject"})
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


def sns_signature_valid(body: bytes) -> bool:
    """Whether `body` is an SNS message with a valid signature (see the module docstring)."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(message, dict):
        return False
    fields = _SIGNED_FIELDS.get(str(message.get("Type")))
    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    if fields is None or algorithm is None:
        return False
    canonical = _canonical(message, fields)
    if canonical is None:
        return False
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError):
        return False
    certificate = _signing_certificate(message.get("SigningCertURL"))
    if certificate is None:
        return False
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, canonical, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        return False
    return True


def _canonical(message: dict[str, Any], fields: tuple[str, ...]) -> bytes | None:
    """The string SNS signs: "name\\nvalue\\n" for each signed field present (all but Subject
    must be), in order; None when one is missing or not a string."""
    parts = []
    for name in fields:
        value = message.get(name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            return None
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def signing_cert_url_allowed(url: object) -> bool:
    """An https URL of a .pem file on an SNS host of AWS (settings.SNS_SIGNING_CERT_HOSTS)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    scheme_ok = parts.scheme == "https" or (
        parts.scheme == "http" and outbound_http.allow_insecure_loopback()
    )
    return (
        scheme_ok
        and re.fullmatch(settings.SNS_SIGNING_CERT_HOSTS, host) is not None
        and parts.path.endswith(".pem")
        and not parts.query
        and parts.username is None
    )


def _signing_certificate(url: object) -> x509.Certificate | None:
    if not signing_cert_url_allowed(url):
        logger.warning("SNS message refused: its SigningCertURL is not an SNS host of AWS")
        return None
    assert isinstance(url, str)
    key = f"funnelwerk:sns-cert:{hashlib.sha256(url.encode()).hexdigest()}"
    pem = cache.get(key)
    fetched = pem is None
    if fetched:
        result = outbound_http.get(url)
        if not result.ok:
            logger.warning("SNS signing certificate not fetched: %s", result.error)
            return None
        pem = result.content
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        logger.warning("SNS signing certificate at %s is not a PEM certificate", url)
        return None
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        logger.warning("SNS signing certificate at %s is not valid now", url)
        return None
    if fetched:
        cache.set(key, pem, CERT_CACHE_SECONDS)
    return certificate


__all__ = ["signing_cert_url_allowed", "sns_signature_valid"]
