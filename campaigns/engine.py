"""The sequence engine: the beat tick that advances enrollments, triggers, goals and reactions.

State lives in the database, never in Celery ETAs. An enrollment is *at* a step
(current_step) since step_started_at and is looked at again when next_run_at is due:

- instant steps (move_stage, add_tag, remove_tag, set_attribute, condition, split, webhook,
  exit) run at once, one after the other, inside the tick; a webhook step owes one call,
  made after commit and retried from the database (campaigns/step_webhooks.py);
- wait is due at step_started_at + duration, or at the next occurrence of a local time
  ("09:00" in the contact's zone, else the workspace's) after step_started_at;
- wait_for is due at step_started_at + timeout and then takes the no-branch; a reaction
  (human open or click of this enrollment's mail, event, stage reached) takes the yes-branch
  at once (next_run_at = now) and schedules a tick;
- email checks that the contact is mailable, the send window and the frequency cap (a mail
  that may not leave now is deferred to the earliest allowed moment, never dropped), creates
  the one Message for (enrollment, step) and moves on to the step's next at once, so a
  following wait counts from the send. All messages of a batch go to ONE sending task,
  scheduled after commit.

tick() claims due enrollments with SELECT ... FOR UPDATE SKIP LOCKED (partial index
enrollment_due), so any number of workers may tick at once and each enrollment is advanced by
one of them; the unique (enrollment, step_key) of Message makes a repeated tick harmless.

A/B variants (the convention of broadcasts in campaigns/sending.py): Message.variant 0 is
the step's own subject and HTML, k >= 1 is step["variants"][k - 1]. When a step has variants
the choice is among them, by weight, seeded by choice_seed (sequence, contact, step): the same
for every retry, for the test drive of that contact (campaigns/simulation.py) and for a run
after re-entry.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import importlib
import logging
import uuid
import zoneinfo
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns import step_webhooks
from campaigns.milestones import milestones_set
from campaigns.models import (
    Enrollment,
    EnrollmentStatus,
    Message,
    MessageStatus,
    SegmentMembership,
    Sequence,
    SequenceStatus,
)
from campaigns.services import enrollment_create, enrollments_end, messages_cancel_unsent
from campaigns.tracking_links import with_utm
from contacts.models import (
    Contact,
    ContactStatus,
    Segment,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from contacts.segments import SegmentFilterError, segment_queryset
from contacts.services import contact_update
from core.durations import parse_duration
from core.models import Workspace
from funnel.models import ContactStage, Event, Funnel, Stage, TransitionCause

logger = logging.getLogger(__name__)

# An enrollment may pass at most this many instant steps in one tick; more means a graph that
# loops without waiting (validation forbids it, so this only guards against surprises).
MAX_INSTANT_STEPS = 50
# Messages that count towards the frequency cap (failed and cancelled ones never left).
CAP_COUNTED = (
    MessageStatus.QUEUED,
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.RETRYING,
)
DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=7)


@dataclass
class TickResult:
    """What one tick did. `claimed` equal to the limit means more may be due."""

    claimed: int = 0
    steps: int = 0
    messages: int = 0
    deferred: int = 0
    completed: int = 0
    exited: int = 0
    failed: int = 0
    message_ids: list[str] = field(default_factory=list)


# --- time


def zone_of(contact: Contact, workspace: Workspace) -> dt.tzinfo:
    """The contact's time zone, else the workspace's, else UTC (for unknown names too)."""
    for name in (contact.timezone, workspace.timezone):
        if name:
            try:
                return zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                continue
    return dt.UTC


def _local_time(text: str) -> dt.time:
    hour, minute = text.split(":")
    return dt.time(int(hour), int(minute))


def next_local_time(after: dt.datetime, hhmm: str, zone: dt.tzinfo) -> dt.datetime:
    """The first moment at or after `after` whose wall-clock time in `zone` is `hhmm`."""
    local = after.astimezone(zone)
    at = _local_time(hhmm)
    for offset in range(3):
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=offset), at, tzinfo=zone)
        if candidate >= after:
            return candidate.astimezone(dt.UTC)
    raise AssertionError("unreachable: a local time occurs within two days")


def window_open_at(
    moment: dt.datetime, window: dict[str, Any] | None, zone: dt.tzinfo
) -> dt.datetime:
    """`moment` when it lies inside the send window, else the window's next opening.

    window: {"days": [0..6] (Monday = 0), "start": "09:00", "end": "18:00"} in `zone`.
    """
    if not window:
        return moment
    local = moment.astimezone(zone)
    start, end = _local_time(window["start"]), _local_time(window["end"])
    for offset in range(8):
        day = local.date() + dt.timedelta(days=offset)
        if day.weekday() not in window["days"]:
            continue
        opens = dt.datetime.combine(day, start, tzinfo=zone)
        closes = dt.datetime.combine(day, end, tzinfo=zone)
        if moment < closes:
            return max(opens, moment).astimezone(dt.UTC)
    raise AssertionError("unreachable: a window with days opens within a week")


def cap_free_at(
    now: dt.datetime, sent: Iterable[dt.datetime], *, per_day: int, per_week: int
) -> dt.datetime:
    """The earliest moment at or after `now` when one more marketing mail keeps the contact
    within both caps, given when the earlier ones were sent (or queued). A cap of 0 means no
    limit."""
    earliest = now
    history = sorted(sent)
    for period, cap in ((DAY, per_day), (WEEK, per_week)):
        if cap <= 0:
            continue
        recent = [moment for moment in history if moment > now - period]
        if len(recent) >= cap:
            # The mail that has to age out of the period before one more may go.
            earliest = max(earliest, recent[len(recent) - cap] + period)
    return earliest


def choice_seed(*, sequence_id: Any, contact_id: Any, step_key: str) -> str:
    """The seed of a split's path and an email's A/B variant for one contact at one step.

    Made of what the test drive knows before any run exists (sequence, contact, step), so a
    real run takes the path and gets the variant the test drive showed for that contact, and
    a retried tick agrees with the first. A contact that runs the sequence again (re-entry)
    takes the same path and variant again: it stays in one arm of an A/B test.
    """
    return f"{sequence_id}:{contact_id}:{step_key}"


def _choice(seed: str, weights: list[int]) -> int:
    """A weighted choice that is the same every time for the same seed (retries agree)."""
    total = sum(weights)
    point = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % total
    for index, weight in enumerate(weights):
        if point < weight:
            return index
        point -= weight
    return len(weights) - 1


# --- the tick


class _StepFailed(Exception):
    """An instant step could not run (reason readable by a person)."""


@dataclass
class _Batch:
    """What one tick knows about its claimed enrollments, loaded with a fixed number of
    queries for the whole batch."""

    now: dt.datetime
    result: TickResult
    by_id: dict[uuid.UUID, Enrollment]
    queue: deque[Enrollment]
    processed: set[uuid.UUID] = field(default_factory=set)
    mailable: dict[uuid.UUID, bool] = field(default_factory=dict)
    sent_times: dict[uuid.UUID, list[dt.datetime]] = field(default_factory=dict)
    new_messages: list[Message] = field(default_factory=list)
    created: set[tuple[uuid.UUID, str]] = field(default_factory=set)
    existing: set[tuple[uuid.UUID | None, str]] = field(default_factory=set)
    webhooks: list[tuple[uuid.UUID, str]] = field(default_factory=list)


# The batch a tick in this thread is advancing: a reaction caused by the tick itself (a
# move_stage step announcing stage_changed) updates those in-memory enrollments instead of rows
# that the tick will overwrite when it saves the batch.
_current_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
    "campaigns_engine_batch", default=None
)


def _claim(limit: int, now: dt.datetime) -> list[Enrollment]:
    # One locking query over the partial index enrollment_due returns the enrollments' own
    # columns; their contacts, workspaces and sequences (with the steps JSON) are then read
    # once each by primary key. Two shapes made the claim grow with the table
    # (bench/scheduler.py): joining the sequence into every locked row, and locking ids
    # first, then reading the 1,000 rows again by id (1,000 probes into a primary key index
    # that, at 10M rows, no longer fits in shared buffers).
    enrollments = list(
        Enrollment.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(
            status=EnrollmentStatus.ACTIVE,
            next_run_at__lte=now,
            sequence__status=SequenceStatus.ACTIVE,
        )
        .order_by("next_run_at")[:limit]
    )
    if not enrollments:
        return []
    contacts = Contact.objects.in_bulk({enrollment.contact_id for enrollment in enrollments})
    workspaces = Workspace.objects.in_bulk({e.workspace_id for e in enrollments})
    sequences = Sequence.objects.in_bulk({enrollment.sequence_id for enrollment in enrollments})
    for enrollment in enrollments:
        enrollment.contact = contacts[enrollment.contact_id]
        enrollment.workspace = workspaces[enrollment.workspace_id]
        enrollment.sequence = sequences[enrollment.sequence_id]
    return enrollments


def _load_mail_facts(batch: _Batch, enrollments: list[Enrollment]) -> None:
    """Mailability (the rule of contacts.selectors.contact_is_mailable: subscribed and not
    suppressed, decided for the whole batch in one query) and each contact's recent marketing
    mails for the frequency cap (one query)."""
    contacts = {e.contact_id: e.contact for e in enrollments}
    hashes = {Suppression.hash_email(c.email): c.pk for c in contacts.values()}
    suppressed = set(
        Suppression.objects.filter(
            workspace_id__in={c.workspace_id for c in contacts.values()},
            email_hash__in=list(hashes),
        ).values_list("workspace_id", "email_hash")
    )
    for contact in contacts.values():
        batch.mailable[contact.pk] = contact.status == ContactStatus.SUBSCRIBED and (
            (contact.workspace_id, Suppression.hash_email(contact.email)) not in suppressed
        )
    batch.sent_times = {contact_id: [] for contact_id in contacts}
    rows = (
        Message.objects.filter(contact_id__in=list(contacts), status__in=CAP_COUNTED)
        .annotate(counted_at=Coalesce("sent_at", "created_at"))
        .filter(counted_at__gt=batch.now - WEEK)
        .values_list("contact_id", "counted_at", "enrollment_id", "step_key")
    )
    for contact_id, counted_at, enrollment_id, step_key in rows:
        batch.sent_times[contact_id].append(counted_at)
        batch.existing.add((enrollment_id, step_key))


def tick(*, limit: int = 1000) -> TickResult:
    """Claim up to `limit` due enrollments and advance each as far as it can go now.

    Runs in one transaction; the sending of the batch's new messages is scheduled as one task
    after commit. Safe to run twice and from many workers at once: claimed rows are locked
    (others skip them) and a Message is unique per (enrollment, step).
    """
    with transaction.atomic():
        now = timezone.now()
        claimed = _claim(limit, now)
        result = TickResult(claimed=len(claimed))
        if not claimed:
            return result
        batch = _Batch(
            now=now,
            result=result,
            by_id={e.pk: e for e in claimed},
            queue=deque(claimed),
        )
        _load_mail_facts(batch, claimed)
        token = _current_batch.set(batch)
        try:
            while batch.queue:
                enrollment = batch.queue.popleft()
                _advance(batch, enrollment)
                batch.processed.add(enrollment.pk)
        finally:
            _current_batch.reset(token)
        _save(batch)
    return result


def _step(enrollment: Enrollment) -> dict[str, Any] | None:
    for step in enrollment.sequence.steps:
        if step["key"] == enrollment.current_step:
            return dict(step)
    return None


def _end(enrollment: Enrollment, status: str, reason: str, now: dt.datetime) -> None:
    enrollment.status = status
    enrollment.exit_reason = reason[:200]
    enrollment.finished_at = now
    enrollment.next_run_at = None


def _go(enrollment: Enrollment, key: str | None, now: dt.datetime) -> None:
    """Move to step `key` (None: the sequence ends there, completed)."""
    if not key:
        _end(enrollment, EnrollmentStatus.COMPLETED, "", now)
        return
    enrollment.current_step = key
    enrollment.step_started_at = now
    enrollment.next_run_at = now


def _advance(batch: _Batch, enrollment: Enrollment) -> None:
    now, result = batch.now, batch.result
    instant = 0
    while enrollment.status == EnrollmentStatus.ACTIVE:
        step = _step(enrollment)
        if step is None:
            _end(
                enrollment, EnrollmentStatus.FAILED, f"unknown step {enrollment.current_step}", now
            )
            break
        kind = step["type"]
        if kind in ("wait", "wait_for"):
            due = _wait_due(enrollment, step)
            if kind == "wait_for" and _reaction_happened(batch, enrollment, step):
                _go(enrollment, step.get("yes"), now)
            elif due > now:
                enrollment.next_run_at = due
                break
            else:
                _go(enrollment, step.get("next") if kind == "wait" else step.get("no"), now)
            result.steps += 1
            continue
        if kind == "email":
            if not _email(batch, enrollment, step):
                break
            result.steps += 1
            continue
        instant += 1
        if instant > MAX_INSTANT_STEPS:
            _end(
                enrollment,
                EnrollmentStatus.FAILED,
                f"more than {MAX_INSTANT_STEPS} steps without a wait at {step['key']}",
                now,
            )
            break
        try:
            with transaction.atomic():
                target = _instant(batch, enrollment, step)
        except _StepFailed as exc:
            _end(enrollment, EnrollmentStatus.FAILED, f"{step['key']}: {exc}", now)
            break
        except Exception as exc:  # a failing action must not stop the whole batch
            logger.exception("sequence step %s failed for %s", step["key"], enrollment.pk)
            _end(enrollment, EnrollmentStatus.FAILED, f"{step['key']}: {exc}", now)
            break
        result.steps += 1
        if kind == "exit":
            _end(enrollment, EnrollmentStatus.EXITED, f"exit step {step['key']}", now)
            break
        _go(enrollment, target, now)
    if enrollment.status == EnrollmentStatus.COMPLETED:
        result.completed += 1
    elif enrollment.status == EnrollmentStatus.EXITED:
        result.exited += 1
    elif enrollment.status == EnrollmentStatus.FAILED:
        result.failed += 1


def _wait_due(enrollment: Enrollment, step: dict[str, Any]) -> dt.datetime:
    started = enrollment.step_started_at or enrollment.next_run_at or timezone.now()
    if step["type"] == "wait_for":
        return started + parse_duration(step["timeout"])
    if "duration" in step:
        return started + parse_duration(step["duration"])
    return next_local_time(
        started, step["until"], zone_of(enrollment.contact, enrollment.workspace)
    )


def _reaction_happened(batch: _Batch, enrollment: Enrollment, step: dict[str, Any]) -> bool:
    """Whether what a wait_for waits for has already happened (e.g. the mail was clicked
    before the enrollment reached this step, or the contact is in the stage already).

    One query per enrollment at a wait_for step, except for a mail created by this very tick
    (nobody can have opened it yet)."""
    ((what, value),) = step["event"].items()
    if what in ("opened", "clicked"):
        if (enrollment.pk, value) in batch.created:
            return False
        milestone = "opened_at" if what == "opened" else "clicked_at"
        return Message.objects.filter(
            enrollment=enrollment, step_key=value, **{f"{milestone}__isnull": False}
        ).exists()
    if what == "stage":
        return ContactStage.objects.filter(
            contact_id=enrollment.contact_id, stage_id=value
        ).exists()
    if what == "event":
        started = enrollment.step_started_at or enrollment.entered_at
        return Event.objects.filter(
            contact_id=enrollment.contact_id, name=value, occurred_at__gte=started
        ).exists()
    return False  # clicked_url: only the click itself (message_clicked) knows the URL


def _seed_of(enrollment: Enrollment, step: dict[str, Any]) -> str:
    return choice_seed(
        sequence_id=enrollment.sequence_id, contact_id=enrollment.contact_id, step_key=step["key"]
    )


def _email(batch: _Batch, enrollment: Enrollment, step: dict[str, Any]) -> bool:
    """Create the step's Message if the mail may leave now; True when the enrollment moved
    on, False when it was deferred or ended."""
    now = batch.now
    contact, workspace = enrollment.contact, enrollment.workspace
    if not batch.mailable[contact.pk]:
        _end(
            enrollment,
            EnrollmentStatus.EXITED,
            f"contact not mailable ({contact.status}) at {step['key']}",
            now,
        )
        return False
    zone = zone_of(contact, workspace)
    # A tick that made the message and died before moving on: the mail is on its way already.
    again = (enrollment.pk, step["key"]) in batch.existing
    allowed = (
        now
        if again
        else window_open_at(
            cap_free_at(
                now,
                batch.sent_times[contact.pk],
                per_day=workspace.frequency_cap_per_day,
                per_week=workspace.frequency_cap_per_week,
            ),
            enrollment.sequence.send_window,
            zone,
        )
    )
    if allowed > now:
        enrollment.next_run_at = allowed
        batch.result.deferred += 1
        return False
    variants = step.get("variants") or []
    variant, subject = 0, step["subject"]
    if variants:
        chosen = _choice(_seed_of(enrollment, step), [int(v.get("weight", 1)) for v in variants])
        variant, subject = chosen + 1, variants[chosen]["subject"]
    batch.new_messages.append(
        Message(
            workspace_id=enrollment.workspace_id,
            contact_id=contact.pk,
            enrollment_id=enrollment.pk,
            step_key=step["key"],
            variant=variant,
            stage_id=step.get("stage") or None,
            subject=subject[:500],
            status=MessageStatus.QUEUED,
        )
    )
    batch.created.add((enrollment.pk, step["key"]))
    if not again:
        batch.sent_times[contact.pk].append(now)
    _go(enrollment, step.get("next"), now)
    return True


def _instant(batch: _Batch, enrollment: Enrollment, step: dict[str, Any]) -> str | None:
    """Run one instant step and return the key of the step that follows."""
    kind, contact = step["type"], enrollment.contact
    if kind == "move_stage":
        from funnel.services import contact_move

        stage = Stage.objects.select_related("funnel").filter(pk=step["stage"]).first()
        if stage is None or stage.funnel.workspace_id != enrollment.workspace_id:
            raise _StepFailed("the stage no longer exists")
        contact_move(
            funnel=stage.funnel,
            contact=contact,
            stage=stage,
            cause=TransitionCause.SEQUENCE_STEP,
            cause_detail=f"sequence:{enrollment.sequence_id}:{step['key']}",
        )
    elif kind in ("add_tag", "remove_tag"):
        tags = list(contact.tags.values_list("name", flat=True))
        tag = step["tag"].strip()
        wanted = [*tags, tag] if kind == "add_tag" else [name for name in tags if name != tag]
        if set(wanted) != set(tags):
            contact_update(contact=contact, changes={"tags": wanted})
    elif kind == "set_attribute":
        contact_update(contact=contact, changes={"attributes": {step["name"]: step["value"]}})
    elif kind == "condition":
        matches = (
            segment_queryset(workspace=enrollment.workspace, filter=step["if"])
            .filter(pk=contact.pk)
            .exists()
        )
        return step.get("yes") if matches else step.get("no")
    elif kind == "split":
        paths = step["paths"]
        chosen = _choice(_seed_of(enrollment, step), [int(p["weight"]) for p in paths])
        return paths[chosen].get("next")
    elif kind == "webhook":
        batch.webhooks.append((enrollment.pk, step["key"]))
    elif kind == "exit":
        return None
    return step.get("next")


def _save(batch: _Batch) -> None:
    enrollments = list(batch.by_id.values())
    Enrollment.objects.bulk_update(
        enrollments,
        ["status", "current_step", "next_run_at", "step_started_at", "finished_at", "exit_reason"],
    )
    result = batch.result
    if batch.new_messages:
        # A stage deleted since the step was saved must not fail the whole batch at commit.
        stage_ids = {m.stage_id for m in batch.new_messages if m.stage_id}
        if stage_ids:
            existing = set(Stage.objects.filter(pk__in=stage_ids).values_list("pk", flat=True))
            for message in batch.new_messages:
                if message.stage_id and uuid.UUID(str(message.stage_id)) not in existing:
                    message.stage_id = None
        # ignore_conflicts: a message that exists for (enrollment, step) stays the only one.
        Message.objects.bulk_create(batch.new_messages, ignore_conflicts=True)
        wanted = {(m.enrollment_id, m.step_key) for m in batch.new_messages}
        rows = Message.objects.filter(
            enrollment_id__in={m.enrollment_id for m in batch.new_messages},
            status=MessageStatus.QUEUED,
        ).values_list("pk", "enrollment_id", "step_key")
        result.message_ids = [str(pk) for pk, e_id, key in rows if (e_id, key) in wanted]
        result.messages = len(result.message_ids)
        _schedule_send(result.message_ids)
    if batch.webhooks:
        # The calls owed are rows of this transaction; their sending is one task after commit,
        # and retries come from those rows (campaigns/step_webhooks.py).
        step_webhooks.schedule_send(
            step_webhooks.step_webhook_deliveries_create(
                workspace_ids={e.pk: e.workspace_id for e in enrollments},
                calls=batch.webhooks,
            )
        )


def _schedule_send(message_ids: list[str]) -> None:
    """Hand the batch's messages to ONE sending task after commit.

    The task (campaigns.messages_send in campaigns/sending_tasks.py) belongs to the sending
    work; until it exists the messages stay queued and a warning says so.
    """
    if not message_ids:
        return
    module = importlib.import_module("campaigns.sending_tasks")
    task = getattr(module, "messages_send_task", None)
    if task is None:
        logger.warning(
            "campaigns.sending_tasks.messages_send_task is missing; %d messages stay queued",
            len(message_ids),
        )
        return
    ids = list(message_ids)
    transaction.on_commit(lambda: task.delay(ids))


def _schedule_tick() -> None:
    """Run a tick right after commit, so a woken enrollment's mail leaves within seconds."""
    from campaigns.engine_tasks import tick_task

    transaction.on_commit(lambda: tick_task.delay())


