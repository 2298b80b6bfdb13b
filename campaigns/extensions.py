"""What the campaigns app plugs into the contacts app: mails on the timeline and in the GDPR
export, and the segment conditions {"opened": "P30D"} and {"clicked": "P30D"}.

Opens and clicks are the human ones: the tracking app records machine opens and scanner clicks
apart and never sets Message.opened_at / clicked_at for them (DESIGN: rates and segments use
human activity only).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils import timezone

from campaigns.models import Message
from contacts.gdpr import register_export_section
from contacts.models import Contact
from contacts.segments import register_condition
from contacts.timeline import TimelineItem, register_timeline_source
from core.durations import parse_duration
from core.models import Workspace

MILESTONES = ("sent", "delivered", "opened", "clicked", "bounced", "complained", "unsubscribed")


def _activity_condition(field: str) -> Any:
    def compile_condition(workspace: Workspace, condition: dict[str, Any]) -> Q:
        key = next(iter(condition))
        since = timezone.now() - parse_duration(condition[key])
        messages = Message.objects.filter(workspace=workspace, **{f"{field}__gte": since})
        return Q(pk__in=messages.values("contact_id"))

    return compile_condition


def timeline_items(contact: Contact, limit: int) -> list[TimelineItem]:
    items: list[TimelineItem] = []
    messages = Message.objects.filter(contact=contact).order_by("-created_at")[:limit]
    for message in messages:
        detail = {"message": str(message.pk), "status": message.status}
        items.append(
            TimelineItem(
                at=message.sent_at or message.created_at,
                kind="message",
                title=message.subject,
                detail={**detail, "error": message.error} if message.error else detail,
            )
        )
    # What happened to each mail (opens, clicks, bounces) is the tracking app's timeline source.
    return items


def export_messages(contact: Contact) -> list[dict[str, Any]]:
    return [
        {
            "subject": message.subject,
            "status": message.status,
            "sequence_step": message.step_key or None,
            **{
                f"{milestone}_at": (
                    getattr(message, f"{milestone}_at").isoformat()
                    if getattr(message, f"{milestone}_at")
                    else None
                )
                for milestone in MILESTONES
            },
        }
        for message in Message.objects.filter(contact=contact).order_by("created_at")
    ]


def register() -> None:
    register_condition("opened", _activity_condition("opened_at"))
    register_condition("clicked", _activity_condition("clicked_at"))
    register_timeline_source("campaigns", timeline_items)
    register_export_section("messages", export_messages)
