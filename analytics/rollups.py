"""Keeping the rollups of analytics/models.py exact (docs/analytics.md, "Rollups").

Exactness comes from recomputing, never from counting up: a change to the raw rows marks the
keys it touches dirty (a DirtyKey row, written in the same transaction as the change, so a
committed change always leaves its mark), and rollups_refresh recomputes each dirty key from
the raw rows with one aggregate query. The rebuild (rollups_rebuild) runs the very same
aggregates over everything, so live and rebuilt rollups agree by construction.

Keys:
- messages: (workspace, UTC day of sent_at, sequence or broadcast) -> MessageDaily rows per
  step, variant and stage of that source and day;
- stays: (funnel, contact) -> that contact's StageStay rows, then the funnel-days they touch;
- funnel_day: (funnel, UTC day) -> StageDaily (stays that began that day) and ConversionDaily.

The send path announces "sent" once per batch after the batch: a worker killed mid-batch
never announces the acceptances it wrote. rollups_reconcile closes that gap: every refresh
also marks the keys of messages whose sent_at lies between the last pass and RECONCILE_LAG
ago, so such a send is counted within a few minutes.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import math
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    Count,
    DateTimeField,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from analytics.models import (
    ConversionDaily,
    DirtyKey,
    DirtyKind,
    MessageDaily,
    RollupWatermark,
    StageDaily,
    StageDurationDaily,
    StageStay,
    StayOutcome,
)
from campaigns.models import Enrollment, Message, Sequence
from core.pgarray import pg_array
from core.rawsql import db_uuid
from funnel.models import Conversion, Funnel, Stage, StageTransition
from tracking.models import Activity, ActivityKind, Actor
from tracking.signals import AnonymousSource

DAY = dt.timedelta(days=1)
# A message counts as converted when its recipient reached a funnel goal within this time
# after the first human click on it (the default attribution window, too).
CONVERSION_WINDOW = dt.timedelta(days=5)
# How far behind "now" the reconcile pass looks: well beyond the moment between a send's
# sent_at and the commit of its acceptance.
RECONCILE_LAG = dt.timedelta(minutes=2)
REFRESH_BATCH = 500
BULK_BATCH = 5000
# pg_try_advisory_xact_lock key: one refresh or rebuild at a time (sha256("analytics")[:8]).
LOCK_KEY = int.from_bytes(hashlib.sha256(b"funnelwerk.analytics").digest()[:8], "big", signed=True)


def day_of(moment: dt.datetime) -> dt.date:
    """The UTC day a moment belongs to: the day of every rollup row."""
    return moment.astimezone(dt.UTC).date()


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


# --- marking keys dirty ----------------------------------------------------------------------


def _sourced(messages: QuerySet[Message]) -> QuerySet[Message]:
    """Messages of a sequence step or a broadcast that were sent (the rollups' population)."""
    return messages.filter(sent_at__isnull=False).filter(
        Q(enrollment__isnull=False) | Q(broadcast__isnull=False)
    )


def _message_keys(messages: QuerySet[Message]) -> list[DirtyKey]:
    rows = (
        _sourced(messages)
        .annotate(sent_day=TruncDate("sent_at", tzinfo=dt.UTC))
        .order_by()
        .values_list("workspace_id", "sent_day", "enrollment__sequence_id", "broadcast_id")
        .distinct()
    )
    return [
        DirtyKey(
            kind=DirtyKind.MESSAGES,
            workspace_id=workspace_id,
            object_id=broadcast_id or sequence_id,
            is_broadcast=broadcast_id is not None,
            day=day,
        )
        for workspace_id, day, sequence_id, broadcast_id in rows
    ]


# The keys of _message_keys, computed and inserted by the database in one statement: this
# runs inside every send batch and tracking write (up to a thousand ids), where an ORM pk__in
# and a bulk_create of model instances cost more in Python than in PostgreSQL
# (campaigns.milestones.message_workspaces passes ids the same way).
_MESSAGE_KEYS_SQL = """
INSERT INTO {dirty} (kind, workspace_id, object_id, is_broadcast, day, marked_at)
SELECT DISTINCT %s, m.workspace_id, COALESCE(m.broadcast_id, e.sequence_id),
    m.broadcast_id IS NOT NULL, (m.sent_at AT TIME ZONE 'UTC')::date, %s
FROM {message} m LEFT JOIN {enrollment} e ON e.id = m.enrollment_id
WHERE m.id = ANY(%s::uuid[]) AND m.sent_at IS NOT NULL
    AND (m.enrollment_id IS NOT NULL OR m.broadcast_id IS NOT NULL)
"""


def messages_mark_dirty(*, message_ids: Iterable[str | uuid.UUID]) -> int:
    """Mark the message keys of these messages dirty (in the caller's transaction). Returns
    how many keys. Safe to run twice: a key marked twice is recomputed once."""
    ids = [str(message_id) for message_id in message_ids]
    if not ids:
        return 0
    if connection.vendor != "postgresql":
        keys = _message_keys(Message.objects.filter(pk__in=ids))
        DirtyKey.objects.bulk_create(keys)
        return len(keys)
    sql = _MESSAGE_KEYS_SQL.format(
        dirty=DirtyKey._meta.db_table,
        message=Message._meta.db_table,
        enrollment=Enrollment._meta.db_table,
    )
    with connection.cursor() as cursor:
        # Table names from the models, every value a parameter.
        cursor.execute(sql, [DirtyKind.MESSAGES.value, timezone.now(), pg_array(ids)])
        return int(cursor.rowcount)


def contact_conversion_mark_dirty(
    *, workspace_id: str, funnel_id: str, contact_id: str, conversion_id: str
) -> None:
    """A conversion was recorded: the contact's stays in the funnel (converted flag), the
    funnel's day of the conversion, and the keys of the contact's messages whose click lies
    within CONVERSION_WINDOW before it (their converted count). Safe to run twice."""
    conversion = Conversion.objects.filter(pk=conversion_id).values("occurred_at").first()
    if conversion is None:
        return
    at = conversion["occurred_at"]
    clicked = Message.objects.filter(
        contact_id=contact_id, clicked_at__lte=at, clicked_at__gte=at - CONVERSION_WINDOW
    )
    DirtyKey.objects.bulk_create(
        [
            DirtyKey(
                kind=DirtyKind.STAYS,
                workspace_id=workspace_id,
                object_id=funnel_id,
                contact_id=contact_id,
            ),
            DirtyKey(
                kind=DirtyKind.FUNNEL_DAY,
                workspace_id=workspace_id,
                object_id=funnel_id,
                day=day_of(at),
            ),
            *_message_keys(clicked),
        ]
    )


def stays_mark_dirty(*, workspace_id: str, funnel_id: str, contact_id: str) -> None:
    """The contact moved in the funnel: recompute its stays there. Safe to run twice."""
    DirtyKey.objects.create(
        kind=DirtyKind.STAYS, workspace_id=workspace_id, object_id=funnel_id, contact_id=contact_id
    )


def anonymous_mark_dirty(*, sources: Iterable[AnonymousSource]) -> int:
    """New anonymous activity (tracking.signals.anonymous_activity): mark the messages key of
    each source on the day it happened, whose recompute counts it (in the caller's
    transaction). Returns how many keys. Safe to run twice."""
    keys = [
        DirtyKey(
            kind=DirtyKind.MESSAGES,
            workspace_id=source.workspace_id,
            object_id=source_id,
            is_broadcast=source.broadcast_id is not None,
            day=source.day,
        )
        for source in sources
        if (source_id := source.broadcast_id or source.sequence_id)
    ]
    DirtyKey.objects.bulk_create(keys)
    return len(keys)


def contact_deleting_mark_dirty(*, contact_id: uuid.UUID) -> None:
    """The contact is about to be deleted (GDPR erasure) with its messages, moves and
    conversions: mark every key they count in, so the rollups lose them too."""
    keys = _message_keys(Message.objects.filter(contact_id=contact_id))
    stays = StageStay.objects.filter(contact_id=contact_id).values_list(
        "workspace_id", "funnel_id", "day"
    )
    conversions = (
        Conversion.objects.filter(contact_id=contact_id)
        .annotate(conversion_day=TruncDate("occurred_at", tzinfo=dt.UTC))
        .values_list("funnel__workspace_id", "funnel_id", "conversion_day")
    )
    funnel_days = set(stays) | set(conversions)
    keys += [
        DirtyKey(kind=DirtyKind.FUNNEL_DAY, workspace_id=workspace_id, object_id=funnel_id, day=day)
        for workspace_id, funnel_id, day in funnel_days
    ]
    DirtyKey.objects.bulk_create(keys)


# --- the aggregates (shared by refresh and rebuild) ------------------------------------------


def message_figures(messages: QuerySet[Message]) -> QuerySet[Message, dict[str, Any]]:
    """One row per (workspace, send day, sequence, step, broadcast, variant, stage) with the
    counts of MessageDaily, from the raw messages given."""
    converted = Exists(
        Conversion.objects.filter(
            contact_id=OuterRef("contact_id"),
            occurred_at__gte=OuterRef("clicked_at"),
            occurred_at__lte=ExpressionWrapper(
                OuterRef("clicked_at") + Value(CONVERSION_WINDOW), output_field=DateTimeField()
            ),
        )
    )
    return (
        _sourced(messages)
        .annotate(
            sent_day=TruncDate("sent_at", tzinfo=dt.UTC),
            source_sequence=F("enrollment__sequence_id"),
            click_converted=converted,
        )
        .order_by()
        .values(
            "workspace_id",
            "sent_day",
            "source_sequence",
            "step_key",
            "broadcast_id",
            "variant",
            "stage_id",
        )
        .annotate(
            sent=Count("pk"),
            bounced=Count("pk", filter=Q(bounced_at__isnull=False)),
            opened=Count("pk", filter=Q(opened_at__isnull=False) | Q(clicked_at__isnull=False)),
            clicked=Count("pk", filter=Q(clicked_at__isnull=False)),
            machine_opened=Count("pk", filter=Q(machine_opened_at__isnull=False)),
            bot_clicked=Count("pk", filter=Q(bot_clicked_at__isnull=False)),
            complained=Count("pk", filter=Q(complained_at__isnull=False)),
            unsubscribed=Count("pk", filter=Q(unsubscribed_at__isnull=False)),
            converted=Count("pk", filter=Q(clicked_at__isnull=False, click_converted=True)),
        )
    )


def anonymous_figures(activities: QuerySet[Activity]) -> QuerySet[Activity, dict[str, Any]]:
    """One row per (workspace, UTC day of the activity, sequence, step, broadcast, variant)
    with the anonymous counts of MessageDaily, from the Activity rows given that have no
    message: opens and clicks as events, people's and machines' apart."""
    opens, clicks = Q(kind=ActivityKind.OPEN), Q(kind=ActivityKind.CLICK)
    return (
        activities.filter(message__isnull=True, kind__in=(ActivityKind.OPEN, ActivityKind.CLICK))
        .filter(Q(sequence__isnull=False) | Q(broadcast__isnull=False))
        .annotate(activity_day=TruncDate("occurred_at", tzinfo=dt.UTC))
        .order_by()
        .values(
            "workspace_id", "activity_day", "sequence_id", "step_key", "broadcast_id", "variant"
        )
        .annotate(
            anonymous_opens=Count("pk", filter=opens & Q(actor=Actor.HUMAN)),
            anonymous_clicks=Count("pk", filter=clicks & Q(actor=Actor.HUMAN)),
            anonymous_machine_opens=Count("pk", filter=opens & Q(actor=Actor.MACHINE)),
            anonymous_bot_clicks=Count("pk", filter=clicks & Q(actor=Actor.BOT)),
        )
    )


def _step_stages(sequence_ids: set[uuid.UUID]) -> dict[tuple[uuid.UUID, str], uuid.UUID]:
    """The funnel stage of each email step of these sequences, as the graph tags it now (what
    the engine writes into Message.stage when it makes a mail): anonymous activity has no
    message to read it from. A stage that no longer exists counts as none, as Message.stage
    becomes NULL when its stage is deleted."""
    if not sequence_ids:
        return {}
    tagged = {
        (sequence_id, str(step["key"])): str(step["stage"])
        for sequence_id, steps in Sequence.objects.filter(pk__in=sequence_ids).values_list(
            "pk", "steps"
        )
        for step in steps or []
        if step.get("type") == "email" and step.get("stage")
    }
    existing = {
        str(pk)
        for pk in Stage.objects.filter(pk__in=set(tagged.values())).values_list("pk", flat=True)
    }
    return {key: uuid.UUID(stage) for key, stage in tagged.items() if stage in existing}


def _message_dailies(
    message_rows: Iterable[dict[str, Any]], anonymous_rows: Iterable[dict[str, Any]]
) -> list[MessageDaily]:
    """The MessageDaily rows of message_figures and anonymous_figures rows, merged where they
    share a key (workspace, day, source, step, variant, stage)."""
    rollups: dict[tuple[Any, ...], MessageDaily] = {}
    for row in message_rows:
        rollup = MessageDaily(
            workspace_id=row["workspace_id"],
            day=row["sent_day"],
            sequence_id=None if row["broadcast_id"] else row["source_sequence"],
            step_key=row["step_key"],
            broadcast_id=row["broadcast_id"],
            variant=row["variant"],
            stage_id=row["stage_id"],
            **{field: row[field] for field in MESSAGE_COUNTS},
        )
        rollups[_rollup_key(rollup)] = rollup
    anonymous = list(anonymous_rows)
    stages = _step_stages(
        {row["sequence_id"] for row in anonymous if row["sequence_id"] and not row["broadcast_id"]}
    )
    for row in anonymous:
        sequence_id = None if row["broadcast_id"] else row["sequence_id"]
        rollup = MessageDaily(
            workspace_id=row["workspace_id"],
            day=row["activity_day"],
            sequence_id=sequence_id,
            step_key=row["step_key"],
            broadcast_id=row["broadcast_id"],
            variant=row["variant"],
            stage_id=stages.get((sequence_id, row["step_key"])) if sequence_id else None,
        )
        rollup = rollups.setdefault(_rollup_key(rollup), rollup)
        for field in ANONYMOUS_COUNTS:
            setattr(rollup, field, getattr(rollup, field) + row[field])
    return list(rollups.values())


def _rollup_key(rollup: MessageDaily) -> tuple[Any, ...]:
    return (
        str(rollup.workspace_id),
        rollup.day,
        str(rollup.sequence_id),
        rollup.step_key,
        str(rollup.broadcast_id),
        rollup.variant,
        str(rollup.stage_id),
    )


MESSAGE_COUNTS = (
    "sent",
    "bounced",
    "opened",
    "clicked",
    "machine_opened",
    "bot_clicked",
    "complained",
    "unsubscribed",
    "converted",
)
ANONYMOUS_COUNTS = (
    "anonymous_opens",
    "anonymous_clicks",
    "anonymous_machine_opens",
    "anonymous_bot_clicks",
)


def stage_figures(stays: QuerySet[StageStay]) -> QuerySet[StageStay, dict[str, Any]]:
    """One row per (funnel, stage, entry day) with the counts of StageDaily."""
    return (
        stays.order_by()
        .values("workspace_id", "funnel_id", "stage_id", "day")
        .annotate(
            entered=Count("pk"),
            entrants=Count("pk", filter=Q(entrant=True)),
            advanced=Count("pk", filter=Q(outcome=StayOutcome.ADVANCED)),
            went_back=Count("pk", filter=Q(outcome=StayOutcome.WENT_BACK)),
            progressed=Count("pk", filter=Q(outcome=StayOutcome.ADVANCED) | Q(converted=True)),
            still_in=Count("pk", filter=Q(outcome=StayOutcome.OPEN)),
            # Last: from here on "converted" names this count, not the field.
            converted=Count("pk", filter=Q(converted=True)),
        )
    )


STAGE_COUNTS = ("entered", "entrants", "advanced", "went_back", "converted", "progressed")


def _duration_buckets() -> tuple[int, ...]:
    bounds, low = [0], 1
    while low < 20 * 365 * 86400:
        bounds.append(low)
        low = max(low + 1, math.ceil(low * 1.25))
    return tuple(bounds)


# The lower bounds (seconds) of the duration buckets of StageDurationDaily: 0, 1, 2, 3, 4, 5,
# 7, 9, 12, ... each about 25 % wider than the one before, the last one open (88 in all). A
# bucket holds a small share of the stays whatever their spread, so the median's read within
# it is short. Changing them needs analytics_rebuild.
DURATION_BUCKETS = _duration_buckets()


def _bucket_sql(column: str, low: int = 0, high: int = len(DURATION_BUCKETS)) -> str:
    """SQL for the bucket (lower bound) of `column`: nested CASEs halving the range, so a row
    takes about 7 comparisons, not 88. Only our own integer constants go into it."""
    if high - low == 1:
        return str(DURATION_BUCKETS[low])
    middle = (low + high) // 2
    return (
        f"CASE WHEN {column} < {DURATION_BUCKETS[middle]} THEN {_bucket_sql(column, low, middle)}"
        f" ELSE {_bucket_sql(column, middle, high)} END"
    )


def duration_figures(stays: QuerySet[StageStay]) -> QuerySet[StageStay, dict[str, Any]]:
    """One row per (funnel, stage, entry day, duration bucket) of the ended stays with the
    counts of StageDurationDaily."""
    column = f'"{StageStay._meta.db_table}"."duration_seconds"'
    return (
        stays.filter(duration_seconds__isnull=False)
        .annotate(bucket=RawSQL(_bucket_sql(column), ()))  # noqa: S611 (constants only)
        .order_by()
        .values("workspace_id", "funnel_id", "stage_id", "day", "bucket")
        .annotate(
            stays=Count("pk"),
            shortest=Min("duration_seconds"),
            longest=Max("duration_seconds"),
        )
    )


def _duration_daily(row: dict[str, Any]) -> StageDurationDaily:
    return StageDurationDaily(
        workspace_id=row["workspace_id"],
        funnel_id=row["funnel_id"],
        stage_id=row["stage_id"],
        day=row["day"],
        bucket=row["bucket"],
        stays=row["stays"],
        shortest=row["shortest"],
        longest=row["longest"],
    )


def conversion_figures(conversions: QuerySet[Conversion]) -> QuerySet[Conversion, dict[str, Any]]:
    """One row per (funnel, credited stage, UTC day, currency) with conversions and revenue."""
    return (
        conversions.annotate(conversion_day=TruncDate("occurred_at", tzinfo=dt.UTC))
        .order_by()
        .values("funnel__workspace_id", "funnel_id", "stage_id", "conversion_day", "currency")
        .annotate(
            conversions=Count("pk"),
            valued=Count("pk", filter=Q(value__isnull=False)),
            revenue=Coalesce(
                Sum("value"), Value(Decimal(0)), output_field=DecimalField(decimal_places=2)
            ),
        )
    )


def _stage_daily(row: dict[str, Any]) -> StageDaily:
    return StageDaily(
        workspace_id=row["workspace_id"],
        funnel_id=row["funnel_id"],
        stage_id=row["stage_id"],
        day=row["day"],
        still_in=row["still_in"],
        **{field: row[field] for field in STAGE_COUNTS},
    )


def _conversion_daily(row: dict[str, Any]) -> ConversionDaily:
    return ConversionDaily(
        workspace_id=row["funnel__workspace_id"],
        funnel_id=row["funnel_id"],
        stage_id=row["stage_id"],
        day=row["conversion_day"],
        currency=row["currency"],
        conversions=row["conversions"],
        valued=row["valued"],
        revenue=row["revenue"],
    )


# One stay per stage transition, computed in the database: the next move of the same contact
# in the same funnel (time order, ties by id, as LEAD over that window) ends the stay. It
# "advanced" when that move went to a later position, "went_back" otherwise (a stage missing
# from the funnel counts as position -1). It converted when a conversion credited to its stage
# happened between its start and its end (both included: the goal event that also moves the
# contact on is credited to the stage it was in). duration_seconds: whole seconds, cut down.
# The live refresh runs it for one (funnel, contact), the rebuild for every funnel at once:
# the same statement, so both agree by construction.
_STAYS_SQL = """
INSERT INTO {stay} (id, workspace_id, funnel_id, stage_id, contact_id, entered_at, day,
    entrant, left_at, outcome, converted, duration_seconds)
SELECT t.id, t.workspace_id, t.funnel_id, t.to_stage_id, t.contact_id, t.occurred_at, {day},
    t.from_stage_id IS NULL, t.left_at,
    CASE WHEN t.left_at IS NULL THEN %s
        WHEN COALESCE(next_stage.position, -1) > COALESCE(stage.position, -1) THEN %s
        ELSE %s END,
    EXISTS (SELECT 1 FROM {conversion} c WHERE c.funnel_id = t.funnel_id
        AND c.contact_id = t.contact_id AND c.stage_id = t.to_stage_id
        AND c.occurred_at >= t.occurred_at AND (t.left_at IS NULL OR c.occurred_at <= t.left_at)),
    {duration}
FROM (
    SELECT tr.id, tr.workspace_id, tr.funnel_id, tr.contact_id, tr.from_stage_id,
        tr.to_stage_id, tr.occurred_at,
        LEAD(tr.occurred_at) OVER moves AS left_at,
        LEAD(tr.to_stage_id) OVER moves AS next_stage_id
    FROM {transition} tr
    WHERE {scope}
    WINDOW moves AS (PARTITION BY tr.funnel_id, tr.contact_id ORDER BY tr.occurred_at, tr.id)
) t
LEFT JOIN {stage} stage ON stage.id = t.to_stage_id AND stage.funnel_id = t.funnel_id
LEFT JOIN {stage} next_stage ON next_stage.id = t.next_stage_id
    AND next_stage.funnel_id = t.funnel_id
"""


def stays_insert(
    *,
    workspace_id: uuid.UUID | str | None = None,
    funnel_id: uuid.UUID | str | None = None,
    contact_id: uuid.UUID | str | None = None,
) -> int:
    """Write the StageStay rows of one contact in one funnel (funnel_id and contact_id), of
    every funnel of a workspace (workspace_id) or of every funnel (neither), in one
    INSERT ... SELECT; returns how many. The caller deletes the stays it replaces first."""
    if funnel_id is not None and contact_id is not None:
        scope, params = "tr.funnel_id = %s AND tr.contact_id = %s", [funnel_id, contact_id]
    elif workspace_id is not None:
        scope, params = (
            "tr.funnel_id IN (SELECT id FROM {funnel} WHERE workspace_id = %s)",
            [workspace_id],
        )
    else:
        scope, params = "1 = 1", []
    if connection.vendor == "postgresql":
        duration = "FLOOR(EXTRACT(EPOCH FROM (t.left_at - t.occurred_at)))::bigint"
    else:
        # Django's SQLite backend registers django_timestamp_diff (microseconds).
        duration = "django_timestamp_diff(t.left_at, t.occurred_at) / 1000000"
    day, day_params = connection.ops.datetime_cast_date_sql("t.occurred_at", (), "UTC")
    sql = _STAYS_SQL.format(
        stay=StageStay._meta.db_table,
        conversion=Conversion._meta.db_table,
        transition=StageTransition._meta.db_table,
        stage=Stage._meta.db_table,
        day=day,
        duration=duration,
        scope=scope.format(funnel=Funnel._meta.db_table),
    )
    outcomes = [StayOutcome.OPEN, StayOutcome.ADVANCED, StayOutcome.WENT_BACK]
    with connection.cursor() as cursor:
        # Names from the models, every value a parameter (in the order they appear).
        cursor.execute(sql, [*day_params, *outcomes, *(db_uuid(value) for value in params)])
        return int(cursor.rowcount)


# --- recomputing keys ------------------------------------------------------------------------


def _recompute_messages(key: DirtyKey) -> None:
    assert key.day is not None
    start = day_start(key.day)
    messages = Message.objects.filter(
        workspace_id=key.workspace_id, sent_at__gte=start, sent_at__lt=start + DAY
    )
    # Anonymous activity of the source on that day (through the partial index of
    # analytics/migrations/0003: empty for a workspace in the personal mode).
    activities = Activity.objects.filter(
        workspace_id=key.workspace_id,
        message__isnull=True,
        occurred_at__gte=start,
        occurred_at__lt=start + DAY,
    )
    rollups = MessageDaily.objects.filter(workspace_id=key.workspace_id, day=key.day)
    if key.is_broadcast:
        messages = messages.filter(broadcast_id=key.object_id)
        activities = activities.filter(broadcast_id=key.object_id)
        rollups = rollups.filter(broadcast_id=key.object_id)
    else:
        messages = messages.filter(enrollment__sequence_id=key.object_id)
        activities = activities.filter(sequence_id=key.object_id, broadcast__isnull=True)
        rollups = rollups.filter(sequence_id=key.object_id)
    rollups.delete()
    MessageDaily.objects.bulk_create(
        _message_dailies(message_figures(messages), anonymous_figures(activities))
    )


def _recompute_stays(funnel_id: uuid.UUID, contact_id: uuid.UUID) -> set[dt.date]:
    """Recompute one contact's stays in one funnel; returns the entry days before and after
    (their StageDaily rows change)."""
    current = StageStay.objects.filter(funnel_id=funnel_id, contact_id=contact_id)
    days = set(current.values_list("day", flat=True))
    current.delete()
    stays_insert(funnel_id=funnel_id, contact_id=contact_id)
    return days | set(current.values_list("day", flat=True))


def _recompute_funnel_day(funnel_id: uuid.UUID, day: dt.date) -> None:
    stays = StageStay.objects.filter(funnel_id=funnel_id, day=day)
    StageDaily.objects.filter(funnel_id=funnel_id, day=day).delete()
    StageDaily.objects.bulk_create(_stage_daily(row) for row in stage_figures(stays))
    StageDurationDaily.objects.filter(funnel_id=funnel_id, day=day).delete()
    StageDurationDaily.objects.bulk_create(_duration_daily(row) for row in duration_figures(stays))
    start = day_start(day)
    ConversionDaily.objects.filter(funnel_id=funnel_id, day=day).delete()
    conversions = Conversion.objects.filter(
        funnel_id=funnel_id, occurred_at__gte=start, occurred_at__lt=start + DAY
    )
    ConversionDaily.objects.bulk_create(
        _conversion_daily(row) for row in conversion_figures(conversions)
    )


def _exclusive() -> bool:
    """Take the analytics lock for this transaction (PostgreSQL); False when another refresh or
    rebuild holds it. SQLite serialises writing transactions by itself."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _fold(keys: list[DirtyKey]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    seen: set[tuple[Any, ...]] = set()
    for key in keys:
        identity = (key.kind, key.object_id, key.is_broadcast, key.day, key.contact_id)
        if identity not in seen:
            seen.add(identity)
            yield key.kind, identity


def rollups_refresh(*, limit: int = REFRESH_BATCH, workspace_id: str | None = None) -> int:
    """Recompute up to `limit` dirty keys (oldest first; only one workspace's when given) and
    the funnel-days their stays touch, in one transaction. Returns how many dirty marks were
    consumed; 0 also when another refresh runs now.

    Safe to run twice and concurrently: one refresh at a time holds the analytics lock, and a
    mark written while this runs survives it (its change is recomputed by the next run).
    """
    with transaction.atomic():
        if not _exclusive():
            return 0
        pending = DirtyKey.objects.order_by("id")
        if workspace_id is not None:
            pending = pending.filter(workspace_id=workspace_id)
        claimed = list(pending[:limit])
        if not claimed:
            return 0
        by_identity = {
            (key.kind, key.object_id, key.is_broadcast, key.day, key.contact_id): key
            for key in claimed
        }
        funnel_days: set[tuple[uuid.UUID, dt.date]] = set()
        for kind, identity in _fold(claimed):
            key = by_identity[identity]
            if kind == DirtyKind.MESSAGES:
                _recompute_messages(key)
            elif kind == DirtyKind.STAYS:
                assert key.contact_id is not None
                days = _recompute_stays(key.object_id, key.contact_id)
                funnel_days |= {(key.object_id, day) for day in days}
            else:
                assert key.day is not None
                funnel_days.add((key.object_id, key.day))
        for funnel_id, day in sorted(funnel_days):
            _recompute_funnel_day(funnel_id, day)
        DirtyKey.objects.filter(pk__in=[key.pk for key in claimed]).delete()
    return len(claimed)


# Workspaces whose rollups were folded on entering rollups_fresh, in this context.
_fresh: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "analytics_rollups_fresh", default=frozenset()
)


def rollups_refresh_pending(*, workspace_id: str, limit: int = REFRESH_BATCH) -> None:
    """Fold the workspace's pending changes into its rollups before a report reads them, so a
    report never lags its own workspace's writes. Bounded by `limit` marks: a large backlog is
    left to the beat, and the report reads what is there. Inside rollups_fresh for the
    workspace (a page of several reports) it was done on entering, and nothing happens here.

    Usually nothing is pending: one indexed look first, instead of a transaction, the lock
    and the claim (a report's fixed cost). A mark committed right after the look is the same
    as one committed right after the refresh: the beat takes it."""
    if str(workspace_id) in _fresh.get():
        return
    if DirtyKey.objects.filter(workspace_id=workspace_id).exists():
        rollups_refresh(limit=limit, workspace_id=workspace_id)


@contextlib.contextmanager
def rollups_fresh(workspace_id: str | uuid.UUID) -> Iterator[None]:
    """Fold the workspace's pending changes once, for all the reports read inside (a page
    runs several query classes, each of which would look again)."""
    rollups_refresh_pending(workspace_id=str(workspace_id))
    token = _fresh.set(_fresh.get() | {str(workspace_id)})
    try:
        yield
    finally:
        _fresh.reset(token)


def rollups_reconcile(*, now: dt.datetime) -> int:
    """Mark the keys of messages sent between the previous pass and RECONCILE_LAG ago (the
    announcement a killed sending worker never made). The first pass only sets the watermark:
    history is the rebuild's business. Returns how many keys. Safe to run twice."""
    until = now - RECONCILE_LAG
    with transaction.atomic():
        watermark, created = RollupWatermark.objects.select_for_update().get_or_create(
            name="sent", defaults={"until": until}
        )
        if created or until <= watermark.until:
            return 0
        keys = _message_keys(
            Message.objects.filter(sent_at__gt=watermark.until, sent_at__lte=until)
        )
        DirtyKey.objects.bulk_create(keys)
        watermark.until = until
        watermark.save(update_fields=["until"])
    return len(keys)


# --- the rebuild -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RebuildResult:
    message_rows: int
    stays: int
    stage_rows: int
    conversion_rows: int
    duration_rows: int = 0


def _bulk(model: Any, rows: Iterable[Any]) -> int:
    count = 0
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BULK_BATCH:
            model.objects.bulk_create(batch)
            count += len(batch)
            batch = []
    if batch:
        model.objects.bulk_create(batch)
        count += len(batch)
    return count


def rollups_rebuild(*, workspace_id: str | uuid.UUID | None = None) -> RebuildResult:
    """Recompute every rollup (of one workspace, or all) from the raw rows, in one transaction,
    with the aggregates the live refresh uses. Dirty marks older than the rebuild are dropped
    (it covers them). Safe to run twice; waits for a running refresh."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        scope: dict[str, Any] = {} if workspace_id is None else {"workspace_id": workspace_id}
        covered = DirtyKey.objects.filter(**scope).order_by("-id").values_list("id", flat=True)
        newest = covered.first()
        for model in (MessageDaily, StageStay, StageDaily, StageDurationDaily, ConversionDaily):
            model.objects.filter(**scope).delete()
        message_rows = _bulk(
            MessageDaily,
            _message_dailies(
                message_figures(Message.objects.filter(**scope)),
                anonymous_figures(Activity.objects.filter(**scope)),
            ),
        )
        funnels = Funnel.objects.filter(**scope)
        stays = stays_insert(workspace_id=workspace_id)
        stays_in_scope = StageStay.objects.filter(**scope)
        stage_rows = _bulk(StageDaily, (_stage_daily(row) for row in stage_figures(stays_in_scope)))
        duration_rows = _bulk(
            StageDurationDaily, (_duration_daily(row) for row in duration_figures(stays_in_scope))
        )
        conversion_rows = _bulk(
            ConversionDaily,
            (
                _conversion_daily(row)
                for row in conversion_figures(Conversion.objects.filter(funnel__in=funnels))
            ),
        )
        if newest is not None:
            DirtyKey.objects.filter(**scope, id__lte=newest).delete()
    return RebuildResult(
        message_rows=message_rows,
        stays=stays,
        stage_rows=stage_rows,
        conversion_rows=conversion_rows,
        duration_rows=duration_rows,
    )
