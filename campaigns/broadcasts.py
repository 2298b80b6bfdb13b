"""Broadcasts: one mail to a list or a segment, now or at a time, optionally at the same local
time in each contact's zone, with an optional A/B test on a sample.

State lives in the database (DESIGN.md, Sending):

- broadcast_send creates the Message rows (one per (broadcast, contact), in batches of
  BATCH_SIZE with ON CONFLICT DO NOTHING on that unique constraint, so running it twice, or
  after a pause, never duplicates) with next_attempt_at = when each mail may leave: send_at (or
  now), the contact's local wall-clock time when `local_time`, later when the frequency cap says
  so (deferred, never dropped).
- broadcasts_dispatch (beat) hands due queued messages of scheduled and sending broadcasts to
  campaigns.messages_send in batches; campaigns/sending.py claims each one, re-checks that the
  contact is mailable, applies the workspace's send rate (the throttle) and records the result.
  It also marks broadcasts sent once every message is final.
- Pausing sets the status: dispatch skips the broadcast and sending.py does not claim its
  messages (not even from a batch handed out before the pause); they stay queued, and resuming
  sends them. Nothing is lost, and the unique row plus the claim duplicate nothing.
- A/B test: first only `sample_percent` of the audience gets a message, split evenly across the
  variants (0 = the broadcast's own subject and HTML, k = variants[k - 1]). broadcast_ab_decide
  (beat) picks the winner `wait` after the sample's last planned send, by human opens or clicks
  (Message.opened_at / clicked_at; machine opens are never recorded there) over delivered mails,
  ties going to the lower variant, and creates the rest of the audience's messages with it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import Coalesce
from django.utils.translation import gettext as _

from campaigns import rendering
from campaigns.engine import cap_free_at, next_local_time, zone_of
from campaigns.models import Broadcast, BroadcastStatus, Message, MessageStatus
from campaigns.tracking_links import validate_utm
from contacts.models import (
    Contact,
    ContactQuerySet,
    ContactStatus,
    MailingList,
    Segment,
    SubscriptionStatus,
    Suppression,
)
from contacts.segments import segment_members
from core.durations import parse_duration
from core.exceptions import ApplicationError, ConflictError
from core.models import Workspace

BATCH_SIZE = 1000
# Messages handed to one sending task, and at most this many batches per dispatch tick.
SEND_BATCH_SIZE = 500
DISPATCH_BATCHES_PER_TICK = 20
METRICS = ("open_rate", "click_rate")
UNFINISHED = (MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.RETRYING)
# Messages that count towards the frequency cap (failed and cancelled ones never left).
CAP_COUNTED = (*UNFINISHED, MessageStatus.SENT)
RUNNING = (BroadcastStatus.SCHEDULED, BroadcastStatus.SENDING)
WEEK = dt.timedelta(days=7)


# --- validation ------------------------------------------------------------------------------


def _template(source: object, field: str) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ApplicationError(_("This field is required."), field=field)
    try:
        rendering.check_template(source)
    except ApplicationError as error:
        raise ApplicationError(error.message, field=field) from error
    return source


def _variants(variants: object) -> list[dict[str, str]]:
    if variants in (None, ""):
        return []
    if not isinstance(variants, list):
        raise ApplicationError(_("variants must be a list"), field="variants")
    cleaned = []
    for variant in variants:
        if not isinstance(variant, dict):
            raise ApplicationError(_("each variant needs subject and html"), field="variants")
        cleaned.append(
            {
                "subject": _template(variant.get("subject"), "variants"),
                "html": _template(variant.get("html"), "variants"),
            }
        )
    return cleaned


def _ab_test(ab_test: object, variants: list[dict[str, str]]) -> dict[str, Any] | None:
    if ab_test in (None, "", {}):
        return None
    if not isinstance(ab_test, dict):
        raise ApplicationError(_("ab_test must be an object"), field="ab_test")
    percent = ab_test.get("sample_percent")
    if not isinstance(percent, int) or isinstance(percent, bool) or not 1 <= percent <= 50:
        raise ApplicationError(_("sample_percent must be between 1 and 50"), field="ab_test")
    metric = ab_test.get("metric", "open_rate")
    if metric not in METRICS:
        raise ApplicationError(_("metric must be open_rate or click_rate"), field="ab_test")
    wait = ab_test.get("wait")
    try:
        waited = parse_duration(wait) if isinstance(wait, str) else None
    except ValueError:
        waited = None
    if waited is None or waited <= dt.timedelta(0):
        raise ApplicationError(_("wait must be an ISO 8601 duration, e.g. PT4H"), field="ab_test")
    if not variants:
        raise ApplicationError(_("An A/B test needs at least one variant."), field="variants")
    return {"sample_percent": percent, "metric": metric, "wait": str(wait).strip().upper()}


def _audience(
    workspace: Workspace, mailing_list: MailingList | None, segment: Segment | None
) -> tuple[MailingList | None, Segment | None]:
    if (mailing_list is None) == (segment is None):
        raise ApplicationError(_("Choose either a list or a segment."), field="list")
    for chosen, field in ((mailing_list, "list"), (segment, "segment")):
        if chosen is not None and chosen.workspace_id != workspace.pk:
            raise ApplicationError(_("No such %(field)s.") % {"field": field}, field=field)
    return mailing_list, segment


def _editable(broadcast: Broadcast) -> None:
    if broadcast.status != BroadcastStatus.DRAFT:
        raise ConflictError(_("Only a draft broadcast can be changed."))


@transaction.atomic
def broadcast_create(
    *,
    workspace: Workspace,
    name: str,
    subject: str,
    html: str,
    mailing_list: MailingList | None = None,
    segment: Segment | None = None,
    variants: object = None,
    send_at: dt.datetime | None = None,
    local_time: bool = False,
    ab_test: object = None,
    utm: object = None,
) -> Broadcast:
    """Create a draft broadcast after validating audience, templates, variants and A/B test.
    Not safe to run twice (two drafts); the API guards it with an idempotency key."""
    broadcast = Broadcast(workspace=workspace)
    return _apply(
        broadcast,
        {
            "name": name,
            "subject": subject,
            "html": html,
            "mailing_list": mailing_list,
            "segment": segment,
            "variants": variants,
            "send_at": send_at,
            "local_time": local_time,
            "ab_test": ab_test,
            "utm": utm,
        },
    )


@transaction.atomic
def broadcast_update(*, broadcast: Broadcast, **changes: Any) -> Broadcast:
    """Change a draft broadcast (fields as in broadcast_create; ConflictError once it was
    sent). Safe to run twice."""
    broadcast = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
    _editable(broadcast)
    values: dict[str, Any] = {
        "name": broadcast.name,
        "subject": broadcast.subject,
        "html": broadcast.html,
        "mailing_list": broadcast.mailing_list,
        "segment": broadcast.segment,
        "variants": broadcast.variants,
        "send_at": broadcast.send_at,
        "local_time": broadcast.local_time,
        "ab_test": broadcast.ab_test,
        "utm": broadcast.utm,
    }
    if "mailing_list" in changes and changes["mailing_list"] is not None:
        values["segment"] = None
    if "segment" in changes and changes["segment"] is not None:
        values["mailing_list"] = None
    values.update(changes)
    return _apply(broadcast, values)


def _apply(broadcast: Broadcast, values: dict[str, Any]) -> Broadcast:
    name = str(values["name"] or "").strip()
    if not name:
        raise ApplicationError(_("This field is required."), field="name")
    workspace = broadcast.workspace
    broadcast.name = name[:150]
    broadcast.mailing_list, broadcast.segment = _audience(
        workspace, values["mailing_list"], values["segment"]
    )
    broadcast.subject = _template(values["subject"], "subject")[:300]
    broadcast.html = _template(values["html"], "html")
    broadcast.variants = _variants(values["variants"])
    broadcast.ab_test = _ab_test(values["ab_test"], broadcast.variants)
    broadcast.send_at = values["send_at"]
    broadcast.local_time = bool(values["local_time"])
    broadcast.utm = validate_utm(values.get("utm"))
    if broadcast.local_time and broadcast.send_at is None:
        raise ApplicationError(
            _("Sending at each contact's local time needs a time to send at."), field="send_at"
        )
    broadcast.save()
    return broadcast


# --- the audience and the messages -----------------------------------------------------------


def _subscribed_audience(broadcast: Broadcast) -> ContactQuerySet:
    workspace = broadcast.workspace
    if broadcast.mailing_list_id is not None:
        contacts = Contact.objects.filter(
            workspace=workspace,
            subscriptions__mailing_list_id=broadcast.mailing_list_id,
            subscriptions__status=SubscriptionStatus.SUBSCRIBED,
        )
    elif broadcast.segment is not None:
        contacts = segment_members(broadcast.segment)
    else:
        return Contact.objects.none()
    return contacts.filter(workspace=workspace, status=ContactStatus.SUBSCRIBED).order_by("pk")


def broadcast_audience(broadcast: Broadcast) -> Iterator[Contact]:
    """The contacts the broadcast is for now, in batches of BATCH_SIZE: the list's subscribers
    or the segment's members, only mailable ones (subscribed, address not suppressed: the rule
    of contacts.selectors.contact_is_mailable, one query per batch); sending.py checks again at
    the moment of sending."""
    contacts = _subscribed_audience(broadcast).only("pk", "email", "timezone", "workspace_id")
    for chunk in _chunks(contacts.iterator(chunk_size=BATCH_SIZE)):
        hashes = {contact.pk: Suppression.hash_email(contact.email) for contact in chunk}
        suppressed = set(
            Suppression.objects.filter(
                workspace_id=broadcast.workspace_id, email_hash__in=list(hashes.values())
            ).values_list("email_hash", flat=True)
        )
        yield from (contact for contact in chunk if hashes[contact.pk] not in suppressed)


def _sample_rank(broadcast: Broadcast, contact_id: uuid.UUID) -> bytes:
    # A fixed pseudo-random order per broadcast: the sample and its split are the same on
    # every run, so repeating broadcast_send picks the same contacts.
    return hashlib.sha256(f"{broadcast.pk}:{contact_id}".encode()).digest()


def _wall_clock(broadcast: Broadcast) -> tuple[dt.date, str]:
    assert broadcast.send_at is not None
    local = broadcast.send_at.astimezone(zone_of(Contact(), broadcast.workspace))
    return local.date(), local.strftime("%H:%M")


def _planned_at(broadcast: Broadcast, contact: Contact, now: dt.datetime) -> dt.datetime:
    start = max(broadcast.send_at or now, now)
    if not broadcast.local_time or broadcast.send_at is None:
        return start
    day, hhmm = _wall_clock(broadcast)
    zone = zone_of(contact, broadcast.workspace)
    hour, minute = (int(part) for part in hhmm.split(":"))
    at = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=zone).astimezone(dt.UTC)
    # Where that wall-clock moment has passed already (far east of the workspace, or an A/B
    # rest decided later), the next occurrence of it.
    return at if at >= now else next_local_time(now, hhmm, zone)


def _cap_history(
    broadcast: Broadcast, contact_ids: list[uuid.UUID], since: dt.datetime
) -> dict[uuid.UUID, list[dt.datetime]]:
    history: dict[uuid.UUID, list[dt.datetime]] = defaultdict(list)
    rows = (
        Message.objects.filter(contact_id__in=contact_ids, status__in=CAP_COUNTED)
        .exclude(broadcast_id=broadcast.pk)
        .annotate(counted_at=Coalesce("sent_at", "next_attempt_at", "created_at"))
        .filter(counted_at__gt=since - WEEK)
        .values_list("contact_id", "counted_at")
    )
    for contact_id, counted_at in rows:
        history[contact_id].append(counted_at)
    return history


def _chunks(contacts: Iterable[Contact]) -> Iterator[list[Contact]]:
    chunk: list[Contact] = []
    for contact in contacts:
        chunk.append(contact)
        if len(chunk) == BATCH_SIZE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _subject(broadcast: Broadcast, variant: int) -> str:
    if variant == 0:
        return broadcast.subject
    return str(broadcast.variants[variant - 1]["subject"])


def _create_messages(
    broadcast: Broadcast,
    contacts: Iterable[Contact],
    now: dt.datetime,
    variant_of: dict[uuid.UUID, int] | None = None,
) -> int:
    """Create the messages of `contacts` (ON CONFLICT DO NOTHING per (broadcast, contact)), in
    batches; returns how many rows were new."""
    workspace = broadcast.workspace
    created = 0
    fixed_variant = broadcast.winner if broadcast.winner is not None else 0
    for chunk in _chunks(contacts):
        planned = {contact.pk: _planned_at(broadcast, contact, now) for contact in chunk}
        history = _cap_history(broadcast, list(planned), min(planned.values()))
        rows = []
        for contact in chunk:
            variant = variant_of[contact.pk] if variant_of is not None else fixed_variant
            at = cap_free_at(
                planned[contact.pk],
                history.get(contact.pk, []),
                per_day=workspace.frequency_cap_per_day,
                per_week=workspace.frequency_cap_per_week,
            )
            rows.append(
                Message(
                    workspace_id=workspace.pk,
                    contact_id=contact.pk,
                    broadcast_id=broadcast.pk,
                    variant=variant,
                    subject=_subject(broadcast, variant)[:500],
                    status=MessageStatus.QUEUED,
                    next_attempt_at=at,
                )
            )
        before = Message.objects.filter(broadcast_id=broadcast.pk).count()
        with transaction.atomic():
            Message.objects.bulk_create(rows, ignore_conflicts=True)
        created += Message.objects.filter(broadcast_id=broadcast.pk).count() - before
    return created


def _sample(broadcast: Broadcast, audience: list[Contact]) -> dict[uuid.UUID, int]:
    assert broadcast.ab_test is not None
    ranked = sorted(audience, key=lambda contact: _sample_rank(broadcast, contact.pk))
    size = math.ceil(len(ranked) * int(broadcast.ab_test["sample_percent"]) / 100)
    variants = len(broadcast.variants) + 1
    return {contact.pk: index % variants for index, contact in enumerate(ranked[:size])}


def _mark_started(broadcast: Broadcast, now: dt.datetime) -> None:
    due = broadcast.send_at if broadcast.send_at and broadcast.send_at > now else None
    broadcast.status = BroadcastStatus.SCHEDULED if due is not None else BroadcastStatus.SENDING
    broadcast.started_at = now
    broadcast.save(update_fields=["status", "started_at"])


def broadcast_start(*, broadcast: Broadcast, now: dt.datetime) -> Broadcast:
    """What the Send button and POST /broadcasts/{id}/send/ do: mark the broadcast scheduled
    or sending at once, and create its messages (broadcast_send) in a Celery task after
    commit, so that a large audience never holds up the request. Safe to run twice."""
    from campaigns.broadcast_tasks import broadcast_prepare

    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
        if broadcast.status not in (BroadcastStatus.DRAFT, *RUNNING):
            raise ConflictError(_("This broadcast cannot be sent in its current state."))
        if broadcast.mailing_list_id is None and broadcast.segment_id is None:
            raise ApplicationError(_("Choose either a list or a segment."), field="list")
        if broadcast.status == BroadcastStatus.DRAFT:
            _mark_started(broadcast, now)
        broadcast_id = str(broadcast.pk)
        transaction.on_commit(lambda: broadcast_prepare.delay(broadcast_id))
    return broadcast


def broadcast_send(*, broadcast: Broadcast, now: dt.datetime) -> Broadcast:
    """Start sending: create the audience's messages (or, with an A/B test, the sample's), each
    due when it may leave, and mark the broadcast scheduled (send_at ahead) or sending.

    Safe to run twice: messages are unique per (broadcast, contact) and created with ON
    CONFLICT DO NOTHING; a second run only adds contacts who joined the audience since. A
    paused, sent or cancelled broadcast is refused (ConflictError).
    """
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
        if broadcast.status not in (BroadcastStatus.DRAFT, *RUNNING):
            raise ConflictError(_("This broadcast cannot be sent in its current state."))
        if broadcast.mailing_list_id is None and broadcast.segment_id is None:
            raise ApplicationError(_("Choose either a list or a segment."), field="list")
        audience = list(broadcast_audience(broadcast))
        if broadcast.status == BroadcastStatus.DRAFT:
            _mark_started(broadcast, now)
        broadcast.audience_count = len(audience)
        broadcast.save(update_fields=["audience_count"])
    if broadcast.ab_test and broadcast.winner is None:
        variant_of = _sample(broadcast, audience)
        sample = [contact for contact in audience if contact.pk in variant_of]
        _create_messages(broadcast, sample, now, variant_of)
        last = Message.objects.filter(broadcast_id=broadcast.pk).order_by("-next_attempt_at")
        last_at = last.values_list("next_attempt_at", flat=True).first() or now
        broadcast.ab_decide_at = last_at + parse_duration(str(broadcast.ab_test["wait"]))
        Broadcast.objects.filter(pk=broadcast.pk, winner__isnull=True).update(
            ab_decide_at=broadcast.ab_decide_at
        )
    elif broadcast.variants and not broadcast.ab_test:
        # Variants without a test: the whole audience, split evenly.
        variants = len(broadcast.variants) + 1
        ranked = sorted(audience, key=lambda contact: _sample_rank(broadcast, contact.pk))
        split = {contact.pk: index % variants for index, contact in enumerate(ranked)}
        _create_messages(broadcast, ranked, now, split)
    else:
        _create_messages(broadcast, audience, now)
    return broadcast


# --- pause, resume, dispatch, finish ---------------------------------------------------------


def _set_status(broadcast: Broadcast, allowed: Iterable[str], status: str) -> Broadcast:
    updated = Broadcast.objects.filter(pk=broadcast.pk, status__in=list(allowed)).update(
        status=status
    )
    broadcast.refresh_from_db()
    if not updated and broadcast.status != status:
        raise ConflictError(_("This broadcast cannot do that in its current state."))
    return broadcast


def broadcast_pause(*, broadcast: Broadcast) -> Broadcast:
    """Pause a scheduled or sending broadcast: nothing more of it is handed out or claimed; its
    queued messages wait. Safe to run twice."""
    return _set_status(broadcast, RUNNING, BroadcastStatus.PAUSED)


def broadcast_resume(*, broadcast: Broadcast) -> Broadcast:
    """Resume a paused broadcast: its queued messages go out as they are due (and, if it was
    paused before its messages were made, they are made now). Safe to run twice."""
    from campaigns.broadcast_tasks import broadcast_prepare

    broadcast = _set_status(broadcast, [BroadcastStatus.PAUSED], BroadcastStatus.SENDING)
    broadcast_id = str(broadcast.pk)
    transaction.on_commit(lambda: broadcast_prepare.delay(broadcast_id))
    return broadcast


@dataclass(frozen=True)
class DispatchResult:
    """Message ids handed to sending tasks (one list per task) and broadcasts finished."""

    batches: list[list[str]]
    finished: int


def broadcasts_dispatch(*, now: dt.datetime) -> DispatchResult:
    """Hand due queued messages of scheduled and sending broadcasts to campaigns.messages_send,
    SEND_BATCH_SIZE per task after commit, and mark broadcasts whose every message is final as
    sent. Paused broadcasts are skipped. Safe to run twice: a message handed out twice is
    claimed by one task only."""
    from campaigns.sending_tasks import messages_send_task

    due = (
        Message.objects.filter(
            broadcast__status__in=RUNNING,
            status=MessageStatus.QUEUED,
            esp_accepted_at__isnull=True,
            next_attempt_at__lte=now,
        )
        .order_by("next_attempt_at", "pk")
        .values_list("pk", "broadcast_id")[: SEND_BATCH_SIZE * DISPATCH_BATCHES_PER_TICK]
    )
    rows = list(due)
    started = {broadcast_id for _pk, broadcast_id in rows}
    Broadcast.objects.filter(pk__in=started, status=BroadcastStatus.SCHEDULED).update(
        status=BroadcastStatus.SENDING
    )
    ids = [str(pk) for pk, _broadcast_id in rows]
    batches = [
        ids[start : start + SEND_BATCH_SIZE] for start in range(0, len(ids), SEND_BATCH_SIZE)
    ]
    for batch in batches:
        transaction.on_commit(functools.partial(messages_send_task.delay, batch))
    return DispatchResult(batches=batches, finished=broadcasts_finish(now=now))


def broadcasts_finish(*, now: dt.datetime) -> int:
    """Mark sending broadcasts whose messages are all final (and whose A/B test, if any, has a
    winner) as sent. Returns how many. Safe to run twice."""
    unfinished = Message.objects.filter(status__in=UNFINISHED).values("broadcast_id")
    return (
        Broadcast.objects.filter(status=BroadcastStatus.SENDING)
        .filter(Q(ab_test__isnull=True) | Q(winner__isnull=False))
        .exclude(pk__in=unfinished.filter(broadcast_id__isnull=False))
        .update(status=BroadcastStatus.SENT, finished_at=now)
    )


# --- the A/B decision ------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantCounts:
    """A variant's numbers: sent, delivered (sent - bounced), unique human openers (a click
    counts as an open) and clickers."""

    variant: int
    subject: str
    sent: int
    delivered: int
    opened: int
    clicked: int

    @property
    def open_rate(self) -> float:
        return self.opened / self.delivered if self.delivered else 0.0

    @property
    def click_rate(self) -> float:
        return self.clicked / self.delivered if self.delivered else 0.0


def broadcast_variant_counts(
    broadcast: Broadcast, *, created_before: dt.datetime | None = None
) -> list[VariantCounts]:
    """The numbers of every variant of the broadcast (0 = its own content), in one query;
    with `created_before`, only of the messages made before then (an A/B test's sample: the
    rest of the audience is made when the winner is decided)."""
    sent = Q(status=MessageStatus.SENT)
    messages = Message.objects.filter(broadcast_id=broadcast.pk)
    if created_before is not None:
        messages = messages.filter(created_at__lt=created_before)
    rows = {
        row["variant"]: row
        for row in messages.values("variant").annotate(
            sent=Count("pk", filter=sent),
            bounced=Count("pk", filter=sent & Q(bounced_at__isnull=False)),
            opened=Count("pk", filter=Q(opened_at__isnull=False) | Q(clicked_at__isnull=False)),
            clicked=Count("pk", filter=Q(clicked_at__isnull=False)),
        )
    }
    counts = []
    for variant in range(len(broadcast.variants or []) + 1):
        row = rows.get(variant, {"sent": 0, "bounced": 0, "opened": 0, "clicked": 0})
        counts.append(
            VariantCounts(
                variant=variant,
                subject=_subject(broadcast, variant),
                sent=row["sent"],
                delivered=row["sent"] - row["bounced"],
                opened=row["opened"],
                clicked=row["clicked"],
            )
        )
    return counts


def broadcast_ab_decide(*, broadcast: Broadcast, now: dt.datetime) -> Broadcast:
    """Decide the A/B test of one sending broadcast whose wait is over: the variant with the
    best rate of the chosen metric wins (ties: the lower variant; all zero: variant 0, decided
    by chance), then the rest of the audience gets the winner. Safe to run twice: the winner
    is written once and the rest's messages are unique per contact."""
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
        if (
            not broadcast.ab_test
            or broadcast.status != BroadcastStatus.SENDING
            or broadcast.ab_decide_at is None
            or broadcast.ab_decide_at > now
        ):
            return broadcast
        if broadcast.winner is None:
            metric = str(broadcast.ab_test["metric"])
            counts = broadcast_variant_counts(broadcast)
            rates = [getattr(variant, metric) for variant in counts]
            best = max(rates)
            broadcast.winner = rates.index(best)
            broadcast.winner_by_chance = all(
                (v.clicked if metric == "click_rate" else v.opened) == 0 for v in counts
            )
            broadcast.save(update_fields=["winner", "winner_by_chance"])
    _create_messages(broadcast, broadcast_audience(broadcast), now)
    return broadcast


