"""What the mail service (ESP) reports about sent mail, through anymail's tracking webhooks.

anymail checks each webhook request (basic auth with WEBHOOK_SECRET, the ESP's own signature
where it signs) and sends its `tracking` signal once per event: delivered, bounced, deferred,
complained, unsubscribed, opened, clicked. tracking.receivers hands each event to
esp_event_receive, which turns it into an EspReport.

SendGrid posts up to a thousand events in one request (Mailgun, Postmark and SES one per
request, SES several for a mail to several recipients), so the work is done per request, not
per event: esp_webhook_urls() mounts anymail's views wrapped so that the reports of one request
are collected and recorded together by esp_reports_record (one query for the messages, one
INSERT for the activity, one UPDATE per milestone). A report that arrives outside such a
request (anymail's views mounted unwrapped) is recorded at once.

Idempotent: every report has the key "esp:<esp>:<event id>" (derived from the payload when the
ESP gives no event id), Activity.key is unique and only rows this call inserted have effects,
so a replayed webhook changes nothing. The message (found by Message.esp_message_id) decides
the workspace; an event for a message we do not know is logged and ignored.

What a new report does:
- delivered: Message.delivered_at (first time);
- hard bounce: bounced_at, the bounce text in Message.error, and the contact becomes
  "bounced" with its address suppressed in the workspace, which ends its enrollments;
- soft bounce: bounced_at; Workspace.soft_bounce_limit soft bounces in a row (no delivery in
  between) do what a hard bounce does;
- deferred: only the activity row (the ESP still tries);
- complaint: complained_at, the contact becomes "complained", unsubscribed from every list,
  address suppressed;
- unsubscribed (the ESP's own unsubscribe link): unsubscribed_at and the contact unsubscribed
  from everything;
- opened / clicked: handed to tracking.ingest.hits_write like our own pixel and redirect hits,
  so they are classified the same way and set the same first-time milestones: a mail opened
  through both the ESP's pixel and ours counts once.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anymail.signals import AnymailTrackingEvent, EventType, RejectReason
from anymail.webhooks.base import AnymailBasicAuthMixin
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.urls import URLPattern
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.milestones import messages_lock, milestones_set
from campaigns.models import Message
from campaigns.tracking_links import Source
from contacts.models import Contact, ContactStatus
from contacts.subscriptions import contacts_mark_undeliverable, contacts_unsubscribe_all
from core.models import TrackingMode
from core.pgarray import pg_array
from tracking.hits import CLICK, OPEN, USER_AGENT_LIMIT, Hit, truncate_ip
from tracking.ingest import MessageFacts, activities_insert, hits_write
from tracking.models import Activity, ActivityKind, ActivityRow, Actor, Origin
from tracking.sns import sns_signature_valid

logger = logging.getLogger(__name__)

KEY_LIMIT = 200
DETAIL_LIMIT = 2000

# anymail's normalised event types that become activity of the same kind. Bounces are sorted
# into hard and soft by bounce_is_soft; REJECTED (the ESP refused to send) counts as a bounce
# only when the ESP says the address itself is bad (see _kind).
_KINDS = {
    EventType.DELIVERED: ActivityKind.DELIVERED,
    EventType.DEFERRED: ActivityKind.DEFERRED,
    EventType.COMPLAINED: ActivityKind.COMPLAINED,
    EventType.UNSUBSCRIBED: ActivityKind.UNSUBSCRIBED,
    EventType.OPENED: ActivityKind.OPEN,
    EventType.CLICKED: ActivityKind.CLICK,
}
_HIT_KINDS: dict[str, str] = {ActivityKind.OPEN: OPEN, ActivityKind.CLICK: CLICK}
_MILESTONES: dict[str, str] = {
    ActivityKind.DELIVERED: "delivered",
    ActivityKind.BOUNCED: "bounced",
    ActivityKind.SOFT_BOUNCED: "bounced",
    ActivityKind.COMPLAINED: "complained",
    ActivityKind.UNSUBSCRIBED: "unsubscribed",
}
# Kinds whose ESP text (bounce reason, SMTP answer, feedback type) is kept in Activity.detail.
_DETAILED = {
    ActivityKind.BOUNCED,
    ActivityKind.SOFT_BOUNCED,
    ActivityKind.DEFERRED,
    ActivityKind.COMPLAINED,
}
# An SMTP reply code ("421 ...", "550 ...") or enhanced status code ("4.2.2", "5.1.1").
_SMTP_CLASS = re.compile(r"(?:^|\s)([245])(?:\d\d(?:\s|-|$)|\.\d{1,3}\.\d{1,3}\b)")


@dataclass(frozen=True, slots=True)
class EspReport:
    """One ESP event, reduced to what we keep. Built from anymail's normalised event."""

    key: str
    esp: str
    kind: str
    # Where to look the message up (Message.esp_message_id), best first.
    esp_message_ids: tuple[str, ...]
    occurred_at: datetime
    detail: str = ""
    reason: str = ""
    url: str = ""
    user_agent: str = ""
    ip: str = ""


