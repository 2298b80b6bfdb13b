"""Receivers: what analytics does when the apps below announce a change.

Connected in AnalyticsConfig.ready() (dispatch_uid makes connecting twice harmless). Each one
only marks rollup keys dirty, inside the transaction that sent the signal: the mark commits
or rolls back with its cause, so no committed change can be missed (an on_commit callback would
be lost if the process died right after the commit). The marks are plain inserts that never
wait on each other; rollups.rollups_refresh (beat, every few seconds) does the work.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import pre_delete

from analytics import rollups
from campaigns.signals import message_milestones
from contacts.models import Contact
from funnel import signals as funnel_signals
from tracking.signals import AnonymousSource, anonymous_activity


def on_message_milestones(
    sender: Any, *, milestone: str, message_ids: list[str], **kwargs: Any
) -> None:
    """Sent, delivered, opened, clicked, bounced, ...: the messages' day keys change."""
    rollups.messages_mark_dirty(message_ids=message_ids)


def on_stage_changed(
    sender: Any, *, workspace_id: str, funnel_id: str, contact_id: str, **kwargs: Any
) -> None:
    """A move ends one stay and begins another."""
    rollups.stays_mark_dirty(workspace_id=workspace_id, funnel_id=funnel_id, contact_id=contact_id)


def on_contact_converted(
    sender: Any,
    *,
    workspace_id: str,
    funnel_id: str,
    contact_id: str,
    conversion_id: str,
    **kwargs: Any,
) -> None:
    """A goal reached: stays, the funnel's day and the mails clicked before it change."""
    rollups.contact_conversion_mark_dirty(
        workspace_id=workspace_id,
        funnel_id=funnel_id,
        contact_id=contact_id,
        conversion_id=conversion_id,
    )


def on_anonymous_activity(sender: Any, *, sources: list[AnonymousSource], **kwargs: Any) -> None:
    """Opens and clicks of anonymously tracked mails: their source's day keys change."""
    rollups.anonymous_mark_dirty(sources=sources)


def on_contact_deleting(sender: Any, *, instance: Contact, **kwargs: Any) -> None:
    """Erasure deletes the contact's messages, moves and conversions with it: their rollups
    must lose them too (contacts.signals.contact_erased comes after the rows are gone)."""
    rollups.contact_deleting_mark_dirty(contact_id=instance.pk)


def connect() -> None:
    """Wire the receivers (called from AnalyticsConfig.ready)."""
    message_milestones.connect(
        on_message_milestones, dispatch_uid="analytics.rollups.message_milestones"
    )
    funnel_signals.stage_changed.connect(
        on_stage_changed, dispatch_uid="analytics.rollups.stage_changed"
    )
    funnel_signals.contact_converted.connect(
        on_contact_converted, dispatch_uid="analytics.rollups.contact_converted"
    )
    anonymous_activity.connect(
        on_anonymous_activity, dispatch_uid="analytics.rollups.anonymous_activity"
    )
    pre_delete.connect(
        on_contact_deleting, sender=Contact, dispatch_uid="analytics.rollups.contact_deleting"
    )
