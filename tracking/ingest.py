"""The writer: hits (pixel and redirect fetches, ESP opens and clicks) become Activity rows,
classified, deduplicated, with the message milestones they set and the reactions they fire.

Runs in the batch writer (tracking.buffer.hits_drain) or, without a buffer, right in the
request. Safe to replay: Activity.key is unique and only rows this call inserted have effects,
so a hit written twice (a writer that crashed after its commit, a replayed webhook) changes
nothing the second time.

What a hit sets (personal tracking mode; anonymous hits have no message and only count):
- human open  -> Message.opened_at, wakes runs waiting for the open;
- human click -> opened_at and clicked_at (a click counts as an open), funnel click rules, wakes
  runs waiting for the click or the open;
- machine open -> machine_opened_at; bot click (trap link included) -> bot_clicked_at. Neither
  touches the human milestones nor fires anything.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Min, Q
from django.utils import timezone

from campaigns import engine
from campaigns.milestones import announce, messages_lock, milestones_set
from campaigns.models import Broadcast, Message, Sequence
from core.pgarray import pg_array
from tracking import classification
from tracking.classification import BOT, BURST, HUMAN, MACHINE, TRAP_LINK, ClickSeen
from tracking.hits import CLICK, OPEN, TRAP, USER_AGENT_LIMIT, Hit
from tracking.models import Activity, ActivityKind, ActivityRow, Actor
from tracking.signals import anonymous_activity_announce

logger = logging.getLogger(__name__)

_FIELDS = [field for field in Activity._meta.concrete_fields if field.name != "id"]


@functools.cache
def _unnest_insert_sql() -> str:
    """activities_insert's statement on PostgreSQL, built once (Field.db_type is slow)."""
    table = Activity._meta.db_table
    columns = ", ".join(f'"{field.column}"' for field in _FIELDS)
    arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in _FIELDS)
    # Names and types from the model, every value a parameter.
    return (
        f'INSERT INTO "{table}" ({columns}) SELECT * FROM unnest({arrays}) '  # noqa: S608
        'ON CONFLICT ("key") DO NOTHING RETURNING "key"'
    )


def activities_insert(rows: list[ActivityRow]) -> set[str]:
    """Insert activity rows, skipping keys that are stored already; returns the keys inserted
    here. A row without recorded_at gets the current time.

    INSERT ... ON CONFLICT (key) DO NOTHING RETURNING key: of two writers racing over the same
    key exactly one learns that it inserted it. On PostgreSQL the rows go column-wise, one
    array literal per column (SELECT * FROM unnest(...), core.pgarray): a fifth of the time
    of a VALUES list with a parameter per value for a webhook batch of 1,000
    (bench/webhooks.py). SQLite (the embedded default) takes a VALUES list.
    """
    if not rows:
        return set()
    now = timezone.now()
    for row in rows:
        if row.recorded_at is None:
            row.recorded_at = now
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _unnest_insert_sql(),
                [pg_array([getattr(row, field.attname) for row in rows]) for field in _FIELDS],
            )
            return {row[0] for row in cursor.fetchall()}
    table = Activity._meta.db_table
    columns = ", ".join(f'"{field.column}"' for field in _FIELDS)
    row_sql = "(" + ", ".join(["%s"] * len(_FIELDS)) + ")"
    inserted: set[str] = set()
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        params = [
            field.get_db_prep_save(getattr(row, field.attname), connection)
            for row in chunk
            for field in _FIELDS
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                f'INSERT INTO "{table}" ({columns}) VALUES '  # noqa: S608
                f"{', '.join([row_sql] * len(chunk))} "
                'ON CONFLICT ("key") DO NOTHING RETURNING "key"',
                params,
            )
            inserted.update(row[0] for row in cursor.fetchall())
    return inserted


@dataclass(frozen=True)
class WriteResult:
    written: int
    duplicates: int
    dropped: int
    human: int
    machine: int


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the writer needs to know of a hit's message."""

    workspace_id: uuid.UUID
    sent_at: datetime | None
    sequence_id: uuid.UUID | None
    step_key: str
    broadcast_id: uuid.UUID | None
    variant: int


def _message_facts(ids: set[uuid.UUID]) -> dict[uuid.UUID, MessageFacts]:
    rows = Message.objects.filter(pk__in=ids).values_list(
        "pk",
        "workspace_id",
        "sent_at",
        "enrollment__sequence_id",
        "step_key",
        "broadcast_id",
        "variant",
    )
    return {row[0]: MessageFacts(*row[1:]) for row in rows}


def _source_workspaces(hits: list[Hit]) -> dict[uuid.UUID, uuid.UUID]:
    """Workspace of each anonymous hit's broadcast or sequence."""
    broadcasts = {hit.source.broadcast_id for hit in hits if hit.source and hit.source.broadcast_id}
    sequences = {hit.source.sequence_id for hit in hits if hit.source and hit.source.sequence_id}
    found: dict[uuid.UUID, uuid.UUID] = {}
    if broadcasts:
        found.update(Broadcast.objects.filter(pk__in=broadcasts).values_list("pk", "workspace_id"))
    if sequences:
        found.update(Sequence.objects.filter(pk__in=sequences).values_list("pk", "workspace_id"))
    return found


