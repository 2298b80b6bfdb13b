"""The first-time milestones of messages (sent, delivered, opened, ...): one place that sets
them, in bulk, and announces which were new (campaigns.signals.message_milestones).

A milestone is set once, by the first report that arrives; later reports of the same kind
change nothing. Human opens and clicks are "opened" / "clicked"; privacy-proxy opens and
scanner clicks are "machine_opened" / "bot_clicked" and never touch the human ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import connection

from campaigns.models import Message
from campaigns.signals import message_milestones

MILESTONE_FIELDS = {
    "sent": "sent_at",
    "delivered": "delivered_at",
    "opened": "opened_at",
    "clicked": "clicked_at",
    "machine_opened": "machine_opened_at",
    "bot_clicked": "bot_clicked_at",
    "bounced": "bounced_at",
    "complained": "complained_at",
    "unsubscribed": "unsubscribed_at",
}


def announce(milestone: str, message_ids: list[str]) -> None:
    if message_ids:
        message_milestones.send(sender=Message, milestone=milestone, message_ids=message_ids)


def milestones_set(milestone: str, times: Mapping[Any, datetime]) -> list[str]:
    """Set `milestone` on the messages of `times` (message id -> when) where it is not set
    yet; returns the ids (strings) where it was newly set, and announces them."""
    field = MILESTONE_FIELDS[milestone]
    if not times:
        return []
    items = [(str(message_id), at) for message_id, at in times.items()]
    if connection.vendor == "postgresql":
        table = Message._meta.db_table
        values = ", ".join(["(%s::uuid, %s::timestamptz)"] * len(items))
        params: list[Any] = [value for item in items for value in item]
        with connection.cursor() as cursor:
            # Column and table names come from the model, every value is a parameter.
            cursor.execute(
                f'UPDATE "{table}" AS m SET "{field}" = v.at '  # noqa: S608
                f"FROM (VALUES {values}) AS v(id, at) "
                f'WHERE m."id" = v.id AND m."{field}" IS NULL RETURNING m."id"',
                params,
            )
            changed = [str(row[0]) for row in cursor.fetchall()]
    else:  # the embedded default (SQLite): one statement per message
        changed = [
            message_id
            for message_id, at in items
            if Message.objects.filter(pk=message_id, **{f"{field}__isnull": True}).update(
                **{field: at}
            )
        ]
    announce(milestone, changed)
    return changed