@dataclass(frozen=True)
class EspRecordResult:
    """What esp_reports_record did: new rows, reports stored before, reports for messages we
    do not know. Opens and clicks a workspace does not track are in none of them."""

    recorded: int
    duplicates: int
    unknown: int


@dataclass(frozen=True, slots=True)
class _MessageFacts:
    """An ESP report's message: what the writer needs of any message (tracking.ingest's
    MessageFacts) and what the report's effects need."""

    id: uuid.UUID
    contact_id: uuid.UUID
    facts: MessageFacts
    tracking_mode: str
    track_opens: bool
    track_clicks: bool
    soft_bounce_limit: int


# --- from anymail's event to our report ------------------------------------------------------


def esp_slug(esp_name: str) -> str:
    """anymail's display name as a key part: "Amazon SES" -> "amazon_ses"."""
    return re.sub(r"[^a-z0-9]+", "_", esp_name.lower()).strip("_") or "esp"


def _raw(event: AnymailTrackingEvent) -> Mapping[str, Any]:
    raw = event.esp_event
    return raw if isinstance(raw, Mapping) else {}


def _dig(raw: Mapping[str, Any], *path: str) -> Any:
    value: Any = raw
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def bounce_is_soft(esp: str, event: AnymailTrackingEvent) -> bool:
    """Whether a bounce is temporary (mailbox full, greylisting, a block that may lift).

    anymail reports both as "bounced"; the ESP's own classification decides where it has one,
    else the SMTP code in the bounce text (4xx soft, 5xx hard). Unknown means hard: that is
    what the ESP reported.
    """
    raw = _raw(event)
    if esp == "amazon_ses":
        return _dig(raw, "bounce", "bounceType") in ("Transient", "Undetermined")
    if esp == "postmark":
        return raw.get("Type") == "SoftBounce"
    if esp == "sendgrid" and raw.get("type") in ("blocked", "bounce"):
        # SendGrid: "bounce" is a permanent failure, "blocked" a temporary refusal.
        return raw.get("type") == "blocked"
    if esp == "mailgun" and _dig(raw, "event-data", "reason") == "old":
        return True  # Mailgun gave up retrying a temporary failure
    text = event.mta_response or ""
    match = _SMTP_CLASS.search(text)
    return bool(match and match.group(1) == "4")


def _kind(esp: str, event: AnymailTrackingEvent) -> str | None:
    event_type = event.event_type
    if event_type == EventType.BOUNCED:
        return ActivityKind.SOFT_BOUNCED if bounce_is_soft(esp, event) else ActivityKind.BOUNCED
    if event_type == EventType.REJECTED:
        # The ESP did not even try: it knows the address is bad (an earlier bounce, invalid),
        # or gave up after repeated temporary failures. Policy blocks and its own suppression
        # for complaints and unsubscribes say nothing new about the address: ignored.
        if event.reject_reason in (RejectReason.BOUNCED, RejectReason.INVALID):
            return ActivityKind.BOUNCED
        if event.reject_reason == RejectReason.TIMED_OUT:
            return ActivityKind.SOFT_BOUNCED
        return None
    return _KINDS.get(event_type)