def broadcasts_ab_decide_due(*, now: dt.datetime) -> int:
    """Decide every sending broadcast's A/B test whose wait is over. Returns how many."""
    due = Broadcast.objects.filter(
        status=BroadcastStatus.SENDING, winner__isnull=True, ab_decide_at__lte=now
    ).select_related("workspace")
    decided = 0
    for broadcast in due:
        broadcast_ab_decide(broadcast=broadcast, now=now)
        decided += 1
    return decided


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BroadcastReport:
    """Progress and results of one broadcast (API.md: GET /broadcasts/{id}/report/)."""

    audience: int
    queued: int
    sent: int
    failed: int
    cancelled: int
    opened: int
    clicked: int
    open_rate: float
    click_rate: float
    variants: list[VariantCounts]
    winner: int | None

    @property
    def done(self) -> bool:
        return self.queued == 0

    @property
    def percent(self) -> int:
        total = self.queued + self.sent + self.failed + self.cancelled
        return round(100 * (total - self.queued) / total) if total else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "audience": self.audience,
            "queued": self.queued,
            "sent": self.sent,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "opened": self.opened,
            "clicked": self.clicked,
            "open_rate": self.open_rate,
            "click_rate": self.click_rate,
            "variants": [
                {
                    "variant": v.variant,
                    "subject": v.subject,
                    "sent": v.sent,
                    "opened": v.opened,
                    "clicked": v.clicked,
                }
                for v in self.variants
            ],
            "winner": self.winner,
        }


