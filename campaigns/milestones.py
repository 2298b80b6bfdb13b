"""The first-time milestones of messages (sent, delivered, opened, ...): one place that sets
them, in bulk, and announces which were new (campaigns.signals.message_milestones).

A milestone is set once, by the first report that arrives; later reports of the same kind
change nothing. Human opens and clicks are "opened" / "clicked"; privacy-proxy opens and
scanner clicks are "machine_opened" / "bot_clicked" and never touch the human ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.db import connection

from campaigns.models import Message
from campaigns.signals import message_milestones
from core.pgarray import pg_array

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


def message_workspaces(message_ids: list[str]) -> dict[str, uuid.UUID]:
    """Message id (string) -> its workspace id, for ids given as strings. One statement with an
    array parameter on PostgreSQL: an ORM pk__in over a thousand ids costs more in Python than
    in the database."""
    if not message_ids:
        return {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f'SELECT "id", "workspace_id" FROM "{Message._meta.db_table}" '  # noqa: S608
                'WHERE "id" = ANY(%s::uuid[])',
                [pg_array(message_ids)],
            )
            return {str(row[0]): row[1] for row in cursor.fetchall()}
    rows = Message.objects.filter(pk__in=message_ids).values_list("pk", "workspace_id")
    return {str(pk): workspace_id for pk, workspace_id in rows}


def messages_lock(message_ids: Iterable[Any]) -> None:
    """Lock these messages' rows for the rest of the transaction, in id order, before writing
    to them (FOR NO KEY UPDATE: what an UPDATE takes; inserts referencing them still go).

    Batches of reports (ESP webhooks, tracking hits) write milestones and more to many
    messages in a few statements, and an UPDATE ... FROM unnest(...) locks its rows in the
    join's order, which follows each batch's own order: two batches over the same messages in
    different orders would each hold a row the other waits for, and PostgreSQL would abort one
    (deadlock). Locked first in one order, one batch waits for the other instead. SQLite (the
    embedded default) lets one writer in at a time and needs none of this."""
    ids = sorted({str(message_id) for message_id in message_ids})
    if not ids or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT 1 FROM "{Message._meta.db_table}" '  # noqa: S608
            'WHERE "id" = ANY(%s::uuid[]) ORDER BY "id" FOR NO KEY UPDATE',
            [pg_array(ids)],
        )


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
        ids, times_at = zip(*items, strict=True)
        with connection.cursor() as cursor:
            # Column and table names come from the model, every value is in a parameter.
            cursor.execute(
                f'UPDATE "{table}" AS m SET "{field}" = v.at '  # noqa: S608
                "FROM unnest(%s::uuid[], %s::timestamptz[]) AS v(id, at) "
                f'WHERE m."id" = v.id AND m."{field}" IS NULL RETURNING m."id"::text',
                [pg_array(ids), pg_array(times_at)],
            )
            changed = [row[0] for row in cursor.fetchall()]
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
