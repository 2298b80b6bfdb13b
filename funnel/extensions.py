"""What the funnel app plugs into the contacts app (registered in FunnelConfig.ready)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from contacts.gdpr import register_export_section
from contacts.models import Contact
from contacts.segments import register_condition, segment_duration
from contacts.selectors import register_stages_provider
from contacts.timeline import TimelineItem, register_timeline_source
from core.models import Workspace
from funnel.models import ContactStage, Event, StageTransition
from funnel.selectors import contact_stage_map


def stage_condition(workspace: Workspace, condition: dict[str, Any]) -> Q:
    in_stage = ContactStage.objects.filter(
        stage_id=condition["stage"], funnel__workspace=workspace
    ).values("contact_id")
    return Q(pk__in=in_stage)


def event_condition(workspace: Workspace, condition: dict[str, Any]) -> Q:
    events = Event.objects.filter(workspace=workspace, name=condition["event"])
    if condition.get("within"):
        events = events.filter(
            occurred_at__gte=timezone.now() - segment_duration(condition["within"])
        )
    return Q(pk__in=events.values("contact_id"))


def export_events(contact: Contact) -> list[dict[str, Any]]:
    return [
        {
            "name": event.name,
            "occurred_at": event.occurred_at.isoformat(),
            "properties": event.properties,
            "value": None if event.value is None else str(event.value),
            "currency": event.currency,
            "source": event.source,
            "channel": event.channel,
        }
        for event in Event.objects.filter(contact=contact).order_by("occurred_at")
    ]


def export_stage_history(contact: Contact) -> list[dict[str, Any]]:
    transitions = StageTransition.objects.filter(contact=contact).select_related(
        "funnel", "from_stage", "to_stage"
    )
    return [
        {
            "funnel": transition.funnel.name,
            "from": transition.from_stage.name if transition.from_stage else None,
            "to": transition.to_stage.name,
            "at": transition.occurred_at.isoformat(),
            "cause": transition.cause,
        }
        for transition in transitions.order_by("occurred_at")
    ]


def timeline_items(contact: Contact, limit: int) -> list[TimelineItem]:
    items = [
        TimelineItem(
            at=event.occurred_at,
            kind="event",
            title=event.name,
            detail={
                "event": str(event.pk),
                "value": None if event.value is None else str(event.value),
                "currency": event.currency,
                "source": event.source,
                "properties": event.properties,
            },
        )
        for event in Event.objects.filter(contact=contact).order_by("-occurred_at")[:limit]
    ]
    transitions = (
        StageTransition.objects.filter(contact=contact)
        .select_related("funnel", "from_stage", "to_stage")
        .order_by("-occurred_at")[:limit]
    )
    items += [
        TimelineItem(
            at=transition.occurred_at,
            kind="stage_change",
            title=_("%(funnel)s: %(from)s → %(to)s")
            % {
                "funnel": transition.funnel.name,
                "from": transition.from_stage.name if transition.from_stage else _("(entered)"),
                "to": transition.to_stage.name,
            },
            detail={
                "funnel": str(transition.funnel_id),
                "from_stage": str(transition.from_stage_id) if transition.from_stage_id else None,
                "to_stage": str(transition.to_stage_id),
                "cause": transition.cause,
                "cause_detail": transition.cause_detail,
                "reason": transition.reason,
            },
        )
        for transition in transitions
    ]
    return items


def register() -> None:
    register_condition("stage", stage_condition)
    register_condition("event", event_condition)
    register_stages_provider(lambda contact_ids: contact_stage_map(contact_ids=contact_ids))
    register_export_section("events", export_events)
    register_export_section("stage_history", export_stage_history)
    register_timeline_source("funnel", timeline_items)
