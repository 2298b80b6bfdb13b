"""Tracking links: the signed tokens of the open pixel (/t/o/) and the click redirect (/t/c/).

One place for the token format, used by the send path (building links) and by the tracking app
(reading them). A token is the payload and a 128-bit MAC of it, base64url-encoded:

    payload = kind "\\n" ref "\\n" link index "\\n" URL      (UTF-8)

- kind: "o" open pixel, "c" click, "t" the hidden trap link (a person never sees it, scanners
  follow it);
- ref: "m" + message id (personal tracking) or, in the anonymous mode, the mail's source without
  any contact: "b" + broadcast id + "." + variant, or "s" + sequence id + "." + variant + "." +
  step key;
- the URL is what was in the mail, so the redirect target comes from what was sent and never
  from the request: the signature covers it, a changed byte gives 404.

The MAC is keyed BLAKE2b (RFC 7693's keyed mode, a MAC by design) with a 16-byte digest: the
send path makes one per link per recipient, and from a keyed state prepared once it costs a
quarter of an HMAC-SHA256 (bench/render.py). Tokens of mails sent before it came (v1:
HMAC-SHA256, truncated to 16 bytes) stay valid: reading tries the v2 MAC, then v1. Each key is
derived from SECRET_KEY with a salt of its own (core.tokens.signing_key, Django's signing
derivation), so no other token of ours is valid here and vice versa.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings

from core.tokens import signing_key

SALT = "funnelwerk.tracking.v2"
SALT_V1 = "funnelwerk.tracking.v1"
MAC_BYTES = 16
OPEN, CLICK, TRAP = "o", "c", "t"
_KINDS = frozenset((OPEN, CLICK, TRAP))
MAX_TOKEN_LENGTH = 8192


@functools.lru_cache(maxsize=4)
def _keyed_state(secret: str) -> Any:
    """The keyed BLAKE2b state of SECRET_KEY: each MAC copies it and hashes its payload."""
    return hashlib.blake2b(key=signing_key(SALT, secret), digest_size=MAC_BYTES)


def _mac(payload: bytes) -> bytes:
    state = _keyed_state(settings.SECRET_KEY).copy()
    state.update(payload)
    return state.digest()


def _mac_v1(payload: bytes) -> bytes:
    return hmac.digest(signing_key(SALT_V1, settings.SECRET_KEY), payload, "sha256")[:MAC_BYTES]


@dataclass(frozen=True, slots=True)
class Source:
    """Where an anonymous mail came from: a broadcast's variant or a sequence step's variant."""

    broadcast_id: uuid.UUID | None = None
    sequence_id: uuid.UUID | None = None
    step_key: str = ""
    variant: int = 0

    def ref(self) -> str:
        if self.broadcast_id is not None:
            return f"b{self.broadcast_id.hex}.{self.variant}"
        return f"s{self.sequence_id.hex if self.sequence_id else ''}.{self.variant}.{self.step_key}"


@dataclass(frozen=True, slots=True)
class TrackingToken:
    kind: str
    message_id: uuid.UUID | None
    source: Source | None
    link_index: int | None
    url: str


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _token(keyed: Any, payload: bytes) -> str:
    # base64url without padding; b2a_base64 + translate is the fast path of urlsafe_b64encode.
    state = keyed.copy()
    state.update(payload)
    return (
        binascii.b2a_base64(payload + state.digest(), newline=False)
        .translate(_URLSAFE)
        .rstrip(b"=")
        .decode()
    )


def _encode(kind: str, ref: str, link_index: int | None, url: str) -> str:
    index = "" if link_index is None else str(link_index)
    return _token(_keyed_state(settings.SECRET_KEY), f"{kind}\n{ref}\n{index}\n{url}".encode())


def _parse_ref(ref: str) -> tuple[uuid.UUID | None, Source | None]:
    if ref.startswith("m"):
        return uuid.UUID(hex=ref[1:]), None
    if ref.startswith("b"):
        broadcast, variant = ref[1:].split(".", 1)
        return None, Source(broadcast_id=uuid.UUID(hex=broadcast), variant=int(variant))
    if ref.startswith("s"):
        sequence, variant, step_key = ref[1:].split(".", 2)
        return None, Source(
            sequence_id=uuid.UUID(hex=sequence), variant=int(variant), step_key=step_key
        )
    raise ValueError("unknown reference")


def token_read(token: str) -> TrackingToken | None:
    """The token's content if the signature holds, else None (tampered, truncated, unknown)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) <= MAC_BYTES:
        return None
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not (hmac.compare_digest(mac, _mac(payload)) or hmac.compare_digest(mac, _mac_v1(payload))):
        return None
    try:
        kind, ref, index, url = payload.decode().split("\n", 3)
        message_id, source = _parse_ref(ref)
        link_index = int(index) if index else None
    except (UnicodeDecodeError, ValueError):
        return None
    if kind not in _KINDS:
        return None
    return TrackingToken(kind, message_id, source, link_index, url)


