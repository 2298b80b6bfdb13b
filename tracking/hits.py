"""A hit: one fetch of the open pixel or of a click redirect, as the hot path saw it.

Hits travel through the buffer (tracking.buffer) as compact JSON and become Activity rows in
the writer (tracking.ingest). They carry only what the request and the signed token said; what
needs the database (the message's send time, the other clicks of the mail) is looked at by the
writer.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from campaigns.tracking_links import Source

OPEN, CLICK, TRAP = "open", "click", "trap"
USER_AGENT_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Hit:
    key: str
    kind: str
    message_id: uuid.UUID | None
    source: Source | None
    link_index: int | None
    url: str
    occurred_at: datetime
    user_agent: str
    ip: str
    method: str
    origin: str
    # The mail service that reported it (origin "esp"), e.g. "sendgrid".
    esp: str = ""

    def dumps(self) -> str:
        source = self.source
        return json.dumps(
            [
                self.key,
                self.kind,
                self.message_id.hex if self.message_id else None,
                [
                    source.broadcast_id.hex if source.broadcast_id else None,
                    source.sequence_id.hex if source.sequence_id else None,
                    source.step_key,
                    source.variant,
                ]
                if source
                else None,
                self.link_index,
                self.url,
                self.occurred_at.timestamp(),
                self.user_agent,
                self.ip,
                self.method,
                self.origin,
                self.esp,
            ],
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str | bytes) -> Hit:
        key, kind, message, source, index, url, at, agent, ip, method, origin, *rest = json.loads(
            text
        )
        return cls(
            key=key,
            kind=kind,
            message_id=uuid.UUID(hex=message) if message else None,
            source=Source(
                broadcast_id=uuid.UUID(hex=source[0]) if source[0] else None,
                sequence_id=uuid.UUID(hex=source[1]) if source[1] else None,
                step_key=source[2],
                variant=source[3],
            )
            if source
            else None,
            link_index=index,
            url=url,
            occurred_at=datetime.fromtimestamp(at, tz=UTC),
            user_agent=agent,
            ip=ip,
            method=method,
            origin=origin,
            esp=rest[0] if rest else "",
        )


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# A dotted IPv4 address as ipaddress accepts it (no leading zeros).
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def truncate_ip(address: str | None) -> str:
    """The address with its host part cut off (/24 for IPv4, /48 for IPv6): enough to tell a
    provider's proxy range, not enough to single out a person."""
    if not address:
        return ""
    if match := _IPV4.fullmatch(address):
        # The common case without building an address object (a tenth of the time).
        return f"{match[1]}.{match[2]}.{match[3]}.0"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)