def _canonical(raw: Any) -> str:
    if hasattr(raw, "lists"):  # a QueryDict (Mailgun's legacy form posts)
        raw = sorted(raw.lists())
    return json.dumps(raw, sort_keys=True, default=str, separators=(",", ":"))


def _event_key(esp: str, event: AnymailTrackingEvent) -> str:
    """The dedupe key "esp:<esp>:<event id>": the ESP's event id, else a digest of the whole
    event (the same payload posted again gives the same key, two different events never do)."""
    event_id = str(event.event_id or "")
    if not event_id:
        payload = _canonical(
            [event.event_type, event.message_id, event.recipient, _canonical(event.esp_event)]
        )
        event_id = "h" + hashlib.sha256(payload.encode()).hexdigest()[:40]
    if esp == "amazon_ses" and event.recipient:
        # One SNS notification (one event id) covers every recipient of the mail; anymail
        # makes one event per recipient.
        event_id += ":" + hashlib.sha256(event.recipient.lower().encode()).hexdigest()[:16]
    key = f"esp:{esp}:{event_id}"
    if len(key) > KEY_LIMIT:
        key = f"esp:{esp}:h{hashlib.sha256(event_id.encode()).hexdigest()[:40]}"
    return key


def _esp_message_ids(event: AnymailTrackingEvent) -> tuple[str, ...]:
    """The id anymail found, then, for SES, the Message-ID header: a mail sent through SES's
    SMTP relay has our Message-ID header as Message.esp_message_id, while SES reports its own
    id. (The other ESPs' ids are the ones anymail finds: Mailgun's is the Message-ID header,
    SendGrid's is anymail's own id or, sent over SMTP, the Message-ID header.)"""
    candidates = [event.message_id, _dig(_raw(event), "mail", "commonHeaders", "messageId")]
    ids = [value for value in candidates if isinstance(value, str) and value]
    return tuple(dict.fromkeys(ids))


def _client_ip(raw: Mapping[str, Any]) -> str:
    """The opener's or clicker's address, where the ESP tells it (not normalised by anymail)."""
    for value in (
        raw.get("ip"),  # SendGrid
        _dig(raw, "event-data", "ip"),  # Mailgun
        _dig(raw, "Geo", "IP"),  # Postmark
        _dig(raw, "open", "ipAddress"),  # Amazon SES
        _dig(raw, "click", "ipAddress"),
    ):
        if isinstance(value, str) and value:
            return truncate_ip(value)
    return ""


def _detail(event: AnymailTrackingEvent) -> str:
    """What the ESP said, as plain text: its description and the receiving server's answer;
    for a mail the ESP refused to send, its reason when it gives no text."""
    parts = [str(part).strip() for part in (event.description, event.mta_response) if part]
    detail = " | ".join(dict.fromkeys(part for part in parts if part))
    if not detail and event.event_type == EventType.REJECTED:
        detail = _("The mail service did not send it (%(reason)s).") % {
            "reason": event.reject_reason
        }
    return detail[:DETAIL_LIMIT]


def esp_report(esp_name: str, event: AnymailTrackingEvent) -> EspReport | None:
    """The report of one anymail tracking event, or None for kinds we do not record (queued,
    sent, autoresponder, ...) and events that name no message."""
    esp = esp_slug(esp_name)
    kind = _kind(esp, event)
    if kind is None:
        return None
    message_ids = _esp_message_ids(event)
    if not message_ids:
        logger.info("ESP event without a message id ignored (%s, %s)", esp, event.event_type)
        return None
    raw = _raw(event)
    return EspReport(
        key=_event_key(esp, event),
        esp=esp,
        kind=kind,
        esp_message_ids=message_ids,
        occurred_at=event.timestamp or timezone.now(),
        detail=_detail(event) if kind in _DETAILED else "",
        reason=str(event.reject_reason or "")[:100],
        url=str(event.click_url or "") if kind == ActivityKind.CLICK else "",
        user_agent=str(event.user_agent or "")[:USER_AGENT_LIMIT],
        ip=_client_ip(raw) if kind in _HIT_KINDS else "",
    )