# --- reactions


def _wake(
    enrollments: Iterable[Enrollment], matches: Any, *, now: dt.datetime | None = None
) -> int:
    """Resolve the wait_for steps for which `matches(enrollment, event_spec)` holds to their
    yes-branch, due now. The UPDATE is conditional on the enrollment still being at that step,
    so a reaction and a timeout never both win. Returns how many woke."""
    now = now or timezone.now()
    woken = 0
    batch = _current_batch.get()
    for enrollment in enrollments:
        step = _step(enrollment)
        if step is None or step["type"] != "wait_for" or not matches(enrollment, step["event"]):
            continue
        target = step.get("yes")
        if batch is not None and enrollment.pk in batch.by_id:
            held = batch.by_id[enrollment.pk]
            if held.status == EnrollmentStatus.ACTIVE and held.current_step == step["key"]:
                _go(held, target, now)
                if held.pk in batch.processed:
                    batch.processed.discard(held.pk)
                    batch.queue.append(held)
                woken += 1
            continue
        changes: dict[str, Any] = (
            {"current_step": target, "step_started_at": now, "next_run_at": now}
            if target
            else {
                "status": EnrollmentStatus.COMPLETED,
                "finished_at": now,
                "next_run_at": None,
            }
        )
        woken += Enrollment.objects.filter(
            pk=enrollment.pk, status=EnrollmentStatus.ACTIVE, current_step=step["key"]
        ).update(**changes)
    if woken and batch is None:
        _schedule_tick()
    return woken


