"""A contact's timeline: events, stage moves, mails and their activity, newest first.

Contacts knows nothing of funnels or mails; the apps above register a source each (from
AppConfig.ready()), which returns TimelineItems for one contact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contacts.models import ConsentRecord, Contact


@dataclass(frozen=True)
class TimelineItem:
    at: datetime
    kind: str  # "event", "stage_change", "consent", "message", "email_activity", ...
    title: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "title": self.title, **self.detail}


CAUSAL_ORDER = {"consent": 0, "event": 1, "message": 1, "email_activity": 2, "stage_change": 2}

TimelineSource = Callable[[Contact, int], list[TimelineItem]]
_sources: dict[str, TimelineSource] = {}


def register_timeline_source(name: str, source: TimelineSource) -> None:
    """`source(contact, limit)` returns at most `limit` of the contact's newest items."""
    _sources[name] = source


def _consents(contact: Contact, limit: int) -> list[TimelineItem]:
    records = ConsentRecord.objects.filter(contact=contact).select_related("mailing_list")[:limit]
    return [
        TimelineItem(
            at=record.occurred_at,
            kind="consent",
            title=record.get_kind_display(),
            detail={
                "consent_kind": record.kind,
                "list": record.mailing_list.name if record.mailing_list else None,
            },
        )
        for record in records
    ]


def contact_timeline(contact: Contact, *, limit: int = 200) -> list[TimelineItem]:
    """The newest `limit` items from every source, newest first."""
    items = _consents(contact, limit)
    for source in _sources.values():
        items.extend(source(contact, limit))
    # At the same instant, what something caused is listed above its cause (newest first):
    # a stage move above the event that triggered it.
    items.sort(key=lambda item: (item.at, CAUSAL_ORDER.get(item.kind, 1)), reverse=True)
    return items[:limit]
