"""Handing messages to the mail transport: claim, re-check, render, send, record.

Exactly-once in effect rests on three things (docs/sending.md has the full argument):

1. One Message row per unit of work: unique per (enrollment, step) and per (broadcast, contact),
   created before anything is sent.
2. A claim: a conditional UPDATE moves a message from queued/retrying (without an ESP
   acceptance, and due) to "sending". Only the worker whose UPDATE changed the row sends it, so
   two workers, or a task delivered twice, never send the same message.
3. `esp_accepted_at`: written the moment the transport accepted the mail, in its own short
   write. A retry, a recovery and a redelivered task only ever send messages without it.

The one duplicate window: between the transport's acceptance (the SMTP server's 250 after
DATA, or the ESP's HTTP 2xx) and the commit of the row that records it. A worker killed
(SIGKILL, OOM, power loss) or a database that fails inside that window leaves the message in
"sending" without `esp_accepted_at`; `messages_recover_stuck` later puts it back to "retrying"
and it is sent a second time. It is one message per dying worker (a worker has at most one mail
in flight) and the window is one short transaction long (about a millisecond): the acceptance's
UPDATE, committed together with the next message's claim when a send slot is at hand, else
alone. The receiving side sees the same Message-ID header on both copies, so many mailbox
providers fold them into one.

Errors are classified once, in `classify_send_error`: temporary ones (SMTP 4xx, a dropped
connection, a timeout, HTTP 429/5xx from an ESP) back off (1, 5, 15, 60 minutes, then every
2 hours) and give up 24 hours after the message was queued; permanent ones (SMTP 5xx, an ESP
refusing the recipient) fail the message at once with a reason a person can read.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

from anymail.exceptions import (
    AnymailAPIError,
    AnymailInvalidAddress,
    AnymailRecipientsRefused,
)
from django.core.cache import cache
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from campaigns import rendering
from campaigns.milestones import announce
from campaigns.models import Broadcast, BroadcastStatus, Message, MessageStatus, Sequence
from campaigns.tracking_links import MailTracking, Source, mail_tracking
from contacts.models import Contact, ContactStatus, Suppression
from contacts.selectors import contact_is_mailable
from core.models import Workspace
from core.prepared import PreparedStatement
from core.rawsql import db_time, db_uuid

logger = logging.getLogger(__name__)

# Backoff after the 1st, 2nd, 3rd, 4th failed attempt; every later one waits RETRY_EVERY.
RETRY_DELAYS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=60),
)
RETRY_EVERY = timedelta(hours=2)
GIVE_UP_AFTER = timedelta(hours=24)
# A send call sleeps at most this long in total for the rate limit, then re-queues the rest,
# so a worker is never parked for minutes behind a slow workspace.
MAX_BATCH_WAIT_SECONDS = 10.0
# A queued message nobody handed to a task (a lost task) is picked up by the retry tick.
STRANDED_AFTER = timedelta(minutes=10)
REASON_LENGTH = 500
CLAIMABLE = (MessageStatus.QUEUED, MessageStatus.RETRYING)


@dataclass(frozen=True)
class SendFailure:
    """What went wrong with one send, as the UI shows it, and whether to try again."""

    transient: bool
    reason: str


@dataclass(frozen=True)
class SendResult:
    """Counts of one `messages_send` call; `deferred_ids` were left queued for the rate limit
    (due again at `deferred_until`) and should be sent by a new task."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    deferred_ids: tuple[str, ...] = ()
    deferred_until: datetime | None = None
    # Left queued because the workspace's sending is paused (campaigns.complaints): they are
    # due again when an admin resumes it.
    paused: int = 0


@dataclass
class _Tally:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    waited: float = 0.0
    deferred_ids: list[str] = field(default_factory=list)
    sent_ids: list[str] = field(default_factory=list)
    paused_ids: list[str] = field(default_factory=list)
    deferred_until: datetime | None = None


# --- the per-workspace rate limit ------------------------------------------------------------


