"""The webhook step of sequences: one POST per run and step, retried with backoff from the
database until the receiver answers 2xx or 24 hours have passed.

The tick that reaches a webhook step creates its StepWebhookDelivery row in the tick's own
transaction (unique per enrollment and step) and, after commit, hands the batch's new rows to
ONE task (campaigns.step_webhooks_send). Claiming, backoff and the 24-hour window are those of
the outgoing webhooks (funnel.delivery_tries: 1, 2, 4 ... minutes, at most an hour apart); the
beat task campaigns.step_webhooks_due picks due rows up. After 24 hours the delivery fails for
good with the last reason, which the builder shows at the step. A URL that can never be called
(not https, a private address) fails at once.

A receiver may still get a try twice (a 2xx lost on the way back), so every body carries the
delivery's id, also in the header X-Funnelwerk-Delivery, to deduplicate. The run itself does
not wait for the webhook: it moves on at once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.models import Enrollment, StepWebhookDelivery, StepWebhookStatus
from campaigns.models import Sequence as SequenceModel
from funnel import outbound_http
from funnel.delivery_tries import DUE_BATCH, TryOutcome, next_try_at, tries_due, tries_send

logger = logging.getLogger(__name__)

USER_AGENT = "Funnelwerk-Sequences/1"
UNSENT = (StepWebhookStatus.PENDING, StepWebhookStatus.RETRYING)


def step_webhook_deliveries_create(
    *, workspace_ids: dict[uuid.UUID, uuid.UUID], calls: Iterable[tuple[uuid.UUID, str]]
) -> list[str]:
    """Create the delivery owed for each (enrollment id, step key) that has none yet, due now,
    in the caller's transaction; return the ids of those that are still to be sent (new ones,
    and any of these that a lost task left pending). Safe to run twice."""
    wanted = set(calls)
    if not wanted:
        return []
    now = timezone.now()
    StepWebhookDelivery.objects.bulk_create(
        [
            StepWebhookDelivery(
                workspace_id=workspace_ids[enrollment_id],
                enrollment_id=enrollment_id,
                step_key=step_key,
                next_attempt_at=now,
            )
            for enrollment_id, step_key in sorted(wanted)
        ],
        ignore_conflicts=True,
    )
    rows = StepWebhookDelivery.objects.filter(
        enrollment_id__in={enrollment_id for enrollment_id, _key in wanted},
        status=StepWebhookStatus.PENDING,
    ).values_list("pk", "enrollment_id", "step_key")
    return [str(pk) for pk, enrollment_id, key in rows if (enrollment_id, key) in wanted]


def schedule_send(delivery_ids: list[str]) -> None:
    """Hand these deliveries to ONE sending task after the current transaction commits."""
    if not delivery_ids:
        return
    from campaigns.engine_tasks import step_webhooks_send_task

    ids = list(delivery_ids)
    transaction.on_commit(lambda: step_webhooks_send_task.delay(ids))


def _unsent() -> QuerySet[StepWebhookDelivery]:
    return StepWebhookDelivery.objects.filter(status__in=UNSENT)


def step_webhooks_send(*, delivery_ids: Sequence[str | uuid.UUID]) -> TryOutcome:
    """Try these deliveries if they are due (others are left alone). Safe to run twice and
    concurrently: each try is claimed first (funnel.delivery_tries)."""
    return tries_send(unsent=_unsent(), ids=delivery_ids, attempt=_attempt)


def step_webhooks_due(*, limit: int = DUE_BATCH) -> TryOutcome:
    """Beat: try up to `limit` deliveries whose next try is due, oldest first (retries, and
    first tries whose task was lost or whose worker died)."""
    return tries_due(unsent=_unsent(), limit=limit, attempt=_attempt)


def _attempt(delivery_id: uuid.UUID) -> bool:
    """One try of a claimed delivery and its bookkeeping. Returns True on a 2xx."""
    delivery = (
        StepWebhookDelivery.objects.select_related("enrollment__sequence", "enrollment__contact")
        .filter(pk=delivery_id, status__in=UNSENT)
        .first()
    )
    if delivery is None:
        return False
    enrollment = delivery.enrollment
    step = next((s for s in enrollment.sequence.steps if s.get("key") == delivery.step_key), None)
    if step is None or step.get("type") != "webhook":
        return _fail(delivery, _("The step no longer exists in the sequence."))
    try:
        outbound_http.check_url(step["url"])
    except outbound_http.UnsafeUrl as exc:
        return _fail(delivery, _("This URL cannot be called: %(reason)s") % {"reason": exc})
    # The body is built at each try, from the run as it is: nothing personal waits in the row.
    body = json.dumps(
        {
            "id": str(delivery.pk),
            "type": "sequence.step",
            "sequence": str(enrollment.sequence_id),
            "enrollment": str(enrollment.pk),
            "step": delivery.step_key,
            "contact": {"id": str(enrollment.contact_id), "email": enrollment.contact.email},
        }
    ).encode()
    attempted_at = timezone.now()
    result = outbound_http.post(
        step["url"],
        body=body,
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Funnelwerk-Delivery": str(delivery.pk),
        },
    )
    _record(delivery, attempted_at=attempted_at, result=result)
    return result.ok


def _fail(delivery: StepWebhookDelivery, reason: str) -> bool:
    StepWebhookDelivery.objects.filter(pk=delivery.pk, status__in=UNSENT).update(
        status=StepWebhookStatus.FAILED, next_attempt_at=None, error=reason[:1000]
    )
    logger.warning("webhook step %s of %s failed: %s", delivery.step_key, delivery.pk, reason)
    return False


def _record(
    delivery: StepWebhookDelivery, *, attempted_at: dt.datetime, result: outbound_http.HttpResult
) -> None:
    now = timezone.now()
    common = {
        "attempts": F("attempts") + 1,
        "last_attempt_at": attempted_at,
        "last_status_code": result.status_code,
    }
    unsent = StepWebhookDelivery.objects.filter(pk=delivery.pk, status__in=UNSENT)
    if result.ok:
        unsent.update(
            status=StepWebhookStatus.DELIVERED,
            delivered_at=now,
            next_attempt_at=None,
            error="",
            **common,
        )
        return
    reason = result.error or _("The receiver did not answer with 2xx.")
    attempts = delivery.attempts + 1
    next_try = next_try_at(created_at=delivery.created_at, attempts=attempts, now=now)
    if next_try is None:
        unsent.update(
            status=StepWebhookStatus.FAILED,
            next_attempt_at=None,
            error=(
                _("Gave up after %(attempts)d tries over 24 hours. %(reason)s")
                % {"attempts": attempts, "reason": reason}
            )[:1000],
            **common,
        )
        logger.warning("webhook step %s of %s gave up: %s", delivery.step_key, delivery.pk, reason)
        return
    unsent.update(
        status=StepWebhookStatus.RETRYING,
        next_attempt_at=next_try,
        error=reason[:1000],
        **common,
    )


@dataclass(frozen=True)
class StepWebhookSummary:
    """How a sequence's webhook step has fared: counts by outcome and the latest failure."""

    delivered: int = 0
    waiting: int = 0
    failed: int = 0
    last_error: str = ""
    last_error_at: dt.datetime | None = None
    last_error_final: bool = False