def with_utm(url: str, utm: dict[str, str] | None) -> str:
    """`url` with the UTM parameters added that it does not carry yet (the marketer's own
    query string is kept as written)."""
    if not utm:
        return url
    return _with_utm(url, tuple(utm.items()))


@functools.lru_cache(maxsize=4096)
def _with_utm(url: str, utm: tuple[tuple[str, str], ...]) -> str:
    # Cached: the links of a template repeat for every recipient, parsing them does not.
    parts = urlsplit(url)
    present = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    extra = [(name, value) for name, value in utm if value and name not in present]
    if not extra:
        return url
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True, slots=True)
class MailTracking:
    """What the send path puts into one mail: a link rewriter, the pixel and the trap link.
    Any of them may be None (tracking off, or opens/clicks switched off)."""

    link_rewriter: Callable[[str, int], str] | None
    pixel_url: str | None
    trap_url: str | None


def mail_tracking(
    *,
    mode: str,
    track_opens: bool,
    track_clicks: bool,
    message_id: uuid.UUID,
    source: Source,
    utm: dict[str, str] | None,
) -> MailTracking:
    """The tracking of one mail for the workspace's tracking mode (core.models.TrackingMode):
    personal tokens name the message, anonymous ones only the source; "off" rewrites nothing
    (UTM parameters, the marketer's own content, are added in every mode)."""
    base = settings.PUBLIC_BASE_URL
    keyed = _keyed_state(settings.SECRET_KEY)
    clicks = mode != "off" and track_clicks
    opens = mode != "off" and track_opens
    ref = f"m{message_id.hex}" if mode == "personal" else source.ref()
    utm_items = tuple(utm.items()) if utm else ()
    click_base = f"{base}/t/c/"
    prefix = f"{CLICK}\n{ref}\n".encode()

    b2a_base64, urlsafe = binascii.b2a_base64, _URLSAFE

    def rewrite(url: str, position: int) -> str:
        # Runs for every link of every mail (bench/render.py): the prefix, key and UTM parsing
        # are prepared once per mail, and _token is written out here.
        target = _with_utm(url, utm_items) if utm_items else url
        if not clicks:
            return target
        payload = prefix + f"{position}\n{target}".encode()
        state = keyed.copy()
        state.update(payload)
        token = b2a_base64(payload + state.digest(), newline=False).translate(urlsafe)
        return click_base + token.rstrip(b"=").decode()

    return MailTracking(
        link_rewriter=rewrite if (clicks or utm) else None,
        pixel_url=f"{base}/t/o/{_encode(OPEN, ref, None, '')}" if opens else None,
        trap_url=f"{base}/t/c/{_encode(TRAP, ref, None, '')}" if clicks else None,
    )


UTM_NAMES = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def validate_utm(value: object) -> dict[str, str]:
    """{"utm_source": ..., ...}: only the five UTM names, short strings. Raises
    ApplicationError naming the field "utm"."""
    from django.utils.translation import gettext as _

    from core.exceptions import ApplicationError

    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ApplicationError(_("Give UTM parameters as an object."), field="utm")
    cleaned: dict[str, str] = {}
    for name, text in value.items():
        if name not in UTM_NAMES:
            raise ApplicationError(
                _("Unknown UTM parameter %(name)s; use %(names)s.")
                % {"name": name, "names": ", ".join(UTM_NAMES)},
                field="utm",
            )
        if not isinstance(text, str) or len(text) > 200:
            raise ApplicationError(
                _("UTM values are texts of at most 200 characters."), field="utm"
            )
        if text.strip():
            cleaned[name] = text.strip()
    return cleaned