def _rate_key(workspace_id: object, window: int) -> str:
    return f"send-rate:{workspace_id}:{window}"


def rate_limit_reserve(
    workspace_id: object, limit: int, now: float, wanted: int
) -> tuple[int, float]:
    """Reserve up to `wanted` send slots of `workspace_id` in the 1-second window containing
    `now` (seconds since the epoch). Returns (slots granted, seconds to wait): (n, 0.0) with
    n >= 1, or (0, time until the next window, where the caller tries again).

    The counter lives in the Django cache (Redis in production: INCR is atomic, so the limit
    holds across all workers and hosts; the database cache of the embedded default is not
    atomic, which one worker does not need). Fixed windows allow up to 2 x `limit` within one
    sliding second around a window boundary, never more than `limit` in any window. Slots
    reserved and not used are lost, which only ever sends less.
    """
    window = int(now)
    key = _rate_key(workspace_id, window)
    wanted = max(wanted, 1)
    try:
        after = cache.incr(key, wanted)
    except ValueError:  # the first send of this window
        # add() loses when another worker created the key between our incr and add.
        after = wanted if cache.add(key, wanted, timeout=5) else cache.incr(key, wanted)
    granted = min(wanted, max(limit, 1) - (after - wanted))
    if granted > 0:
        return granted, 0.0
    return 0, max(window + 1 - now, 0.001)


def rate_limit_take(workspace_id: object, limit: int, now: float) -> float:
    """Take one send slot (see rate_limit_reserve): 0.0 when taken, else the seconds to wait
    until the next 1-second window."""
    granted, wait = rate_limit_reserve(workspace_id, limit, now, 1)
    return 0.0 if granted else wait


