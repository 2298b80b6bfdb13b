"""What the tracking app plugs into the contacts app: each open, click and mail-service report
on the contact's timeline and in the GDPR export, machines labelled as such.

campaigns shows the mails themselves; the activity on them is ours (one place for it).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from contacts.gdpr import register_export_section
from contacts.models import Contact
from contacts.timeline import TimelineItem, register_timeline_source
from tracking.models import Activity, ActivityKind, Actor


def activity_title(activity: Activity, subject: str) -> str:
    """A line for people: what happened, who did it (a person or a machine), on which mail."""
    if activity.kind == ActivityKind.OPEN:
        what = _("Machine open") if activity.actor == Actor.MACHINE else _("Opened")
    elif activity.kind == ActivityKind.CLICK:
        what = _("Bot click") if activity.actor == Actor.BOT else _("Clicked")
    else:
        what = str(ActivityKind(activity.kind).label)
    return f"{what}: {subject}"


def activity_json(activity: Activity) -> dict[str, Any]:
    return {
        "kind": activity.kind,
        "actor": activity.actor,
        "reason": activity.reason,
        "at": activity.occurred_at.isoformat(),
        "url": activity.url or None,
        "origin": activity.origin,
        "detail": activity.detail or None,
    }


def _activities(contact: Contact) -> Any:
    return (
        Activity.objects.filter(message__contact=contact)
        .select_related("message")
        .order_by("-occurred_at")
    )


def timeline_items(contact: Contact, limit: int) -> list[TimelineItem]:
    items = []
    for activity in _activities(contact)[:limit]:
        assert activity.message is not None
        detail: dict[str, Any] = {
            "message": str(activity.message_id),
            "activity": activity.kind,
            "actor": activity.actor,
        }
        if activity.url:
            detail["url"] = activity.url
        if activity.detail:
            detail["detail"] = activity.detail
        items.append(
            TimelineItem(
                at=activity.occurred_at,
                kind="email_activity",
                title=activity_title(activity, activity.message.subject),
                detail=detail,
            )
        )
    return items


def export_activity(contact: Contact) -> list[dict[str, Any]]:
    return [
        {
            "message": str(activity.message_id),
            **activity_json(activity),
            "ip": activity.ip,
            "user_agent": activity.user_agent,
        }
        for activity in _activities(contact).reverse()
    ]


def register() -> None:
    register_timeline_source("tracking", timeline_items)
    register_export_section("email_activity", export_activity)