def broadcast_report(broadcast: Broadcast) -> BroadcastReport:
    """Counts of the broadcast's messages by status and its human opens and clicks."""
    totals = Message.objects.filter(broadcast_id=broadcast.pk).aggregate(
        queued=Count("pk", filter=Q(status__in=UNFINISHED)),
        sent=Count("pk", filter=Q(status=MessageStatus.SENT)),
        bounced=Count("pk", filter=Q(status=MessageStatus.SENT, bounced_at__isnull=False)),
        failed=Count("pk", filter=Q(status=MessageStatus.FAILED)),
        cancelled=Count("pk", filter=Q(status=MessageStatus.CANCELLED)),
        opened=Count("pk", filter=Q(opened_at__isnull=False) | Q(clicked_at__isnull=False)),
        clicked=Count("pk", filter=Q(clicked_at__isnull=False)),
    )
    delivered = totals["sent"] - totals["bounced"]
    return BroadcastReport(
        audience=broadcast.audience_count,
        queued=totals["queued"],
        sent=totals["sent"],
        failed=totals["failed"],
        cancelled=totals["cancelled"],
        opened=totals["opened"],
        clicked=totals["clicked"],
        open_rate=totals["opened"] / delivered if delivered else 0.0,
        click_rate=totals["clicked"] / delivered if delivered else 0.0,
        variants=broadcast_variant_counts(broadcast),
        winner=broadcast.winner,
    )


def broadcast_delete(*, broadcast: Broadcast) -> None:
    """Delete a broadcast that is not on its way (a running one must be paused first: its
    messages and their history go with it). Safe to run twice."""
    if broadcast.status in RUNNING:
        raise ConflictError(_("Pause the broadcast before deleting it."))
    Broadcast.objects.filter(pk=broadcast.pk).delete()