# --- classification and retry schedule -------------------------------------------------------


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt (1-based)."""
    if 1 <= attempts <= len(RETRY_DELAYS):
        return RETRY_DELAYS[attempts - 1]
    return RETRY_EVERY


def _smtp_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())


def _smtp_failure(code: int, text: str) -> SendFailure:
    if 500 <= code <= 599:
        return SendFailure(False, f"Rejected by the receiving server: {code} {text}".strip())
    return SendFailure(True, f"Temporary failure at the receiving server: {code} {text}".strip())


def _short(error: BaseException) -> str:
    return " ".join(" ".join(str(arg) for arg in error.args).split())


def classify_send_error(error: BaseException) -> SendFailure:
    """Sort a transport error into temporary (try again later) or permanent (fail now), with a
    reason a person can read (never a stack trace or a raw response body).

    SMTP 4xx, a dropped connection, a timeout, a refused login and HTTP 429/5xx are temporary;
    SMTP 5xx and an ESP refusing the recipient are permanent; anything unknown is temporary.
    """
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        refusals = list(error.recipients.values())
        if refusals:
            code, text = refusals[0]
            return _smtp_failure(int(code), _smtp_text(text))
        return SendFailure(True, "The receiving server refused the recipient.")
    if isinstance(error, smtplib.SMTPAuthenticationError):
        # Our credentials, not the recipient: retry rather than fail a whole audience.
        return SendFailure(
            True,
            f"The mail server refused our login (check EMAIL_URL): {error.smtp_code} "
            f"{_smtp_text(error.smtp_error)}",
        )
    if isinstance(error, smtplib.SMTPResponseException):
        # SMTPSenderRefused, SMTPDataError, SMTPHeloError, SMTPConnectError and plain ones.
        return _smtp_failure(int(error.smtp_code), _smtp_text(error.smtp_error))
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return SendFailure(True, f"The mail server closed the connection: {_short(error)}")
    if isinstance(error, (TimeoutError, socket.timeout)):
        return SendFailure(True, "The mail server did not answer in time.")
    if isinstance(error, (ConnectionError, socket.gaierror)):
        return SendFailure(True, f"Could not reach the mail server: {_short(error)}")
    if isinstance(error, AnymailRecipientsRefused):
        return SendFailure(False, f"Rejected by the mail service: {_short(error)}")
    if isinstance(error, AnymailInvalidAddress):
        return SendFailure(False, f"The mail service refused the address: {_short(error)}")
    if isinstance(error, AnymailAPIError):
        status = error.status_code
        service = error.esp_name or "the mail service"
        if status is None:
            return SendFailure(True, f"Could not reach {service}: {_short(error)}")
        if status == 429 or status >= 500:
            return SendFailure(True, f"{service} is busy or failing (HTTP {status}); will retry.")
        return SendFailure(False, f"Rejected by {service} (HTTP {status}): {_short(error)}")
    if isinstance(error, OSError):
        return SendFailure(True, f"Could not reach the mail server: {_short(error)}")
    return SendFailure(
        True, f"Unexpected error while sending ({type(error).__name__}): {_short(error)}"
    )


# --- state changes of one message ------------------------------------------------------------


def _due(now: datetime) -> Q:
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def _halted_broadcast() -> Exists:
    # A paused broadcast sends nothing more, also from a batch handed out before the pause; its
    # messages stay queued and go out after the resume. EXISTS, never a join (see below).
    return Exists(
        Broadcast.objects.filter(pk=OuterRef("broadcast_id"), status=BroadcastStatus.PAUSED)
    )


def _claimable(message_id: uuid.UUID | str, now: datetime) -> Any:
    return (
        Message.objects.filter(pk=message_id, status__in=CLAIMABLE, esp_accepted_at__isnull=True)
        .filter(_due(now))
        .exclude(_halted_broadcast())
    )


def _claim_update(now: datetime) -> dict[str, Any]:
    return {"status": MessageStatus.SENDING, "attempts": F("attempts") + 1, "next_attempt_at": now}


def message_claim(*, message_id: str, now: datetime) -> bool:
    """Move one due message to "sending" (attempts + 1) if it is queued or retrying, has no
    ESP acceptance and is due. True only for the caller whose UPDATE changed the row.

    While "sending", `next_attempt_at` holds the moment of the claim: messages_recover_stuck
    finds messages whose worker died by it.
    """
    return _claimable(message_id, now).update(**_claim_update(now)) == 1


def _claim_if_mailable_sql() -> str:
    # Written out once (the ORM spent about as long building this statement per mail as
    # PostgreSQL spent running it). The same conditions as _claimable plus the send-time
    # mailability check, all on the message row itself: EXISTS subqueries, never a join (see
    # _claim_if_mailable).
    message = Message._meta.db_table
    # Table names from the models, every value a parameter.
    return (
        f'UPDATE "{message}" SET "status" = %s, '  # noqa: S608
        f'"attempts" = "{message}"."attempts" + 1, "next_attempt_at" = %s '
        f'WHERE "{message}"."id" = %s AND "{message}"."status" IN (%s, %s) '
        f'AND "{message}"."esp_accepted_at" IS NULL '
        f'AND ("{message}"."next_attempt_at" IS NULL OR "{message}"."next_attempt_at" <= %s) '
        f'AND NOT EXISTS (SELECT 1 FROM "{Broadcast._meta.db_table}" b '
        f'WHERE b."id" = "{message}"."broadcast_id" AND b."status" = %s) '
        f'AND EXISTS (SELECT 1 FROM "{Contact._meta.db_table}" c '
        f'WHERE c."id" = "{message}"."contact_id" AND c."status" = %s) '
        f'AND NOT EXISTS (SELECT 1 FROM "{Suppression._meta.db_table}" s '
        f'WHERE s."workspace_id" = %s AND s."email_hash" = %s)'
    )


def _record_accepted_sql() -> str:
    message = Message._meta.db_table
    return (
        f'UPDATE "{message}" SET "status" = %s, '  # noqa: S608
        f'"esp_accepted_at" = %s, "sent_at" = %s, '
        f'"esp_message_id" = %s, "subject" = %s, "next_attempt_at" = NULL, "error" = \'\' '
        f'WHERE "id" = %s'
    )


_CLAIM_IF_MAILABLE = PreparedStatement("funnelwerk_claim_if_mailable", _claim_if_mailable_sql())
_RECORD_ACCEPTED = PreparedStatement("funnelwerk_record_accepted", _record_accepted_sql())


@dataclass(frozen=True)
class _Accepted:
    """A mail the transport accepted whose acceptance is still to be written (at once)."""

    message_id: uuid.UUID
    esp_message_id: str
    # The subject as the person received it (rendered), shown in lists and reports.
    subject: str


def _accepted_params(accepted: _Accepted) -> list[Any]:
    now = timezone.now()
    return [
        MessageStatus.SENT.value,
        db_time(now),
        db_time(now),
        accepted.esp_message_id[:255],
        accepted.subject[:500],
        db_uuid(accepted.message_id),
    ]


def _execute_accepted(cursor: Any, accepted: _Accepted) -> None:
    # Unconditional on status: the mail *was* accepted, and recording it is what stops any
    # later resend, whatever happened to the row meanwhile.
    cursor.execute(_RECORD_ACCEPTED.sql_to_run(), _accepted_params(accepted))


def _record_accepted(accepted: _Accepted) -> None:
    """Write an acceptance alone, in its own one-statement transaction."""
    with connection.cursor() as cursor:
        _execute_accepted(cursor, accepted)


def _claim_if_mailable(message: Message, now: datetime, accepted: _Accepted | None) -> bool:
    """Claim `message` if it is claimable and its contact mailable right now, in one
    conditional UPDATE; when `accepted` is given, the previous mail's acceptance is written
    first in the same transaction (one commit, one fsync, for both).

    The fast path: claim and the send-time mailability check in one statement (subscribed,
    address not suppressed). When it matches nothing, the caller claims plainly and asks
    contacts.selectors.contact_is_mailable why. Both checks are EXISTS subqueries, never a
    join: with a join Django would turn the UPDATE into "WHERE id IN (SELECT ...)", whose
    status condition PostgreSQL does not re-check after waiting for a concurrent claim, and two
    workers would both win.

    Sharing the transaction cannot deadlock: the acceptance's row is in "sending" (committed),
    so no claim matches or locks it, and a claim waits only for another claim of the same row,
    which that transaction has already made.
    """
    params: list[Any] = [
        MessageStatus.SENDING.value,
        db_time(now),
        db_uuid(message.pk),
        MessageStatus.QUEUED.value,
        MessageStatus.RETRYING.value,
        db_time(now),
        BroadcastStatus.PAUSED.value,
        ContactStatus.SUBSCRIBED.value,
        db_uuid(message.workspace_id),
        Suppression.hash_email(message.contact.email),
    ]
    claim = _CLAIM_IF_MAILABLE.sql_to_run()
    if accepted is None:
        with connection.cursor() as cursor:
            cursor.execute(claim, params)
            return bool(cursor.rowcount == 1)
    if connection.vendor == "postgresql":
        # Both statements in one query: PostgreSQL runs the statements of one query string in
        # one transaction (the caller's, or an implicit one that commits at its end), so the
        # acceptance and the claim cost one round trip instead of three (each a scheduling
        # delay on a busy machine: bench/send.py). rowcount is the last statement's, the claim's.
        with connection.cursor() as cursor:
            cursor.execute(
                f"{_RECORD_ACCEPTED.sql_to_run()}; {claim}", _accepted_params(accepted) + params
            )
            return bool(cursor.rowcount == 1)
    with transaction.atomic(), connection.cursor() as cursor:
        _execute_accepted(cursor, accepted)
        cursor.execute(claim, params)
        return bool(cursor.rowcount == 1)


def _in_flight(message_id: uuid.UUID) -> Any:
    return Message.objects.filter(
        pk=message_id, status=MessageStatus.SENDING, esp_accepted_at__isnull=True
    )


def _record_failure(*, message: Message, failure: SendFailure, now: datetime) -> str:
    """Write the outcome of a failed attempt; returns the status it got."""
    reason = failure.reason[:REASON_LENGTH]
    if failure.transient and now < message.created_at + GIVE_UP_AFTER:
        _in_flight(message.pk).update(
            status=MessageStatus.RETRYING,
            next_attempt_at=now + retry_delay(message.attempts),
            error=reason,
        )
        return MessageStatus.RETRYING
    if failure.transient:
        attempts = "1 attempt" if message.attempts == 1 else f"{message.attempts} attempts"
        reason = f"Gave up after {attempts} over 24 hours. {reason}"
    _in_flight(message.pk).update(
        status=MessageStatus.FAILED, next_attempt_at=None, error=reason[:REASON_LENGTH]
    )
    return MessageStatus.FAILED


def _cancel_reason(contact: Contact) -> str:
    if contact.status == ContactStatus.UNSUBSCRIBED:
        return "unsubscribed"
    if contact.status in (
        ContactStatus.SUBSCRIBED,
        ContactStatus.BOUNCED,
        ContactStatus.COMPLAINED,
    ):
        return "suppressed"
    return f"not subscribed ({contact.status})"


# --- building the mail -----------------------------------------------------------------------


class _NotBuildable(Exception):
    """The message cannot be turned into a mail (its step is gone): a permanent failure."""


def _step_of(message: Message, sequences: dict[uuid.UUID, Sequence]) -> dict[str, Any]:
    """The email step as authored (variants included: rendering picks message.variant)."""
    if message.enrollment is not None:
        sequence_id = message.enrollment.sequence_id
        if sequence_id not in sequences:
            sequences[sequence_id] = Sequence.objects.get(pk=sequence_id)
        message.enrollment.sequence = sequences[sequence_id]
        for step in sequences[sequence_id].steps:
            if step.get("key") == message.step_key and step.get("type") == "email":
                return dict(step)  # a copy: rendering must not change the cached sequence
        raise _NotBuildable(f"The email step {message.step_key!r} no longer exists.")
    if message.broadcast is not None:
        broadcast = message.broadcast
        return {
            "key": "broadcast",
            "type": "email",
            "subject": broadcast.subject,
            "html": broadcast.html,
            "variants": broadcast.variants or [],
        }
    raise _NotBuildable("The message belongs to neither a sequence nor a broadcast.")


def _tracking_of(message: Message) -> MailTracking:
    """Pixel, trap link and link rewriting for this message, by the workspace's tracking mode."""
    workspace = message.workspace
    utm: dict[str, str] = {}
    if message.enrollment is not None:
        utm = message.enrollment.sequence.utm or {}
        source = Source(
            sequence_id=message.enrollment.sequence_id,
            step_key=message.step_key,
            variant=message.variant,
        )
    else:
        utm = (message.broadcast.utm if message.broadcast else None) or {}
        source = Source(broadcast_id=message.broadcast_id, variant=message.variant)
    return mail_tracking(
        mode=workspace.tracking_mode,
        track_opens=workspace.track_opens,
        track_clicks=workspace.track_clicks,
        message_id=message.pk,
        source=source,
        utm=utm,
    )