def _waiting(contact_id: str | uuid.UUID) -> list[Enrollment]:
    return list(
        Enrollment.objects.filter(
            contact_id=contact_id, status=EnrollmentStatus.ACTIVE
        ).select_related("sequence")
    )


def _waiting_on_messages(message_ids: Iterable[Any]) -> list[tuple[Enrollment, dict[str, str]]]:
    """The active runs of these messages' sequences, each with its messages among these
    (message id as a string -> step key): one batch may hold several mails of one run."""
    steps_of: dict[Any, dict[str, str]] = defaultdict(dict)
    for message_id, enrollment_id, step_key in Message.objects.filter(
        pk__in=list(message_ids),
        enrollment__isnull=False,
        enrollment__status=EnrollmentStatus.ACTIVE,
    ).values_list("pk", "enrollment_id", "step_key"):
        steps_of[enrollment_id][str(message_id)] = step_key
    if not steps_of:
        return []
    enrollments = Enrollment.objects.filter(pk__in=list(steps_of)).select_related("sequence")
    return [(enrollment, steps_of[enrollment.pk]) for enrollment in enrollments]


@transaction.atomic
def messages_opened(opens: Mapping[Any, dt.datetime]) -> list[str]:
    """People (not privacy proxies) opened these messages (id -> when): set opened_at where
    it is not set and wake the runs waiting for the open. Safe to run twice. Returns the ids
    opened for the first time."""
    if not opens:
        return []
    first = milestones_set("opened", opens)
    waiting = _waiting_on_messages(opens)
    keys_of = {enrollment.pk: set(steps.values()) for enrollment, steps in waiting}
    _wake(
        [enrollment for enrollment, _ in waiting],
        lambda e, event: event.get("opened") in keys_of[e.pk],
    )
    return first


