"""Receivers: what campaigns does when the apps below announce something.

Connected in CampaignsConfig.ready() (dispatch_uid makes connecting twice harmless). Each
runs inside the transaction that sent the signal, so the sequence's reaction commits or rolls
back with its cause; tasks are scheduled on commit by the engine.
"""

from __future__ import annotations

from typing import Any

from campaigns import engine
from campaigns import signals as campaign_signals
from campaigns.milestones import message_workspaces
from contacts import signals as contact_signals
from funnel import signals as funnel_signals


def on_contact_unsubscribed(sender: Any, *, contact_ids: list[str], **kwargs: Any) -> None:
    """Unsubscribed, bounced, complained or erased: stop everything at once."""
    engine.enrollments_end_for_contacts(contact_ids=contact_ids, reason="unsubscribed")


def on_contact_subscribed(sender: Any, *, contact_id: str, **kwargs: Any) -> None:
    """A double opt-in confirmation starts the sequences triggered by the confirmed lists."""
    from contacts.models import Contact

    contact = Contact.objects.filter(pk=contact_id).first()
    if contact is None:
        return
    list_ids = engine.lists_just_confirmed(contact)
    if list_ids:
        engine.enroll_on_list_confirmed(contact, list_ids)


def on_event_recorded(
    sender: Any, *, workspace_id: str, event_id: str, contact_id: str, name: str, **kwargs: Any
) -> None:
    """Goals first (a converted run does not react), then waiting runs, then triggers."""
    from funnel.models import Event

    engine.goals_on_event(workspace_id=workspace_id, contact_id=contact_id, name=name)
    engine.reactions_on_event(contact_id=contact_id, name=name)
    event = Event.objects.select_related("contact").filter(pk=event_id).first()
    if event is not None:
        engine.enroll_on_event(event)


def on_stage_changed(
    sender: Any,
    *,
    funnel_id: str,
    contact_id: str,
    to_stage_id: str,
    **kwargs: Any,
) -> None:
    """Wake runs waiting for this stage, then start the sequences triggered by entering it."""
    from contacts.models import Contact
    from funnel.models import Stage

    engine.reactions_on_stage(contact_id=contact_id, stage_id=to_stage_id)
    stage = Stage.objects.select_related("funnel").filter(pk=to_stage_id).first()
    contact = Contact.objects.filter(pk=contact_id).first()
    if stage is not None and contact is not None:
        engine.enroll_on_stage_entered(contact, stage.funnel, stage)


# Message milestones as outgoing webhook events (API.md: message.*).
MILESTONE_WEBHOOKS = {
    "sent": "message.sent",
    "delivered": "message.delivered",
    "opened": "message.opened",
    "clicked": "message.clicked",
    "bounced": "message.bounced",
    "complained": "message.complained",
}


def on_message_complaints(
    sender: Any, *, milestone: str, message_ids: list[str], **kwargs: Any
) -> None:
    """A complaint runs the complaint-rate guard of its workspace (which may pause its
    sending), whatever webhooks the workspace has."""
    from campaigns.complaints import complaint_guard

    if milestone != "complained" or not message_ids:
        return
    for workspace_id in set(message_workspaces(message_ids).values()):
        complaint_guard(workspace_id)


def on_message_milestones(
    sender: Any, *, milestone: str, message_ids: list[str], **kwargs: Any
) -> None:
    """The workspace's webhook endpoints hear of sends, deliveries, human opens and clicks,
    bounces and complaints (machine opens and bot clicks are no milestone of these)."""
    from campaigns.models import Message
    from funnel.webhooks import webhooks_enqueue, workspaces_wanting

    event_type = MILESTONE_WEBHOOKS.get(milestone)
    if event_type is None or not message_ids:
        return
    wanting = workspaces_wanting(event_type)
    if not wanting:
        return
    workspaces = set(message_workspaces(message_ids).values()) & wanting
    if not workspaces:
        return
    messages = Message.objects.filter(pk__in=message_ids, workspace_id__in=workspaces)
    field = f"{milestone}_at"
    events = []
    for message in messages.select_related("enrollment"):
        moment = getattr(message, field)
        data = {
            "message": str(message.pk),
            "contact": str(message.contact_id),
            "sequence": str(message.enrollment.sequence_id) if message.enrollment else None,
            "step": message.step_key or None,
            "broadcast": str(message.broadcast_id) if message.broadcast_id else None,
            "variant": message.variant,
            "subject": message.subject,
            "at": moment.isoformat() if moment else None,
        }
        events.append((message.workspace_id, data))
    webhooks_enqueue(event_type=event_type, events=events)


def connect() -> None:
    """Wire the receivers (called from CampaignsConfig.ready)."""
    contact_signals.contact_unsubscribed.connect(
        on_contact_unsubscribed, dispatch_uid="campaigns.engine.contact_unsubscribed"
    )
    contact_signals.contact_subscribed.connect(
        on_contact_subscribed, dispatch_uid="campaigns.engine.contact_subscribed"
    )
    funnel_signals.event_recorded.connect(
        on_event_recorded, dispatch_uid="campaigns.engine.event_recorded"
    )
    funnel_signals.stage_changed.connect(
        on_stage_changed, dispatch_uid="campaigns.engine.stage_changed"
    )
    campaign_signals.message_milestones.connect(
        on_message_complaints, dispatch_uid="campaigns.complaints.message_milestones"
    )
    campaign_signals.message_milestones.connect(
        on_message_milestones, dispatch_uid="campaigns.webhooks.message_milestones"
    )
