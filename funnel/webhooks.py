"""Outgoing webhooks: endpoints, deliveries stored as rows, signed POSTs with retries.

An event that an endpoint subscribed to becomes one WebhookDelivery row per endpoint, created in
the transaction of the change that caused it; a Celery task sends it after commit, so the request
that caused the event never waits for a receiver. A failed try is retried with exponential
backoff (1, 2, 4 ... minutes, at most an hour apart) until 24 hours after the delivery was
created. An endpoint that has failed for 24 hours without a single success is disabled.
See docs/webhooks.md for the payload and the signature scheme.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from core.exceptions import ApplicationError
from core.models import Workspace
from funnel import outbound_http
from funnel.delivery_tries import DUE_BATCH, TryOutcome, next_try_at, tries_due, tries_send
from funnel.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

EVENT_TYPES: tuple[str, ...] = (
    "contact.created",
    "contact.confirmed",
    "contact.unsubscribed",
    "contact.stage_changed",
    "contact.converted",
    "message.sent",
    "message.delivered",
    "message.opened",
    "message.clicked",
    "message.bounced",
    "message.complained",
)
PING = "ping"
SECRET_PREFIX = "whsec_"  # noqa: S105  (a public prefix, not a secret)
USER_AGENT = "Funnelwerk-Webhooks/1"
MAX_ENDPOINTS_PER_WORKSPACE = 20

DISABLE_AFTER = timedelta(hours=24)

_UNSENT = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


# --- endpoints


def _validate_url(url: str) -> str:
    url = url.strip()
    if len(url) > 2000:
        raise ApplicationError(_("At most 2000 characters."), field="url")
    try:
        outbound_http.check_url(url)
    except outbound_http.UnsafeUrl as exc:
        raise ApplicationError(str(exc), field="url") from exc
    return url


def _validate_events(events: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(str(event_type).strip() for event_type in events))
    if not chosen:
        raise ApplicationError(_("Choose at least one event type."), field="events")
    unknown = [event_type for event_type in chosen if event_type not in EVENT_TYPES]
    if unknown:
        raise ApplicationError(
            _("Unknown event type %(type)s. Known types: %(known)s.")
            % {"type": unknown[0], "known": ", ".join(EVENT_TYPES)},
            field="events",
        )
    return [event_type for event_type in EVENT_TYPES if event_type in chosen]


def webhook_secret_new() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@transaction.atomic
def webhook_endpoint_create(
    *, workspace: Workspace, url: str, events: Sequence[str]
) -> tuple[WebhookEndpoint, str]:
    """Create an endpoint; returns it and its secret (to show once). Not idempotent: every call
    makes a new endpoint with a new secret."""
    url = _validate_url(url)
    event_types = _validate_events(events)
    # Lock the workspace row so two concurrent creations cannot both pass the limit.
    Workspace.objects.select_for_update().filter(pk=workspace.pk).first()
    if WebhookEndpoint.objects.filter(workspace=workspace).count() >= MAX_ENDPOINTS_PER_WORKSPACE:
        raise ApplicationError(
            _("At most %(count)d webhook endpoints per workspace.")
            % {"count": MAX_ENDPOINTS_PER_WORKSPACE},
            field="url",
        )
    secret = webhook_secret_new()
    endpoint = WebhookEndpoint.objects.create(
        workspace=workspace, url=url, events=event_types, secret=secret
    )
    return endpoint, secret


@transaction.atomic
def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: Sequence[str] | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change the URL, the event types, or switch it on or off. Enabling it again clears the
    reason it was disabled and its failure streak. Safe to run twice."""
    if url is not None:
        endpoint.url = _validate_url(url)
    if events is not None:
        endpoint.events = _validate_events(events)
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        if enabled:
            endpoint.disabled_reason = ""
            endpoint.failing_since = None
        else:
            endpoint.disabled_reason = _("Disabled by hand.")
            _fail_unsent(endpoint.pk)
    endpoint.save()
    return endpoint


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint with its deliveries and their log."""
    endpoint.delete()


def _fail_unsent(endpoint_id: uuid.UUID) -> int:
    return WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status__in=_UNSENT).update(
        status=DeliveryStatus.FAILED, next_attempt_at=None
    )


# --- enqueueing


def _subscribed(endpoints: QuerySet[WebhookEndpoint], event_type: str) -> QuerySet[WebhookEndpoint]:
    """Endpoints whose event list holds `event_type`. JSON containment is one indexed
    condition on PostgreSQL; SQLite lacks it, and a workspace has only a few endpoints."""
    if connection.features.supports_json_field_contains:
        return endpoints.filter(events__contains=[event_type])
    ids = [pk for pk, events in endpoints.values_list("pk", "events") if event_type in events]
    return endpoints.filter(pk__in=ids)


def webhooks_wanted(*, workspace_id: str | uuid.UUID, event_type: str) -> bool:
    """Whether any enabled endpoint of the workspace wants this event type (one query)."""
    endpoints = WebhookEndpoint.objects.filter(workspace_id=workspace_id, enabled=True)
    if connection.features.supports_json_field_contains:
        return endpoints.filter(events__contains=[event_type]).exists()
    return any(event_type in events for events in endpoints.values_list("events", flat=True))


def workspaces_wanting(event_type: str) -> set[uuid.UUID]:
    """The workspaces with an enabled endpoint subscribed to `event_type` (one query over the
    endpoints, a small table): hot paths ask this before looking at their own rows."""
    endpoints = WebhookEndpoint.objects.filter(enabled=True)
    return set(_subscribed(endpoints, event_type).values_list("workspace_id", flat=True))


def _payload(delivery_id: uuid.UUID, event_type: str, created_at: datetime, data: Any) -> Any:
    return {
        "id": str(delivery_id),
        "type": event_type,
        "created_at": created_at.isoformat(),
        "data": data,
    }


# Deliveries handed to one sending task: a large batch of events is sent by several workers.
SEND_CHUNK = 100


def _schedule_send(delivery_ids: list[str]) -> None:
    from funnel.webhook_tasks import webhook_deliveries_send

    def send(chunk: list[str]) -> Callable[[], object]:
        return lambda: webhook_deliveries_send.delay(chunk)

    for start in range(0, len(delivery_ids), SEND_CHUNK):
        transaction.on_commit(send(delivery_ids[start : start + SEND_CHUNK]))


@transaction.atomic
def webhook_enqueue(*, workspace_id: str | uuid.UUID, event_type: str, data: dict[str, Any]) -> int:
    """Create one delivery per enabled endpoint subscribed to `event_type` and send them after
    commit. Returns how many were created. Runs inside the caller's transaction, so a change
    that is rolled back announces nothing. Each call is a new event (not idempotent)."""
    return webhooks_enqueue(event_type=event_type, events=[(workspace_id, data)])


@transaction.atomic
def webhooks_enqueue(
    *, event_type: str, events: Iterable[tuple[str | uuid.UUID, dict[str, Any]]]
) -> int:
    """webhook_enqueue for many events of one type, each (workspace id, data), as a batch of
    messages announces them: one query for the endpoints, one INSERT, one sending task per
    SEND_CHUNK deliveries. Returns how many deliveries were created."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"Unknown webhook event type {event_type!r}")
    events = list(events)
    if not events:
        return 0
    endpoints_of: dict[str, list[uuid.UUID]] = defaultdict(list)
    subscribed = _subscribed(
        WebhookEndpoint.objects.filter(
            workspace_id__in={str(workspace_id) for workspace_id, _data in events}, enabled=True
        ),
        event_type,
    )
    for endpoint_id, owner in subscribed.values_list("pk", "workspace_id"):
        endpoints_of[str(owner)].append(endpoint_id)
    now = timezone.now()
    deliveries = []
    for workspace_id, data in events:
        for endpoint_id in endpoints_of.get(str(workspace_id), ()):
            delivery_id = uuid.uuid4()
            deliveries.append(
                WebhookDelivery(
                    id=delivery_id,
                    endpoint_id=endpoint_id,
                    event_type=event_type,
                    payload=_payload(delivery_id, event_type, now, data),
                    next_attempt_at=now,
                )
            )
    if not deliveries:
        return 0
    WebhookDelivery.objects.bulk_create(deliveries)
    _schedule_send([str(delivery.pk) for delivery in deliveries])
    return len(deliveries)


