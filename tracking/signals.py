"""What the tracking app announces to the apps above it (analytics).

Personal-mode activity reaches the others through the message milestones it sets
(campaigns.signals.message_milestones). Anonymous-mode activity has no message and sets no
milestone, so it is announced here. Sent inside the transaction that stored the rows, so a
receiver's own writes (analytics' dirty marks) commit or roll back with them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.dispatch import Signal

from tracking.models import Activity, ActivityRow

# Opens or clicks of mails tracked anonymously (no message) were newly stored:
# sources, a list of AnonymousSource, one per (workspace, sequence or broadcast, UTC day).
anonymous_activity = Signal()


@dataclass(frozen=True)
class AnonymousSource:
    """Where new anonymous activity counts: the mail's sequence or broadcast (ids as strings,
    exactly one of them set) in a workspace, on the UTC day it happened."""

    workspace_id: str
    sequence_id: str | None
    broadcast_id: str | None
    day: dt.date


def anonymous_activity_announce(rows: Iterable[ActivityRow]) -> list[AnonymousSource]:
    """Announce the sources of the anonymous rows among `rows` (rows with a message are
    skipped: their milestones announce them). Returns what was announced."""
    sources = sorted(
        {
            AnonymousSource(
                workspace_id=str(row.workspace_id),
                sequence_id=None if row.broadcast_id else str(row.sequence_id),
                broadcast_id=str(row.broadcast_id) if row.broadcast_id else None,
                day=row.occurred_at.astimezone(dt.UTC).date(),
            )
            for row in rows
            if row.message_id is None and (row.sequence_id or row.broadcast_id)
        },
        key=lambda source: (
            source.workspace_id,
            source.day,
            source.sequence_id or "",
            source.broadcast_id or "",
        ),
    )
    if sources:
        anonymous_activity.send(sender=Activity, sources=sources)
    return sources