def message_opened(message_id: str | uuid.UUID, at: dt.datetime | None = None) -> bool:
    """One person's open: see messages_opened. Returns whether it was the first."""
    return bool(messages_opened({message_id: at or timezone.now()}))


def _clicked_url_matches(wanted: Any, key: str, url: str, enrollment: Enrollment) -> bool:
    """A wait for {"clicked_url": {"step", "url"}}: the URL as authored, or with the sequence's
    UTM parameters added (the redirect's target carries them)."""
    if not isinstance(wanted, dict) or wanted.get("step") != key:
        return False
    authored = str(wanted.get("url") or "")
    return url in (authored, with_utm(authored, enrollment.sequence.utm))


@transaction.atomic
def messages_clicked(clicks: Iterable[tuple[Any, str, dt.datetime]]) -> list[str]:
    """People (not scanners) clicked: (message id, URL, when) each. A click counts as an open:
    opened_at and clicked_at are set where not set; the funnel's clicked_step rules run on a
    message's first click; runs waiting for the click, that URL or the open wake. Safe to run
    twice. Returns the ids clicked for the first time."""
    from funnel.services import rules_apply_clicks

    earliest: dict[str, dt.datetime] = {}
    urls: dict[str, set[str]] = defaultdict(set)
    for message_id, url, at in clicks:
        key = str(message_id)
        urls[key].add(url)
        if key not in earliest or at < earliest[key]:
            earliest[key] = at
    if not earliest:
        return []
    milestones_set("opened", earliest)
    first = milestones_set("clicked", earliest)
    if first:
        messages = Message.objects.select_related("contact").filter(pk__in=first)
        rules_apply_clicks(
            [
                (message.contact, message.step_key, earliest[str(message.pk)])
                for message in messages.exclude(step_key="")
            ]
        )
    waiting = _waiting_on_messages(earliest)
    steps_of = {enrollment.pk: steps for enrollment, steps in waiting}

    def matches(enrollment: Enrollment, event: dict[str, Any]) -> bool:
        wanted = event.get("clicked_url")
        return any(
            event.get("clicked") == key
            or event.get("opened") == key
            or any(_clicked_url_matches(wanted, key, url, enrollment) for url in urls[message_id])
            for message_id, key in steps_of[enrollment.pk].items()
        )

    _wake([enrollment for enrollment, _ in waiting], matches)
    return first