def step_webhook_summaries(*, sequence: SequenceModel) -> dict[str, StepWebhookSummary]:
    """Per webhook step key of the sequence: delivered, waiting (pending or retrying) and
    failed calls, and the latest try that failed with its reason. Two queries."""
    deliveries = StepWebhookDelivery.objects.filter(enrollment__sequence=sequence)
    counts: dict[str, dict[str, int]] = {}
    for step_key, status, number in (
        deliveries.values("step_key", "status")
        .annotate(number=Count("pk"))
        .order_by()
        .values_list("step_key", "status", "number")
    ):
        counts.setdefault(step_key, {})[status] = number
    latest: dict[str, tuple[str, dt.datetime | None, bool]] = {}
    for step_key, error, attempted_at, status in (
        deliveries.exclude(error="")
        .order_by("step_key", F("last_attempt_at").desc(nulls_last=True), "-created_at")
        .distinct("step_key")
        .values_list("step_key", "error", "last_attempt_at", "status")
    ):
        latest[step_key] = (error, attempted_at, status == StepWebhookStatus.FAILED)
    summaries = {}
    for step_key in set(counts) | set(latest):
        by_status = counts.get(step_key, {})
        error, at, final = latest.get(step_key, ("", None, False))
        summaries[step_key] = StepWebhookSummary(
            delivered=by_status.get(StepWebhookStatus.DELIVERED, 0),
            waiting=by_status.get(StepWebhookStatus.PENDING, 0)
            + by_status.get(StepWebhookStatus.RETRYING, 0),
            failed=by_status.get(StepWebhookStatus.FAILED, 0),
            last_error=error,
            last_error_at=at,
            last_error_final=final,
        )
    return summaries


def step_webhook_deliver_legacy(*, enrollment_id: str, step_key: str) -> bool:
    """A task queued before deliveries were rows (campaigns.step_webhook_post): create the
    delivery if it is missing and try it now. Returns whether the receiver answered 2xx."""
    enrollment = Enrollment.objects.filter(pk=enrollment_id).first()
    if enrollment is None:
        return False
    with transaction.atomic():
        ids = step_webhook_deliveries_create(
            workspace_ids={enrollment.pk: enrollment.workspace_id},
            calls=[(enrollment.pk, step_key)],
        )
    return step_webhooks_send(delivery_ids=ids).succeeded == 1


__all__ = [
    "StepWebhookSummary",
    "schedule_send",
    "step_webhook_deliver_legacy",
    "step_webhook_deliveries_create",
    "step_webhook_summaries",
    "step_webhooks_due",
    "step_webhooks_send",
]