def _stored_clicks(hits: list[Hit]) -> dict[uuid.UUID, list[ClickSeen]]:
    """Clicks already stored for the messages of these clicks, near their times."""
    clicks = [hit for hit in hits if hit.kind in (CLICK, TRAP) and hit.message_id]
    if not clicks:
        return {}
    margin = timedelta(seconds=classification.BURST_SECONDS)
    earliest = min(hit.occurred_at for hit in clicks) - margin
    latest = max(hit.occurred_at for hit in clicks) + margin
    stored: dict[uuid.UUID, list[ClickSeen]] = defaultdict(list)
    rows = Activity.objects.filter(
        message_id__in={hit.message_id for hit in clicks},
        kind=ActivityKind.CLICK,
        occurred_at__range=(earliest, latest),
    ).values_list("message_id", "occurred_at", "link_index", "url", "reason", "key")
    keys = {hit.key for hit in clicks}
    for message_id, at, link_index, url, reason, key in rows:
        if key not in keys:
            link = link_index if link_index is not None else url
            stored[message_id].append(ClickSeen(at, link, trap=reason == TRAP_LINK))
    return stored


def _verdict(
    hit: Hit,
    sent_at: datetime | None,
    batch_clicks: dict[uuid.UUID | None, list[tuple[str, ClickSeen]]],
    stored: dict[uuid.UUID, list[ClickSeen]],
) -> classification.Verdict:
    if hit.kind == OPEN:
        return classification.classify_open(
            user_agent=hit.user_agent,
            ip=hit.ip,
            method=hit.method,
            at=hit.occurred_at,
            sent_at=sent_at,
        )
    others: list[ClickSeen] = []
    if hit.message_id is not None:
        others = list(stored.get(hit.message_id, ()))
        others.extend(seen for key, seen in batch_clicks[hit.message_id] if key != hit.key)
    return classification.classify_click(
        trap=hit.kind == TRAP,
        link=hit.link_index if hit.link_index is not None else hit.url,
        user_agent=hit.user_agent,
        method=hit.method,
        at=hit.occurred_at,
        sent_at=sent_at,
        others=others,
    )


def _activity(
    hit: Hit, workspace_id: uuid.UUID, facts: MessageFacts | None, verdict: Any
) -> ActivityRow:
    source = hit.source
    return ActivityRow(
        key=hit.key,
        workspace_id=workspace_id,
        message_id=hit.message_id if facts else None,
        sequence_id=facts.sequence_id if facts else (source.sequence_id if source else None),
        step_key=facts.step_key if facts else (source.step_key if source else ""),
        broadcast_id=facts.broadcast_id if facts else (source.broadcast_id if source else None),
        variant=facts.variant if facts else (source.variant if source else 0),
        kind=ActivityKind.OPEN if hit.kind == OPEN else ActivityKind.CLICK,
        origin=hit.origin,
        actor=verdict.actor,
        rules_version=classification.VERSION,
        reason=verdict.reason,
        link_index=hit.link_index,
        url=hit.url,
        occurred_at=hit.occurred_at,
        method=hit.method[:8],
        user_agent=hit.user_agent[:USER_AGENT_LIMIT],
        ip=hit.ip,
        esp=hit.esp[:40],
    )


@transaction.atomic
def hits_write(
    hits: list[Hit], *, known: Mapping[uuid.UUID, MessageFacts] | None = None
) -> WriteResult:
    """Store `hits` (each at most once, by key) and apply what the new ones mean. `known`:
    facts of messages the caller has read and locked already (the ESP webhooks, see
    tracking.esp), neither read nor locked again."""
    known = known or {}
    facts = dict(known)
    missing = {hit.message_id for hit in hits if hit.message_id and hit.message_id not in facts}
    facts.update(_message_facts(missing) if missing else {})
    source_workspaces = _source_workspaces([hit for hit in hits if not hit.message_id])
    stored = _stored_clicks(hits)
    batch_clicks: dict[uuid.UUID | None, list[tuple[str, ClickSeen]]] = defaultdict(list)
    for hit in hits:
        if hit.kind in (CLICK, TRAP):
            link = hit.link_index if hit.link_index is not None else hit.url
            seen = ClickSeen(hit.occurred_at, link, trap=hit.kind == TRAP)
            batch_clicks[hit.message_id].append((hit.key, seen))

    rows: list[ActivityRow] = []
    dropped = 0
    for hit in hits:
        message_facts = facts.get(hit.message_id) if hit.message_id else None
        if message_facts is not None:
            workspace_id = message_facts.workspace_id
        else:
            source = hit.source
            owner = (source.broadcast_id or source.sequence_id) if source else None
            if hit.message_id is not None or owner not in source_workspaces:
                dropped += 1  # the message (or campaign) is gone: erased or deleted
                continue
            workspace_id = source_workspaces[owner]
        sent_at = message_facts.sent_at if message_facts else None
        rows.append(
            _activity(
                hit, workspace_id, message_facts, _verdict(hit, sent_at, batch_clicks, stored)
            )
        )

    inserted = activities_insert(rows)
    new = [row for row in rows if row.key in inserted]
    # The messages it writes to, locked in one order first (see campaigns.milestones).
    messages_lock(
        row.message_id for row in new if row.message_id is not None and row.message_id not in known
    )
    _apply(new)
    # Anonymous rows set no milestone, so nothing else tells the rollups about them.
    anonymous_activity_announce(new)
    return WriteResult(
        written=len(new),
        duplicates=len(rows) - len(new),
        dropped=dropped,
        human=sum(1 for row in new if row.actor == HUMAN),
        machine=sum(1 for row in new if row.actor != HUMAN),
    )