def message_clicked(message_id: str | uuid.UUID, url: str, at: dt.datetime | None = None) -> bool:
    """One person's click: see messages_clicked. Returns whether it was the first."""
    return bool(messages_clicked([(message_id, url, at or timezone.now())]))


def reactions_on_event(*, contact_id: str, name: str) -> int:
    """Wake the contact's enrollments that wait for the event `name`."""
    return _wake(_waiting(contact_id), lambda e, event: event.get("event") == name)


def reactions_on_stage(*, contact_id: str, stage_id: str) -> int:
    """Wake the contact's enrollments that wait for the contact to reach `stage_id`."""
    return _wake(_waiting(contact_id), lambda e, event: str(event.get("stage")) == stage_id)


# --- ending runs


def enrollments_end_for_contacts(*, contact_ids: list[str], reason: str = "unsubscribed") -> int:
    """The contacts must get no further marketing mail: end all their active enrollments
    ("exited") and cancel their messages not yet handed to the mail service. Runs in the
    caller's transaction (the one that unsubscribed). Safe to run twice."""
    ended = enrollments_end(
        Enrollment.objects.filter(contact_id__in=contact_ids),
        status=EnrollmentStatus.EXITED,
        reason=reason,
    )
    messages_cancel_unsent(
        Message.objects.filter(contact_id__in=contact_ids), f"cancelled: {reason}"
    )
    return ended