def message_mail(*, message: Message, sequences: dict[uuid.UUID, Sequence]) -> EmailMessage:
    """The mail of `message` as the send path builds it: its step's (or broadcast's) content
    rendered for its contact with the workspace's tracking, tagged with the workspace.
    `sequences` caches the batch's sequences by id. Load the message as messages_send does
    (contact, workspace, enrollment, broadcast; the contact's tags) to build it without
    queries. Raises when it cannot be built (no postal address, a failing template, a step
    that no longer exists, no recipient)."""
    step = _step_of(message, sequences)
    mail = rendering.message_email(message=message, step=step, tracking=_tracking_of(message))
    if not mail.recipients():
        raise _NotBuildable("The mail has no recipient.")
    return mail


def _message_id_header(mail: EmailMessage, message: Message) -> str:
    """The Message-ID the mail carries; a deterministic one is set when rendering gave none,
    so a resent copy carries the same id and the receiving side can fold duplicates."""
    for name, value in mail.extra_headers.items():
        if name.lower() == "message-id":
            return str(value)
    domain = parseaddr(str(mail.from_email or ""))[1].rpartition("@")[2] or "funnelwerk.local"
    value = f"<{message.pk}@{domain}>"
    mail.extra_headers["Message-ID"] = value
    return value


def _esp_message_id(mail: EmailMessage, message_id_header: str) -> str:
    status = getattr(mail, "anymail_status", None)
    esp_id = getattr(status, "message_id", None) if status is not None else None
    if isinstance(esp_id, str) and esp_id:
        return esp_id
    if isinstance(esp_id, set) and esp_id:  # several recipients, several ids
        return ",".join(sorted(str(item) for item in esp_id))
    return message_id_header