# --- one request, one batch ------------------------------------------------------------------

_request_reports: contextvars.ContextVar[list[EspReport] | None] = contextvars.ContextVar(
    "esp_request_reports", default=None
)


def esp_event_receive(*, esp_name: str, event: AnymailTrackingEvent) -> None:
    """Take one event from anymail's signal: collected for the end of the webhook request
    when inside one (esp_webhook_view), else recorded at once."""
    report = esp_report(esp_name, event)
    if report is None:
        return
    collected = _request_reports.get()
    if collected is None:
        esp_reports_record([report])
    else:
        collected.append(report)


def _unsecured(view: Callable[..., HttpResponse]) -> bool:
    """Whether anymail would take this webhook from anyone: basic auth is its only check and
    no WEBHOOK_SECRET is set. anymail only warns then; we refuse (anyone could otherwise
    report bounces and complaints that suppress real contacts)."""
    view_class = getattr(view, "view_class", None)
    if view_class is None or not issubclass(view_class, AnymailBasicAuthMixin):
        return False
    instance = view_class(**getattr(view, "view_initkwargs", {}))
    return bool(instance.warn_if_no_basic_auth and not instance.basic_auth)


def esp_webhook_view(
    view: Callable[..., HttpResponse], *, signed_by_sns: bool = False
) -> Callable[..., HttpResponse]:
    """anymail's webhook view, recording the events of one request together after anymail
    has checked and parsed it. An error while recording answers 500, so the ESP posts the
    batch again later (nothing was committed; the keys make the retry safe). With
    `signed_by_sns` (Amazon SES), a message whose SNS signature does not verify is refused
    before anymail reads it (tracking.sns)."""

    @functools.wraps(view)
    def esp_webhook(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if _unsecured(view):
            logger.error(
                "ESP webhook refused: set ANYMAIL_WEBHOOK_SECRET (see docs/esp-webhooks.md)"
            )
            return HttpResponseForbidden()
        if (
            signed_by_sns
            and settings.SES_VERIFY_SNS_SIGNATURES
            and not sns_signature_valid(request.body)
        ):
            logger.warning("SES webhook refused: the SNS signature does not verify")
            return HttpResponseForbidden()
        collected: list[EspReport] = []
        token = _request_reports.set(collected)
        try:
            response = view(request, *args, **kwargs)
        finally:
            _request_reports.reset(token)
        if collected and 200 <= response.status_code < 300:
            esp_reports_record(collected)
        return response

    return esp_webhook


def esp_webhook_urls() -> tuple[list[URLPattern], str]:
    """anymail's webhook URL patterns (its names, namespace "anymail"), each view wrapped by
    esp_webhook_view. For include()."""
    from anymail import urls as anymail_urls

    patterns = [
        URLPattern(
            pattern.pattern,
            esp_webhook_view(
                pattern.callback, signed_by_sns=(pattern.name or "").startswith("amazon_ses_")
            ),
            pattern.default_args,
            pattern.name,
        )
        for pattern in anymail_urls.urlpatterns
        if isinstance(pattern, URLPattern)
    ]
    return patterns, anymail_urls.app_name


# --- recording -------------------------------------------------------------------------------


def _messages_by_esp_id(esp_ids: set[str]) -> dict[str, _MessageFacts]:
    """The message of each ESP id. An id that two messages share (it never should: ESP ids
    and our Message-IDs are unique) belongs to neither: no workspace gets another's event."""
    wanted: Any = list(esp_ids)
    if connection.vendor == "postgresql":
        # One array parameter: Django prepares a thousand IN values slower than PostgreSQL
        # finds the rows.
        wanted = RawSQL("SELECT unnest(%s::text[])", [pg_array(wanted)])
    rows = (
        # The index on esp_message_id leaves out messages without one: the planner uses it
        # only when the query says so too (else it scans every message).
        Message.objects.filter(esp_message_id__in=wanted)
        .exclude(esp_message_id="")
        .order_by()
        .values_list(
            "esp_message_id",
            "pk",
            "workspace_id",
            "contact_id",
            "enrollment__sequence_id",
            "step_key",
            "broadcast_id",
            "variant",
            "sent_at",
            "workspace__tracking_mode",
            "workspace__track_opens",
            "workspace__track_clicks",
            "workspace__soft_bounce_limit",
        )
    )
    found: dict[str, _MessageFacts] = {}
    shared: set[str] = set()
    for row in rows:
        (
            esp_id,
            pk,
            workspace_id,
            contact_id,
            sequence_id,
            step_key,
            broadcast_id,
            variant,
            sent_at,
            tracking_mode,
            track_opens,
            track_clicks,
            soft_bounce_limit,
        ) = row
        if esp_id in found:
            shared.add(esp_id)
        found[esp_id] = _MessageFacts(
            id=pk,
            contact_id=contact_id,
            facts=MessageFacts(
                workspace_id=workspace_id,
                sent_at=sent_at,
                sequence_id=sequence_id,
                step_key=step_key,
                broadcast_id=broadcast_id,
                variant=variant,
            ),
            tracking_mode=tracking_mode,
            track_opens=track_opens,
            track_clicks=track_clicks,
            soft_bounce_limit=soft_bounce_limit,
        )
    for esp_id in shared:
        logger.warning("ESP message id %s belongs to several messages: event ignored", esp_id)
        del found[esp_id]
    return found


def _activity_row(report: EspReport, message: _MessageFacts, recorded_at: datetime) -> ActivityRow:
    """The activity row of a delivery report (not an open or click)."""
    facts = message.facts
    return ActivityRow(
        key=report.key,
        workspace_id=facts.workspace_id,
        message_id=message.id,
        sequence_id=facts.sequence_id,
        step_key=facts.step_key,
        broadcast_id=facts.broadcast_id,
        variant=facts.variant,
        kind=report.kind,
        origin=Origin.ESP.value,
        actor=Actor.SERVICE.value,
        reason=report.reason,
        occurred_at=report.occurred_at,
        recorded_at=recorded_at,
        esp=report.esp[:40],
        detail=report.detail,
    )


def _our_click_url(url: str) -> bool:
    """A link our redirect tracks (the ESP wrapped it once more): the person's browser goes on
    to our redirect, which records this very click."""
    return url.startswith(f"{settings.PUBLIC_BASE_URL}/t/c/")


def _hit(report: EspReport, message: _MessageFacts) -> Hit | None:
    """The ESP's open or click as a hit for tracking.ingest, in the workspace's tracking mode:
    off (or opens/clicks not tracked) records nothing, anonymous records it without the
    message (counted per mail, no reactions)."""
    if message.tracking_mode == TrackingMode.OFF:
        return None
    if report.kind == ActivityKind.OPEN and not message.track_opens:
        return None
    if report.kind == ActivityKind.CLICK and (
        not message.track_clicks or _our_click_url(report.url)
    ):
        return None
    anonymous = message.tracking_mode == TrackingMode.ANONYMOUS
    return Hit(
        key=report.key,
        kind=_HIT_KINDS[report.kind],
        message_id=None if anonymous else message.id,
        source=Source(
            broadcast_id=message.facts.broadcast_id,
            sequence_id=message.facts.sequence_id,
            step_key=message.facts.step_key,
            variant=message.facts.variant,
        )
        if anonymous
        else None,
        link_index=None,
        url=report.url,
        occurred_at=report.occurred_at,
        user_agent=report.user_agent,
        ip=report.ip,
        method="",
        origin=Origin.ESP,
        esp=report.esp,
    )


@transaction.atomic
def esp_reports_record(reports: Iterable[EspReport]) -> EspRecordResult:
    """Record ESP reports (each at most once, by key) and apply what the new ones mean.

    Safe to run twice: a report whose key is stored already changes nothing.
    """
    unique = list({report.key: report for report in reports}.values())
    messages = _messages_by_esp_id({esp_id for r in unique for esp_id in r.esp_message_ids})
    deliveries: list[tuple[EspReport, _MessageFacts]] = []
    hits: list[Hit] = []
    unknown: list[str] = []
    for report in unique:
        message = next(
            (messages[esp_id] for esp_id in report.esp_message_ids if esp_id in messages), None
        )
        if message is None:
            unknown.append(report.esp_message_ids[0])
        elif report.kind not in _HIT_KINDS:
            deliveries.append((report, message))
        elif (hit := _hit(report, message)) is not None:
            hits.append(hit)
    if unknown:
        # Mail of other senders on the same ESP account, or erased contacts' messages.
        logger.info(
            "%d ESP events for unknown messages ignored (e.g. %s)", len(unknown), unknown[:3]
        )
    # Every message this batch may write to, locked in one order before any write: a batch
    # over the same messages in another order waits instead of deadlocking (hits_write below
    # does not lock them again).
    messages_lock(message.id for message in messages.values())
    now = timezone.now()
    inserted = activities_insert(
        [_activity_row(report, message, now) for report, message in deliveries]
    )
    new = [(report, message) for report, message in deliveries if report.key in inserted]
    _apply(new)
    known = {
        message.id: message.facts
        for message in messages.values()
        if message.tracking_mode == TrackingMode.PERSONAL
    }
    written = hits_write(hits, known=known) if hits else None
    return EspRecordResult(
        recorded=len(new) + (written.written if written else 0),
        duplicates=len(deliveries) - len(new) + (written.duplicates if written else 0),
        unknown=len(unknown),
    )


def _apply(new: list[tuple[EspReport, _MessageFacts]]) -> None:
    """Milestones, bounce texts and what happens to the contacts, for newly stored reports."""
    milestones: dict[str, dict[uuid.UUID, datetime]] = defaultdict(dict)
    stops: dict[uuid.UUID, str] = {}
    unsubscribes: set[uuid.UUID] = set()
    reported_by: dict[uuid.UUID, str] = {}
    soft_bounced: dict[uuid.UUID, int] = {}
    bounce_texts: dict[uuid.UUID, str] = {}
    for report, message in sorted(new, key=lambda pair: pair[0].occurred_at):
        reported_by.setdefault(message.contact_id, report.esp)
        milestone = _MILESTONES.get(report.kind)
        if milestone:
            milestones[milestone].setdefault(message.id, report.occurred_at)
        if report.kind == ActivityKind.BOUNCED:
            stops.setdefault(message.contact_id, ContactStatus.BOUNCED)
            bounce_texts.setdefault(message.id, report.detail)
        elif report.kind == ActivityKind.COMPLAINED:
            stops[message.contact_id] = ContactStatus.COMPLAINED
        elif report.kind == ActivityKind.UNSUBSCRIBED:
            unsubscribes.add(message.contact_id)
        elif report.kind == ActivityKind.SOFT_BOUNCED and message.soft_bounce_limit:
            soft_bounced[message.contact_id] = message.soft_bounce_limit
    for milestone, times in milestones.items():
        milestones_set(milestone, times)
    if bounce_texts:
        _messages_bounced(bounce_texts)
    if soft_bounced:
        for contact_id in _soft_bounce_limit_reached(soft_bounced):
            stops.setdefault(contact_id, ContactStatus.BOUNCED)
    if stops or unsubscribes:
        _contacts_stop(stops=stops, unsubscribes=unsubscribes - set(stops), reported_by=reported_by)


def _messages_bounced(texts: Mapping[uuid.UUID, str]) -> None:
    """The ESP's bounce text as each hard-bounced message's error: one UPDATE for the batch on
    PostgreSQL."""
    errors = {
        message_id: (
            _("Hard bounce reported by the mail service: %(reason)s")
            % {"reason": detail or _("no reason given")}
        )[:DETAIL_LIMIT]
        for message_id, detail in texts.items()
    }
    if connection.vendor != "postgresql":
        for message_id, error in errors.items():
            Message.objects.filter(pk=message_id).update(error=error)
        return
    with connection.cursor() as cursor:
        # Names from the model, every value in a parameter.
        cursor.execute(
            f'UPDATE "{Message._meta.db_table}" AS m SET "error" = v.error '  # noqa: S608
            'FROM unnest(%s::uuid[], %s::text[]) AS v(id, error) WHERE m."id" = v.id',
            [pg_array(errors), pg_array(errors.values())],
        )


def _soft_bounce_limit_reached(limits: Mapping[uuid.UUID, int]) -> list[uuid.UUID]:
    """The contacts whose run of soft-bounced messages since their last delivery reached
    their workspace's limit. The contacts are locked first, so that two requests recording
    the 2nd and the 3rd soft bounce at once do not both count 2."""
    contact_ids = sorted(limits)
    list(Contact.objects.select_for_update().filter(pk__in=contact_ids).order_by("pk").values("pk"))
    last_delivery = (
        Activity.objects.filter(
            message__contact_id=OuterRef("message__contact_id"), kind=ActivityKind.DELIVERED
        )
        .order_by("-occurred_at")
        .values("occurred_at")[:1]
    )
    runs = (
        Activity.objects.filter(message__contact_id__in=contact_ids, kind=ActivityKind.SOFT_BOUNCED)
        .annotate(last_delivery=Subquery(last_delivery))
        .filter(Q(last_delivery__isnull=True) | Q(occurred_at__gt=F("last_delivery")))
        .values("message__contact_id")
        .annotate(run=Count("message_id", distinct=True))
        .values_list("message__contact_id", "run")
    )
    return [contact_id for contact_id, run in runs if run >= limits[contact_id]]


def _contacts_stop(
    *,
    stops: Mapping[uuid.UUID, str],
    unsubscribes: set[uuid.UUID],
    reported_by: Mapping[uuid.UUID, str],
) -> None:
    """The contacts whose mail bounced for good or who complained get that status and their
    address suppressed; those who complained or used the ESP's unsubscribe link are
    unsubscribed from every list (a complaint withdraws consent). Each change announces
    contacts.signals.contact_unsubscribed, on which the engine ends the contact's enrollments
    and cancels its messages not yet handed to the ESP.

    A contact that is complained already stays so; bounced gives way to complained.
    """
    contacts = (
        Contact.objects.select_for_update()
        .select_related("workspace")
        .filter(pk__in=set(stops) | unsubscribes)
        .order_by("pk")
    )
    groups: dict[tuple[str | None, str], list[Contact]] = defaultdict(list)
    for contact in contacts:
        groups[(stops.get(contact.pk), f"esp:{reported_by[contact.pk]}")].append(contact)
    # One call per outcome and ESP for all its contacts (each contact has one outcome: a
    # complaint wins over a bounce above).
    for (status, source), group in groups.items():
        if status is None:
            contacts_unsubscribe_all(contacts=group, source=source)
        else:
            contacts_mark_undeliverable(contacts=group, status=status, source=source)


__all__ = [
    "EspRecordResult",
    "EspReport",
    "bounce_is_soft",
    "esp_event_receive",
    "esp_report",
    "esp_reports_record",
    "esp_slug",
    "esp_webhook_urls",
    "esp_webhook_view",
]