def goals_on_event(*, workspace_id: str, contact_id: str, name: str) -> int:
    """End as "converted" the contact's active enrollments of sequences with the goal
    {"type": "event", "name": name}; their unsent mails are cancelled. Safe to run twice."""
    goal = {"type": "event", "name": name}
    enrollments = Enrollment.objects.filter(
        workspace_id=workspace_id, contact_id=contact_id, status=EnrollmentStatus.ACTIVE
    )
    if connection.features.supports_json_field_contains:
        ids = list(
            enrollments.filter(sequence__exit_on__contains=[goal]).values_list("pk", flat=True)
        )
    else:  # SQLite (the embedded default) has no JSON containment; a contact has few runs
        ids = [
            pk
            for pk, exit_on in enrollments.values_list("pk", "sequence__exit_on")
            if goal in (exit_on or [])
        ]
    if not ids:
        return 0
    converted = enrollments_end(
        Enrollment.objects.filter(pk__in=ids),
        status=EnrollmentStatus.CONVERTED,
        reason=f"goal: {name}",
    )
    messages_cancel_unsent(Message.objects.filter(enrollment_id__in=ids), f"cancelled: goal {name}")
    return converted


# --- triggers


def _active_sequences(workspace_id: Any, trigger: dict[str, Any]) -> Iterator[Sequence]:
    # Key lookups, not JSON containment: they work on SQLite (the embedded default) too.
    matching = {f"trigger__{key}": value for key, value in trigger.items()}
    yield from Sequence.objects.filter(
        workspace_id=workspace_id, status=SequenceStatus.ACTIVE, **matching
    ).order_by("pk")


