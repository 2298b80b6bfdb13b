"""An HTTP client for calling URLs from outside (outgoing webhooks to URLs users typed in, the
certificates of signed inbound messages), safe against SSRF.

The host name is resolved once, every address it resolves to must be public (ip.is_global), and
the connection is then made to that vetted address itself, with the name kept for TLS (SNI and
certificate check) and the Host header. A DNS answer that changes between the check and the
connection (DNS rebinding) therefore cannot send us to 127.0.0.1 or 169.254.169.254.
Redirects are never followed: a 3xx is a failure. Only https, except for loopback http in tests
(settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK).
"""

from __future__ import annotations

import ipaddress
import socket
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from django.utils.translation import gettext as _

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_LENGTH = 500
_READ_CHUNK = 8 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(Exception):
    """The URL may not be called: wrong scheme, malformed, or an address that is not public."""


@dataclass(frozen=True)
class HttpResult:
    """What came back from one request. status_code is None when no HTTP answer arrived;
    `content` is the body as received (up to 64 KiB), `excerpt` the part safe to show."""

    status_code: int | None
    excerpt: str = ""
    error: str = ""
    duration_ms: int = 0
    content: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300 and not self.error


def allow_insecure_loopback() -> bool:
    """Tests only: allow http:// and loopback addresses so a local receiver can be used."""
    return bool(getattr(settings, "WEBHOOKS_ALLOW_INSECURE_LOOPBACK", False))


def address_is_allowed(address: IPAddress) -> bool:
    """Public addresses only (plus loopback when the test setting allows it)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_global:
        return True
    return address.is_loopback and allow_insecure_loopback()


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str


def check_url(url: str) -> _Target:
    """Check what can be checked without DNS: scheme, shape, and a literal IP address.

    Raises UnsafeUrl with a message a person can read.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(_("This is not a valid URL.")) from exc
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("https", "http") or not host:
        raise UnsafeUrl(_("Use an https:// URL."))
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl(_("Credentials in the URL are not supported; verify the signature."))
    literal = _literal_address(host)
    if scheme == "http" and not (
        allow_insecure_loopback() and literal is not None and literal.is_loopback
    ):
        raise UnsafeUrl(_("Use an https:// URL."))
    if literal is not None and not address_is_allowed(literal):
        raise UnsafeUrl(_("%(address)s is not a public address.") % {"address": literal.compressed})
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _Target(
        scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), path=path
    )


def resolve_public(host: str, port: int) -> IPAddress:
    """The address to connect to. Every address the name resolves to must be allowed: one bad
    answer among good ones may be the one an attacker wants us to pick next time."""
    literal = _literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise UnsafeUrl(_("The host name %(host)s does not resolve.") % {"host": host}) from exc
        addresses = []
        for info in infos:
            # sockaddr[0] may carry an IPv6 zone ("fe80::1%eth0"); the zone is not part of it.
            raw = str(info[4][0]).split("%", 1)[0]
            addresses.append(ipaddress.ip_address(raw))
    if not addresses:
        raise UnsafeUrl(_("The host name %(host)s does not resolve.") % {"host": host})
    for address in addresses:
        if not address_is_allowed(address):
            raise UnsafeUrl(
                _("%(host)s resolves to %(address)s, which is not a public address.")
                % {"host": host, "address": address.compressed}
            )
    return addresses[0]


def clean_excerpt(raw: bytes) -> str:
    """At most 500 characters of the response, decoded leniently, without control characters
    (so a response cannot fake lines in a log or carry terminal escapes)."""
    text = raw.decode("utf-8", errors="replace")
    text = "".join(
        " " if char in "\r\n\t" else char
        for char in text
        if char in "\r\n\t" or unicodedata.category(char)[0] != "C"
    )
    return " ".join(text.split())[:EXCERPT_LENGTH]


def _host_header(target: _Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def post(url: str, *, body: bytes, headers: Mapping[str, str]) -> HttpResult:
    """POST `body` to `url` with the SSRF rules above. Never raises for network trouble: the
    result carries the error. Timeouts: 5 s to connect, 10 s per read and for the whole
    response body, which is read up to 64 KiB."""
    return _request("POST", url, body=body, headers=headers)


def get(url: str, *, headers: Mapping[str, str] | None = None) -> HttpResult:
    """GET `url` with the same rules, timeouts and limits as post."""
    return _request("GET", url, body=None, headers=headers or {})


def _request(
    method: str, url: str, *, body: bytes | None, headers: Mapping[str, str]
) -> HttpResult:
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = check_url(url)
        address = resolve_public(target.host, target.port)
    except UnsafeUrl as exc:
        return HttpResult(
            status_code=None, error=_("Refused: %(reason)s") % {"reason": exc}, duration_ms=0
        )

    timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            host=address.compressed,
            port=target.port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            host=address.compressed, port=target.port, timeout=timeout, retries=False, maxsize=1
        )
    request_headers = {**headers, "Host": _host_header(target)}
    try:
        response = pool.urlopen(
            method,
            target.path,
            body=body,
            headers=request_headers,
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            received = bytearray()
            deadline = time.monotonic() + READ_TIMEOUT
            while len(received) < MAX_RESPONSE_BYTES and time.monotonic() < deadline:
                chunk = response.read(min(_READ_CHUNK, MAX_RESPONSE_BYTES - len(received)))
                if not chunk:
                    break
                received += chunk
        finally:
            response.close()
    except urllib3.exceptions.ConnectTimeoutError:
        return HttpResult(
            status_code=None, error=_("Connection timed out."), duration_ms=elapsed_ms()
        )
    except urllib3.exceptions.ReadTimeoutError:
        return HttpResult(
            status_code=None, error=_("No answer within 10 seconds."), duration_ms=elapsed_ms()
        )
    except urllib3.exceptions.SSLError as exc:
        return HttpResult(
            status_code=None,
            error=_("TLS failed: %(reason)s") % {"reason": _short(exc)},
            duration_ms=elapsed_ms(),
        )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return HttpResult(
            status_code=None,
            error=_("Connection failed: %(reason)s") % {"reason": _short(exc)},
            duration_ms=elapsed_ms(),
        )
    finally:
        pool.close()
    status_code = response.status
    error = ""
    if 300 <= status_code < 400:
        error = _("Answered with a redirect (%(status)d); redirects are not followed.") % {
            "status": status_code
        }
    elif not 200 <= status_code < 300:
        error = _("Answered with HTTP %(status)d.") % {"status": status_code}
    return HttpResult(
        status_code=status_code,
        excerpt=clean_excerpt(bytes(received)),
        error=error,
        duration_ms=elapsed_ms(),
        content=bytes(received),
    )


def _short(exc: BaseException) -> str:
    return clean_excerpt(str(exc).encode())[:300]
