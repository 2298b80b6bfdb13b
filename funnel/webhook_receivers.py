"""Receivers that turn contacts' and the funnel's signals into outgoing webhook deliveries.

Wired by connect(), called from FunnelConfig.ready. Each receiver runs in the transaction of
the change, costs one EXISTS query when no endpoint wants the event type, and otherwise creates
the delivery rows there (a rolled-back change announces nothing); sending happens after commit
in Celery. The data carries ids and the contact's email address, no other personal data.
"""

from __future__ import annotations

from typing import Any

from contacts import signals as contact_signals
from contacts.models import Contact
from funnel import signals as funnel_signals
from funnel.models import Conversion
from funnel.webhooks import (
    deliveries_redact_contact,
    webhook_enqueue,
    webhooks_enqueue,
    webhooks_wanted,
)


def _contact_email(contact_id: str) -> str:
    email = Contact.objects.filter(pk=contact_id).values_list("email", flat=True).first()
    return email or ""


def _contact_event(event_type: str, workspace_id: str, contact_id: str) -> None:
    if not webhooks_wanted(workspace_id=workspace_id, event_type=event_type):
        return
    webhook_enqueue(
        workspace_id=workspace_id,
        event_type=event_type,
        data={"contact": {"id": contact_id, "email": _contact_email(contact_id)}},
    )


def on_contact_created(sender: Any, *, workspace_id: str, contact_id: str, **kwargs: Any) -> None:
    _contact_event("contact.created", workspace_id, contact_id)


def on_contact_subscribed(
    sender: Any, *, workspace_id: str, contact_id: str, **kwargs: Any
) -> None:
    _contact_event("contact.confirmed", workspace_id, contact_id)


def on_contact_unsubscribed(
    sender: Any, *, workspace_id: str, contact_ids: list[str], **kwargs: Any
) -> None:
    """One contact.unsubscribed event per contact, created together (a batch of bounces)."""
    event_type = "contact.unsubscribed"
    if not webhooks_wanted(workspace_id=workspace_id, event_type=event_type):
        return
    emails = {
        str(pk): email
        for pk, email in Contact.objects.filter(pk__in=contact_ids).values_list("pk", "email")
    }
    webhooks_enqueue(
        event_type=event_type,
        events=[
            (workspace_id, {"contact": {"id": contact_id, "email": emails.get(contact_id, "")}})
            for contact_id in contact_ids
        ],
    )


def on_contact_erased(sender: Any, *, workspace_id: str, contact_id: str, **kwargs: Any) -> None:
    deliveries_redact_contact(workspace_id=workspace_id, contact_id=contact_id)


def on_stage_changed(
    sender: Any,
    *,
    workspace_id: str,
    funnel_id: str,
    contact_id: str,
    from_stage_id: str | None,
    to_stage_id: str,
    cause: str,
    transition_id: str,
    **kwargs: Any,
) -> None:
    event_type = "contact.stage_changed"
    if not webhooks_wanted(workspace_id=workspace_id, event_type=event_type):
        return
    webhook_enqueue(
        workspace_id=workspace_id,
        event_type=event_type,
        data={
            "contact": {"id": contact_id, "email": _contact_email(contact_id)},
            "funnel": funnel_id,
            "from_stage": from_stage_id,
            "to_stage": to_stage_id,
            "cause": cause,
            "transition": transition_id,
        },
    )


def on_contact_converted(
    sender: Any,
    *,
    workspace_id: str,
    funnel_id: str,
    contact_id: str,
    conversion_id: str,
    event_id: str,
    **kwargs: Any,
) -> None:
    event_type = "contact.converted"
    if not webhooks_wanted(workspace_id=workspace_id, event_type=event_type):
        return
    conversion = Conversion.objects.filter(pk=conversion_id).values("value", "currency").first()
    value = conversion["value"] if conversion else None
    webhook_enqueue(
        workspace_id=workspace_id,
        event_type=event_type,
        data={
            "contact": {"id": contact_id, "email": _contact_email(contact_id)},
            "funnel": funnel_id,
            "conversion": conversion_id,
            "event": event_id,
            "value": None if value is None else str(value),
            "currency": conversion["currency"] if conversion else "",
        },
    )


def connect() -> None:
    """Connect the receivers; safe to call more than once (dispatch_uid)."""
    contact_signals.contact_created.connect(
        on_contact_created, dispatch_uid="funnel.webhooks.contact_created"
    )
    contact_signals.contact_subscribed.connect(
        on_contact_subscribed, dispatch_uid="funnel.webhooks.contact_subscribed"
    )
    contact_signals.contact_unsubscribed.connect(
        on_contact_unsubscribed, dispatch_uid="funnel.webhooks.contact_unsubscribed"
    )
    contact_signals.contact_erased.connect(
        on_contact_erased, dispatch_uid="funnel.webhooks.contact_erased"
    )
    funnel_signals.stage_changed.connect(
        on_stage_changed, dispatch_uid="funnel.webhooks.stage_changed"
    )
    funnel_signals.contact_converted.connect(
        on_contact_converted, dispatch_uid="funnel.webhooks.contact_converted"
    )


def disconnect() -> None:
    """Undo connect() (tests that need the signals quiet)."""
    contact_signals.contact_created.disconnect(dispatch_uid="funnel.webhooks.contact_created")
    contact_signals.contact_subscribed.disconnect(dispatch_uid="funnel.webhooks.contact_subscribed")
    contact_signals.contact_unsubscribed.disconnect(
        dispatch_uid="funnel.webhooks.contact_unsubscribed"
    )
    contact_signals.contact_erased.disconnect(dispatch_uid="funnel.webhooks.contact_erased")
    funnel_signals.stage_changed.disconnect(dispatch_uid="funnel.webhooks.stage_changed")
    funnel_signals.contact_converted.disconnect(dispatch_uid="funnel.webhooks.contact_converted")


def is_connected() -> bool:
    return any(
        lookup_key[0] == "funnel.webhooks.stage_changed"
        for lookup_key, *_rest in funnel_signals.stage_changed.receivers
    )