# --- the batch -------------------------------------------------------------------------------


class _Transport:
    """One connection per batch, reopened lazily after an error left it unusable."""

    def __init__(self) -> None:
        self.backend: BaseEmailBackend = get_connection(fail_silently=False)
        self.is_open = False

    def send(self, mail: EmailMessage) -> int:
        if not self.is_open:
            # Opened explicitly so that send_messages keeps it open for the next mail.
            self.backend.open()
            self.is_open = True
        return self.backend.send_messages([mail])

    def reset(self) -> None:
        if self.is_open:
            try:
                self.backend.close()
            except Exception:  # a broken connection may fail to QUIT
                logger.debug("closing a broken mail connection failed", exc_info=True)
        self.is_open = False


def _defer(*, ids: Iterable[str], until: datetime) -> list[str]:
    # Only moves a message later, never earlier than a retry it already waits for.
    remaining = list(ids)
    Message.objects.filter(
        pk__in=remaining, status__in=CLAIMABLE, esp_accepted_at__isnull=True
    ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=until)).update(
        next_attempt_at=until
    )
    return remaining


@dataclass
class _Slots:
    """Send slots reserved for one workspace in one 1-second window (used within it only)."""

    window: int = -1
    left: int = 0


# Slots are reserved a few at a time to save cache round trips, never more than this many.
RESERVE_AT_MOST = 50


