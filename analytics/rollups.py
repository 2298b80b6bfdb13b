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

import datetime as dt
import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
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
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate

from analytics.models import (
    ConversionDaily,
    DirtyKey,
    DirtyKind,
    MessageDaily,
    RollupWatermark,
    StageDaily,
    StageStay,
    StayOutcome,
)
from campaigns.models import Message
from funnel.models import Conversion, Funnel, Stage, StageTransition

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


def messages_mark_dirty(*, message_ids: Iterable[str | uuid.UUID]) -> int:
    """Mark the message keys of these messages dirty (in the caller's transaction). Returns
    how many keys. Safe to run twice: a key marked twice is recomputed once."""
    ids = [str(message_id) for message_id in message_ids]
    if not ids:
        return 0
    keys = _message_keys(Message.objects.filter(pk__in=ids))
    DirtyKey.objects.bulk_create(keys)
    return len(keys)


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


def _message_daily(row: dict[str, Any]) -> MessageDaily:
    return MessageDaily(
        workspace_id=row["workspace_id"],
        day=row["sent_day"],
        sequence_id=None if row["broadcast_id"] else row["source_sequence"],
        step_key=row["step_key"],
        broadcast_id=row["broadcast_id"],
        variant=row["variant"],
        stage_id=row["stage_id"],
        **{field: row[field] for field in MESSAGE_COUNTS},
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


@dataclass(frozen=True)
class _Transition:
    id: uuid.UUID
    workspace_id: uuid.UUID
    funnel_id: uuid.UUID
    contact_id: uuid.UUID
    from_stage_id: uuid.UUID | None
    to_stage_id: uuid.UUID
    occurred_at: dt.datetime


TRANSITION_FIELDS = (
    "id",
    "workspace_id",
    "funnel_id",
    "contact_id",
    "from_stage_id",
    "to_stage_id",
    "occurred_at",
)


def stays_of(
    transitions: list[_Transition],
    positions: dict[uuid.UUID, int],
    conversions: Sequence[tuple[uuid.UUID | None, dt.datetime]],
) -> list[StageStay]:
    """The stays of one contact in one funnel from its transitions in time order (ties by
    id) and its conversions there (credited stage, time).

    A stay ends with the next move; it "advanced" when that move went to a later position,
    "went_back" otherwise. It converted when a conversion credited to its stage happened
    between its start and its end (both included: the goal event that also moves the contact
    on is credited to the stage it was in).
    """
    stays = []
    for index, transition in enumerate(transitions):
        following = transitions[index + 1] if index + 1 < len(transitions) else None
        stage_id = transition.to_stage_id
        entered_at = transition.occurred_at
        left_at = following.occurred_at if following else None
        if following is None:
            outcome = StayOutcome.OPEN
        elif positions.get(following.to_stage_id, -1) > positions.get(stage_id, -1):
            outcome = StayOutcome.ADVANCED
        else:
            outcome = StayOutcome.WENT_BACK
        converted = any(
            credited == stage_id and entered_at <= at and (left_at is None or at <= left_at)
            for credited, at in conversions
        )
        stays.append(
            StageStay(
                id=transition.id,
                workspace_id=transition.workspace_id,
                funnel_id=transition.funnel_id,
                stage_id=stage_id,
                contact_id=transition.contact_id,
                entered_at=entered_at,
                day=day_of(entered_at),
                entrant=transition.from_stage_id is None,
                left_at=left_at,
                outcome=outcome,
                converted=converted,
                duration_seconds=(
                    int((left_at - entered_at).total_seconds()) if left_at is not None else None
                ),
            )
        )
    return stays


def _positions(funnel_ids: Iterable[uuid.UUID | str]) -> dict[uuid.UUID, int]:
    return dict(Stage.objects.filter(funnel_id__in=list(funnel_ids)).values_list("id", "position"))


# --- recomputing keys ------------------------------------------------------------------------


def _recompute_messages(key: DirtyKey) -> None:
    assert key.day is not None
    start = day_start(key.day)
    messages = Message.objects.filter(
        workspace_id=key.workspace_id, sent_at__gte=start, sent_at__lt=start + DAY
    )
    rollups = MessageDaily.objects.filter(workspace_id=key.workspace_id, day=key.day)
    if key.is_broadcast:
        messages = messages.filter(broadcast_id=key.object_id)
        rollups = rollups.filter(broadcast_id=key.object_id)
    else:
        messages = messages.filter(enrollment__sequence_id=key.object_id)
        rollups = rollups.filter(sequence_id=key.object_id)
    rollups.delete()
    MessageDaily.objects.bulk_create(_message_daily(row) for row in message_figures(messages))


def _recompute_stays(funnel_id: uuid.UUID, contact_id: uuid.UUID) -> set[dt.date]:
    """Recompute one contact's stays in one funnel; returns the entry days before and after
    (their StageDaily rows change)."""
    current = StageStay.objects.filter(funnel_id=funnel_id, contact_id=contact_id)
    days = set(current.values_list("day", flat=True))
    transitions = [
        _Transition(*row)
        for row in StageTransition.objects.filter(funnel_id=funnel_id, contact_id=contact_id)
        .order_by("occurred_at", "id")
        .values_list(*TRANSITION_FIELDS)
    ]
    conversions = list(
        Conversion.objects.filter(funnel_id=funnel_id, contact_id=contact_id).values_list(
            "stage_id", "occurred_at"
        )
    )
    stays = stays_of(transitions, _positions([funnel_id]), conversions)
    current.delete()
    StageStay.objects.bulk_create(stays)
    return days | {stay.day for stay in stays}


def _recompute_funnel_day(funnel_id: uuid.UUID, day: dt.date) -> None:
    StageDaily.objects.filter(funnel_id=funnel_id, day=day).delete()
    StageDaily.objects.bulk_create(
        _stage_daily(row)
        for row in stage_figures(StageStay.objects.filter(funnel_id=funnel_id, day=day))
    )
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


def rollups_refresh_pending(*, workspace_id: str, limit: int = REFRESH_BATCH) -> None:
    """Fold the workspace's pending changes into its rollups before a report reads them, so a
    report never lags its own workspace's writes. Bounded by `limit` marks: a large backlog is
    left to the beat, and the report reads what is there."""
    rollups_refresh(limit=limit, workspace_id=workspace_id)


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


def _all_stays(funnels: QuerySet[Funnel]) -> Iterator[StageStay]:
    positions = _positions(funnels.values_list("pk", flat=True))
    conversions: dict[tuple[uuid.UUID, uuid.UUID], list[tuple[uuid.UUID | None, dt.datetime]]]
    conversions = defaultdict(list)
    for funnel_id, contact_id, stage_id, at in (
        Conversion.objects.filter(funnel__in=funnels)
        .values_list("funnel_id", "contact_id", "stage_id", "occurred_at")
        .iterator(chunk_size=BULK_BATCH)
    ):
        conversions[(funnel_id, contact_id)].append((stage_id, at))
    transitions = (
        StageTransition.objects.filter(funnel__in=funnels)
        .order_by("funnel_id", "contact_id", "occurred_at", "id")
        .values_list(*TRANSITION_FIELDS)
        .iterator(chunk_size=BULK_BATCH)
    )
    group: list[_Transition] = []
    for row in transitions:
        transition = _Transition(*row)
        if group and (group[0].funnel_id, group[0].contact_id) != (
            transition.funnel_id,
            transition.contact_id,
        ):
            yield from stays_of(
                group, positions, conversions[(group[0].funnel_id, group[0].contact_id)]
            )
            group = []
        group.append(transition)
    if group:
        yield from stays_of(
            group, positions, conversions[(group[0].funnel_id, group[0].contact_id)]
        )


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
        for model in (MessageDaily, StageStay, StageDaily, ConversionDaily):
            model.objects.filter(**scope).delete()
        messages = Message.objects.filter(**scope)
        message_rows = _bulk(
            MessageDaily, (_message_daily(row) for row in message_figures(messages))
        )
        funnels = Funnel.objects.filter(**scope)
        stays = _bulk(StageStay, _all_stays(funnels))
        stage_rows = _bulk(
            StageDaily,
            (_stage_daily(row) for row in stage_figures(StageStay.objects.filter(**scope))),
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
    )