def _earliest(times: dict[uuid.UUID, datetime], message_id: uuid.UUID, at: datetime) -> None:
    if message_id not in times or at < times[message_id]:
        times[message_id] = at


def _apply(new: list[ActivityRow]) -> None:
    """Milestones and reactions of newly stored activity (personal mode only)."""
    machine_opens: dict[uuid.UUID, datetime] = {}
    bot_clicks: dict[uuid.UUID, datetime] = {}
    human_opens: dict[uuid.UUID, datetime] = {}
    human_clicks: dict[tuple[uuid.UUID, str], datetime] = {}
    burst_messages: set[uuid.UUID] = set()
    for row in sorted(new, key=lambda activity: activity.occurred_at):
        if row.message_id is None:
            continue
        at = row.occurred_at
        if row.kind == ActivityKind.OPEN:
            target = human_opens if row.actor == HUMAN else machine_opens
            _earliest(target, row.message_id, at)
        elif row.actor == HUMAN:
            human_clicks.setdefault((row.message_id, row.url), at)
        else:
            _earliest(bot_clicks, row.message_id, at)
            if row.reason == BURST:
                burst_messages.add(row.message_id)
    milestones_set("machine_opened", machine_opens)
    milestones_set("bot_clicked", bot_clicks)
    if burst_messages:
        _reflag_burst(burst_messages)
    engine.messages_opened(human_opens)
    engine.messages_clicked((message_id, url, at) for (message_id, url), at in human_clicks.items())


def _reflag_burst(message_ids: set[uuid.UUID]) -> None:
    """A burst found now makes the clicks of that burst stored earlier as human bot clicks
    too (without a buffer, clicks are written one by one). Only clicks within the burst's
    window are touched; a person's click before or after it stays a person's. Reactions they
    fired stay."""
    window = timedelta(seconds=classification.BURST_SECONDS)
    changed: set[uuid.UUID] = set()
    for message_id in message_ids:
        clicks = Activity.objects.filter(message_id=message_id, kind=ActivityKind.CLICK)
        bursts = list(clicks.filter(reason=BURST).values_list("occurred_at", flat=True))
        humans = clicks.filter(actor=HUMAN).values_list("pk", "occurred_at")
        within = [pk for pk, at in humans if any(abs(at - burst) <= window for burst in bursts)]
        if within and Activity.objects.filter(pk__in=within).update(actor=BOT, reason=BURST):
            changed.add(message_id)
    milestones_recompute(changed)


def milestones_recompute(message_ids: Iterable[uuid.UUID]) -> None:
    """Set the open and click milestones of these messages from their stored activity (after
    a re-classification): opened_at is the first human open or click, clicked_at the first
    human click, machine_opened_at / bot_clicked_at the first machine ones."""
    ids = list(message_ids)
    if not ids:
        return
    human = Q(actor=HUMAN)
    opens = Q(kind=ActivityKind.OPEN)
    clicks = Q(kind=ActivityKind.CLICK)
    firsts = (
        Activity.objects.filter(message_id__in=ids)
        .values("message_id")
        .annotate(
            opened=Min("occurred_at", filter=human & (opens | clicks)),
            clicked=Min("occurred_at", filter=human & clicks),
            machine_opened=Min("occurred_at", filter=opens & Q(actor=MACHINE)),
            bot_clicked=Min("occurred_at", filter=clicks & Q(actor=BOT)),
        )
    )
    for first in firsts:
        Message.objects.filter(pk=first["message_id"]).update(
            opened_at=first["opened"],
            clicked_at=first["clicked"],
            machine_opened_at=first["machine_opened"],
            bot_clicked_at=first["bot_clicked"],
        )
    for milestone in ("opened", "clicked", "machine_opened", "bot_clicked"):
        announce(milestone, [str(message_id) for message_id in ids])


__all__ = [
    "Actor",
    "MessageFacts",
    "WriteResult",
    "activities_insert",
    "hits_write",
    "milestones_recompute",
]