def _slot_now(*, workspace: Workspace, slots: _Slots, wanted: int) -> float:
    """Take a rate-limit slot without sleeping: 0.0 when taken (from the slots reserved in this
    second, else by reserving a few more: one cache round trip), else the seconds to wait."""
    now = time.time()
    if slots.left > 0 and slots.window == int(now):
        slots.left -= 1
        return 0.0
    limit = workspace.send_rate_per_second
    chunk = max(1, min(wanted, RESERVE_AT_MOST, limit // 4))
    granted, wait = rate_limit_reserve(workspace.pk, limit, now, chunk)
    if granted:
        slots.window, slots.left = int(now), granted - 1
        return 0.0
    return wait


def _wait_for_slot(
    *, workspace: Workspace, slots: _Slots, wanted: int, tally: _Tally, max_wait: float
) -> bool:
    """Take a rate-limit slot, sleeping until the next second when this one is used up; False
    when the batch's wait budget is spent (the caller defers the rest)."""
    while True:
        wait = _slot_now(workspace=workspace, slots=slots, wanted=wanted)
        if not wait:
            return True
        if tally.waited + wait > max_wait:
            tally.deferred_until = timezone.now() + timedelta(seconds=wait)
            return False
        time.sleep(wait)
        tally.waited += wait


def _send_one(
    *,
    message: Message,
    transport: _Transport,
    sequences: dict[uuid.UUID, Sequence],
    tally: _Tally,
    previous: _Accepted | None,
) -> _Accepted | None:
    """Claim, build and send one message. `previous` (the previous mail's acceptance, not yet
    written) is written in the claim's transaction. Returns this mail's acceptance, which the
    caller writes at once: alone, or with the next message's claim."""
    now = timezone.now()
    if not _claim_if_mailable(message, now, previous):
        if not message_claim(message_id=str(message.pk), now=now):
            tally.skipped += 1
            return None
        # Claimed, but the contact was not mailable a moment ago: ask the authority, fresh.
        contact = Contact.objects.get(pk=message.contact_id)
        if not contact_is_mailable(contact):
            _in_flight(message.pk).update(
                status=MessageStatus.CANCELLED, next_attempt_at=None, error=_cancel_reason(contact)
            )
            tally.cancelled += 1
            return None
        message.contact = contact
    message.status = MessageStatus.SENDING
    message.attempts += 1
    try:
        mail = message_mail(message=message, sequences=sequences)
        message_id_header = _message_id_header(mail, message)
    except Exception as error:  # content is deterministic: retrying won't help
        logger.warning("message %s could not be built", message.pk, exc_info=True)
        reason = (
            str(error)
            if isinstance(error, _NotBuildable)
            else f"The mail could not be built ({type(error).__name__}): {_short(error)}"
        )
        _record_failure(message=message, failure=SendFailure(False, reason), now=now)
        tally.failed += 1
        return None
    try:
        accepted = transport.send(mail)
    except Exception as error:  # classified; one failure must not sink the batch
        transport.reset()
        failure = classify_send_error(error)
        if failure.reason.startswith("Unexpected error"):
            logger.exception("message %s: unexpected error while sending", message.pk)
        else:
            logger.warning("message %s not sent: %s", message.pk, failure.reason)
        status = _record_failure(message=message, failure=failure, now=timezone.now())
        if status == MessageStatus.RETRYING:
            tally.retrying += 1
        else:
            tally.failed += 1
        return None
    if not accepted:
        status = _record_failure(
            message=message,
            failure=SendFailure(True, "The mail transport reported nothing sent."),
            now=timezone.now(),
        )
        if status == MessageStatus.RETRYING:
            tally.retrying += 1
        else:
            tally.failed += 1
        return None
    # The duplicate window is from the transport's acceptance to the commit of this write,
    # which the caller makes at once (with the next claim when a send slot is at hand).
    tally.sent += 1
    tally.sent_ids.append(str(message.pk))
    return _Accepted(message.pk, _esp_message_id(mail, message_id_header), str(mail.subject))


def messages_load(ids: list[str]) -> dict[uuid.UUID, Message]:
    """The messages of a batch by id, with what message_mail needs: contacts and enrollments
    joined, the contacts' tags, and each workspace and broadcast read once and shared by its
    messages (one object: send slots and settings are shared in the batch, and a broadcast's
    HTML is not read again for every message). A fixed number of queries for any batch."""
    return (
        Message.objects.select_related("contact", "enrollment")
        .prefetch_related("workspace", "broadcast", "contact__tags")
        .in_bulk(ids)
    )


def messages_send(
    *, message_ids: list[str], max_wait_seconds: float = MAX_BATCH_WAIT_SECONDS
) -> SendResult:
    """Send the given messages over one connection, each at most once.

    Each message is claimed (queued/retrying, no ESP acceptance, due -> "sending"), its contact
    re-checked (not mailable -> "cancelled" with the reason), rendered by
    campaigns.rendering.message_email, sent, and its acceptance recorded at once. Failures are
    classified per message (see classify_send_error); one never stops the batch. The workspace's
    send rate is honoured across workers; once this call has slept `max_wait_seconds` for it,
    the rest stays queued, due at the next free second, and is returned as `deferred_ids`.

    Safe to run twice and concurrently over the same ids: a message that is not claimable
    (already sent, being sent, failed, cancelled, not yet due) is skipped.
    """
    ids = list(dict.fromkeys(str(message_id) for message_id in message_ids))
    # The claim re-checks the state that matters at the moment of sending.
    batch = messages_load(ids)
    slots: dict[uuid.UUID, _Slots] = {}
    tally = _Tally()
    sequences: dict[uuid.UUID, Sequence] = {}
    transport = _Transport()
    # The last mail's acceptance while it is not written yet: written with the next claim (one
    # commit for both) when a send slot is at hand without waiting, else alone at once.
    accepted: _Accepted | None = None
    try:
        for position, message_id in enumerate(ids):
            found = batch.get(uuid.UUID(message_id))
            if found is None:
                tally.skipped += 1
                continue
            message = found
            if message.workspace.sending_paused_at is not None:
                tally.paused_ids.append(message_id)
                continue
            workspace_slots = slots.setdefault(message.workspace_id, _Slots())
            wanted = len(ids) - position
            if accepted is not None and _slot_now(
                workspace=message.workspace, slots=workspace_slots, wanted=wanted
            ):
                # No slot without sleeping: never sleep with an unwritten acceptance.
                _record_accepted(accepted)
                accepted = None
            if accepted is None and not _wait_for_slot(
                workspace=message.workspace,
                slots=workspace_slots,
                wanted=wanted,
                tally=tally,
                max_wait=max_wait_seconds,
            ):
                until = tally.deferred_until or timezone.now()
                tally.deferred_ids = _defer(ids=ids[position:], until=until)
                break
            accepted = _send_one(
                message=message,
                transport=transport,
                sequences=sequences,
                tally=tally,
                previous=accepted,
            )
    finally:
        try:
            if accepted is not None:
                _record_accepted(accepted)
            # Also when the loop failed: the mails accepted so far are sent and say so.
            announce("sent", tally.sent_ids)
        finally:
            transport.reset()
    if tally.paused_ids:
        _defer(ids=tally.paused_ids, until=timezone.now())
    return SendResult(
        paused=len(tally.paused_ids),
        sent=tally.sent,
        retrying=tally.retrying,
        failed=tally.failed,
        cancelled=tally.cancelled,
        skipped=tally.skipped,
        deferred_ids=tuple(tally.deferred_ids),
        deferred_until=tally.deferred_until if tally.deferred_ids else None,
    )


def messages_recover_stuck(*, older_than: timedelta) -> int:
    """Put messages left in "sending" without an ESP acceptance for longer than `older_than`
    (their worker died) back to "retrying", due now. Returns how many.

    This is what completes a batch whose worker was killed. Safe to run twice. A message whose
    mail the transport had accepted just before the worker died is sent again: the one
    duplicate window (see the module docstring).
    """
    now = timezone.now()
    return Message.objects.filter(
        status=MessageStatus.SENDING,
        esp_accepted_at__isnull=True,
        next_attempt_at__lte=now - older_than,
    ).update(
        status=MessageStatus.RETRYING,
        next_attempt_at=now,
        error="The sending worker stopped before the mail service answered; sending again.",
    )


def messages_retry_due(*, limit: int) -> list[str]:
    """Ids of messages due to be sent now, oldest due first, at most `limit`: retries whose
    backoff has passed, messages deferred by the rate limit or recovered from a dead worker,
    and queued messages that no task picked up within STRANDED_AFTER. Reads only."""
    now = timezone.now()
    due = Message.objects.filter(
        Q(next_attempt_at__lte=now)
        | Q(
            status=MessageStatus.QUEUED,
            next_attempt_at__isnull=True,
            created_at__lte=now - STRANDED_AFTER,
        ),
        status__in=CLAIMABLE,
        esp_accepted_at__isnull=True,
    ).exclude(_halted_broadcast())
    # A paused workspace's mail waits for the resume (then it is due at once).
    due = due.exclude(workspace__sending_paused_at__isnull=False)
    due = due.order_by(F("next_attempt_at").asc(nulls_first=True), "created_at")
    return [str(pk) for pk in due.values_list("pk", flat=True)[:limit]]