@transaction.atomic
def webhook_send_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Send a "ping" delivery to the endpoint now (after commit, through Celery), also when the
    endpoint is disabled, so a fixed receiver can be checked before enabling it again. A ping is
    tried once and never retried; its success clears the endpoint's failure streak."""
    now = timezone.now()
    delivery_id = uuid.uuid4()
    delivery = WebhookDelivery.objects.create(
        id=delivery_id,
        endpoint=endpoint,
        event_type=PING,
        payload=_payload(
            delivery_id,
            PING,
            now,
            {"endpoint": str(endpoint.pk), "message": "Test delivery from Funnelwerk."},
        ),
        next_attempt_at=now,
    )
    _schedule_send([str(delivery.pk)])
    return delivery


# --- signing and sending


def signature_for(*, secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 with the secret over the timestamp digits directly followed by the raw
    body bytes (no separator)."""
    return hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()


def _unsent() -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(status__in=_UNSENT)


def deliveries_send(*, delivery_ids: Sequence[str | uuid.UUID]) -> TryOutcome:
    """Send these deliveries if they are due (others are left alone). Safe to run twice and
    concurrently: each try is claimed first (funnel.delivery_tries)."""
    return tries_send(unsent=_unsent(), ids=delivery_ids, attempt=_attempt)


def deliveries_due(*, limit: int = DUE_BATCH) -> TryOutcome:
    """Beat: send up to `limit` deliveries whose next try is due, oldest first (retries, and
    first tries whose task was lost)."""
    return tries_due(unsent=_unsent(), limit=limit, attempt=_attempt)


def _attempt(delivery_id: uuid.UUID) -> bool:
    """One HTTP try of a claimed delivery, and its bookkeeping. Returns True on success."""
    delivery = (
        WebhookDelivery.objects.select_related("endpoint")
        .filter(pk=delivery_id, status__in=_UNSENT)
        .first()
    )
    if delivery is None:
        # Failed in the meantime: its endpoint was disabled (or deleted) after the claim.
        return False
    endpoint = delivery.endpoint
    if not endpoint.enabled and delivery.event_type != PING:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.FAILED, next_attempt_at=None
        )
        return False
    # Serialised once: these exact bytes are signed and sent.
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = str(int(timezone.now().timestamp()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Funnelwerk-Timestamp": timestamp,
        "X-Funnelwerk-Signature": signature_for(
            secret=endpoint.secret, timestamp=timestamp, body=body
        ),
        "X-Funnelwerk-Delivery": str(delivery.pk),
        "X-Funnelwerk-Event": delivery.event_type,
    }
    attempted_at = timezone.now()
    result = outbound_http.post(endpoint.url, body=body, headers=headers)
    _record(delivery=delivery, endpoint=endpoint, attempted_at=attempted_at, result=result)
    return result.ok


@transaction.atomic
def _record(
    *,
    delivery: WebhookDelivery,
    endpoint: WebhookEndpoint,
    attempted_at: datetime,
    result: outbound_http.HttpResult,
) -> None:
    WebhookAttempt.objects.create(
        delivery=delivery,
        attempted_at=attempted_at,
        status_code=result.status_code,
        error=result.error[:500],
        response_excerpt=result.excerpt[:500],
        duration_ms=max(result.duration_ms, 0),
    )
    now = timezone.now()
    if result.ok:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.SUCCEEDED,
            attempts=F("attempts") + 1,
            delivered_at=now,
            next_attempt_at=None,
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=False).update(
            failing_since=None
        )
        return
    next_try = next_try_at(created_at=delivery.created_at, attempts=delivery.attempts + 1, now=now)
    if delivery.event_type == PING or next_try is None:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.FAILED, attempts=F("attempts") + 1, next_attempt_at=None
        )
    else:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.RETRYING, attempts=F("attempts") + 1, next_attempt_at=next_try
        )
    if delivery.event_type == PING:
        # A failing test does not start or extend the endpoint's failure streak.
        return
    WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
        failing_since=now
    )
    _disable_if_failing_too_long(endpoint_id=endpoint.pk, now=now, last_error=result.error)


def _disable_if_failing_too_long(*, endpoint_id: uuid.UUID, now: datetime, last_error: str) -> None:
    reason = _(
        "Disabled automatically on %(when)s after 24 hours without a successful delivery. "
        "Last error: %(error)s"
    ) % {"when": now.strftime("%Y-%m-%d %H:%M UTC"), "error": last_error or _("unknown")}
    if WebhookEndpoint.objects.filter(
        pk=endpoint_id, enabled=True, failing_since__lte=now - DISABLE_AFTER
    ).update(enabled=False, disabled_reason=reason[:1000]):
        _fail_unsent(endpoint_id)


# --- retention and erasure

DELIVERY_RETENTION = timedelta(days=30)


def deliveries_purge(*, older_than: timedelta = DELIVERY_RETENTION) -> int:
    """Delete finished deliveries (and their attempt log) older than `older_than`: the log is
    for debugging a receiver, not an archive of personal data. Safe to run twice."""
    deleted, _by_model = WebhookDelivery.objects.filter(
        status__in=(DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED),
        created_at__lt=timezone.now() - older_than,
    ).delete()
    return deleted


@transaction.atomic
def deliveries_redact_contact(*, workspace_id: str | uuid.UUID, contact_id: str) -> int:
    """GDPR erasure: blank the contact's email address in every stored delivery of the
    workspace (also ones not yet sent: after erasure the address is not passed on). The ids
    stay. Returns how many deliveries were changed; safe to run twice."""
    deliveries = list(
        WebhookDelivery.objects.select_for_update().filter(
            endpoint__workspace_id=workspace_id, payload__data__contact__id=contact_id
        )
    )
    changed = []
    for delivery in deliveries:
        contact = delivery.payload.get("data", {}).get("contact")
        if isinstance(contact, dict) and contact.get("email"):
            contact["email"] = ""
            changed.append(delivery)
    WebhookDelivery.objects.bulk_update(changed, ["payload"])
    return len(changed)


# --- reads for the API and pages


def endpoint_list(*, workspace: Workspace) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(workspace=workspace).order_by("created_at")


def endpoint_deliveries(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """The delivery log, newest first, with each delivery's attempts (newest first)."""
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .order_by("-created_at", "-pk")
        .prefetch_related("attempt_log")
    )