def _enroll(sequences: Iterable[Sequence], contact: Contact, reason: str) -> list[Enrollment]:
    created = []
    for sequence in sequences:
        enrollment = enrollment_create(sequence=sequence, contact=contact, reason=reason)
        if enrollment is not None:
            created.append(enrollment)
    return created


def enroll_on_list_confirmed(contact: Contact, list_ids: Iterable[str]) -> list[Enrollment]:
    """Start the sequences triggered by confirming one of these lists (re-entry honoured)."""
    ids = {str(list_id) for list_id in list_ids}
    sequences = [
        sequence
        for sequence in _active_sequences(contact.workspace_id, {"type": "list_confirmed"})
        if str(sequence.trigger.get("list")) in ids
    ]
    return _enroll(sequences, contact, "list_confirmed")


def lists_just_confirmed(contact: Contact) -> list[str]:
    """The lists the contact's double opt-in confirmed in this very change (contact_confirm
    stamps them with the contact's confirmed_at)."""
    if contact.confirmed_at is None:
        return []
    return [
        str(pk)
        for pk in Subscription.objects.filter(
            contact=contact,
            status=SubscriptionStatus.SUBSCRIBED,
            confirmed_at=contact.confirmed_at,
        ).values_list("mailing_list_id", flat=True)
    ]


def enroll_on_event(event: Event) -> list[Enrollment]:
    """Start the sequences triggered by an event of this name."""
    return _enroll(
        _active_sequences(event.workspace_id, {"type": "event", "name": event.name}),
        event.contact,
        f"event:{event.name}",
    )


def enroll_on_stage_entered(contact: Contact, funnel: Funnel, stage: Stage) -> list[Enrollment]:
    """Start the sequences triggered by entering `stage`."""
    sequences = [
        sequence
        for sequence in _active_sequences(contact.workspace_id, {"type": "stage_entered"})
        if str(sequence.trigger.get("stage")) == str(stage.pk)
    ]
    return _enroll(sequences, contact, f"stage:{stage.pk}")


def stalled_scan(*, limit: int = 1000) -> int:
    """Enroll contacts that have stayed in a stalled-trigger's stage longer than its "after",
    once per stay: a contact is skipped when it has an enrollment in the sequence that began
    since it entered the stage. Returns how many enrollments were created."""
    created = 0
    now = timezone.now()
    for sequence in Sequence.objects.filter(
        status=SequenceStatus.ACTIVE, trigger__type="stalled"
    ).order_by("pk"):
        after = parse_duration(sequence.trigger["after"])
        enrolled_this_stay = Enrollment.objects.filter(
            sequence=sequence,
            contact_id=OuterRef("contact_id"),
            entered_at__gte=OuterRef("entered_at"),
        )
        stays = (
            ContactStage.objects.filter(
                stage_id=sequence.trigger["stage"], entered_at__lte=now - after
            )
            .filter(~Exists(enrolled_this_stay))
            .select_related("contact")
            .order_by("entered_at")[:limit]
        )
        for stay in stays:
            with transaction.atomic():
                if enrollment_create(sequence=sequence, contact=stay.contact, reason="stalled"):
                    created += 1
    return created


def segment_scan(*, limit: int = 1000) -> int:
    """Start runs for contacts that entered the segment of a segment-triggered sequence.

    Per active sequence, the segment's members now are compared with what the last scan saw
    (SegmentMembership): a contact seen as a member who is no longer one has left (left_at is
    set); a member without a present row has entered, and a run starts when the re-entry
    policy lets it (enrollment_create decides: "never" starts one run per contact, ever). So
    leaving and joining again between two scans counts as a new entry; leaving and coming back
    within one scan interval (5 minutes) is not seen.

    The first sight of a member that already has a run in the sequence (enrolled before these
    rows existed, or by hand) records it as present without a new run: nothing says it left.
    At most `limit` entries per sequence and scan; the rest come at the next one. Safe to run
    twice and concurrently (one row per sequence and contact, one active run per contact).
    Returns how many runs were started.
    """
    created = 0
    now = timezone.now()
    for sequence in Sequence.objects.filter(
        status=SequenceStatus.ACTIVE, trigger__type="segment"
    ).select_related("workspace"):
        segment = Segment.objects.filter(
            pk=sequence.trigger["segment"], workspace_id=sequence.workspace_id
        ).first()
        if segment is None:
            continue
        try:
            members = segment_queryset(workspace=sequence.workspace, filter=segment.filter)
        except SegmentFilterError:
            logger.warning(
                "segment %s of sequence %s has an invalid filter", segment.pk, sequence.pk
            )
            continue
        present = SegmentMembership.objects.filter(sequence=sequence, left_at__isnull=True)
        present.exclude(contact_id__in=members.values("pk")).update(left_at=now)
        entered = list(
            members.filter(~Exists(present.filter(contact_id=OuterRef("pk"))))
            .annotate(
                seen_before=Exists(
                    SegmentMembership.objects.filter(sequence=sequence, contact_id=OuterRef("pk"))
                ),
                enrolled_before=Exists(
                    Enrollment.objects.filter(sequence=sequence, contact_id=OuterRef("pk"))
                ),
            )
            .order_by("pk")
            .values_list("pk", "seen_before", "enrolled_before")[:limit]
        )
        contacts = Contact.objects.in_bulk([pk for pk, _seen, _enrolled in entered])
        for contact_id, seen_before, enrolled_before in entered:
            with transaction.atomic():
                SegmentMembership.objects.update_or_create(
                    sequence=sequence,
                    contact_id=contact_id,
                    defaults={"joined_at": now, "left_at": None},
                )
                if enrolled_before and not seen_before:
                    continue
                if enrollment_create(
                    sequence=sequence, contact=contacts[contact_id], reason="segment"
                ):
                    created += 1
    return created


__all__ = [
    "MAX_INSTANT_STEPS",
    "TickResult",
    "cap_free_at",
    "choice_seed",
    "enroll_on_event",
    "enroll_on_list_confirmed",
    "enroll_on_stage_entered",
    "enrollments_end_for_contacts",
    "goals_on_event",
    "lists_just_confirmed",
    "message_clicked",
    "message_opened",
    "next_local_time",
    "reactions_on_event",
    "reactions_on_stage",
    "segment_scan",
    "stalled_scan",
    "tick",
    "window_open_at",
    "zone_of",
]
