"""Celery tasks that hand messages to the mail transport (see campaigns/sending.py).

Beat entries (config/settings/base.py, CELERY_BEAT_SCHEDULE):
    "messages-retry-due": {"task": "campaigns.messages_retry_due", "schedule": 30.0},
    "messages-recover-stuck": {"task": "campaigns.messages_recover_stuck", "schedule": 60.0},
"""

from __future__ import annotations

import math
from datetime import timedelta

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from campaigns import sending

# A batch per task: large enough to amortise the connection, small enough to finish well
# within the broker's visibility timeout at a modest send rate.
BATCH_SIZE = 500
# At most this many batches are queued by one retry tick; the next tick takes the rest.
RETRY_BATCHES_PER_TICK = 20
# A worker has at most one mail in flight for at most EMAIL_TIMEOUT (30 s); ten minutes without
# an answer means the worker died.
STUCK_AFTER = timedelta(minutes=10)


@shared_task(
    name="campaigns.messages_send",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
)
def messages_send_task(message_ids: list[str]) -> None:
    """Send a batch of messages (campaigns.sending.messages_send) over one connection.

    Safe to run twice, also concurrently: each message is claimed before it is sent and only
    messages without an ESP acceptance are claimable. Messages the workspace's send rate did not
    allow within the batch's wait budget stay queued and are re-queued here a second later.
    """
    result = sending.messages_send(message_ids=message_ids)
    if result.deferred_ids:
        # A short countdown only (the rest is due in about a second); the retry tick also
        # picks them up, since they carry next_attempt_at in the database.
        until = result.deferred_until or timezone.now()
        countdown = max(1, math.ceil((until - timezone.now()).total_seconds()))
        messages_send_task.apply_async(args=(list(result.deferred_ids),), countdown=countdown)


@shared_task(name="campaigns.messages_retry_due", acks_late=True, ignore_result=True)
def messages_retry_due() -> None:
    """Beat: queue one send task per batch of due messages (retries whose backoff passed,
    messages deferred by the rate limit or recovered from a dead worker). Safe to run twice: a
    message listed twice is claimed by one task only."""
    message_ids = sending.messages_retry_due(limit=BATCH_SIZE * RETRY_BATCHES_PER_TICK)
    for start in range(0, len(message_ids), BATCH_SIZE):
        messages_send_task.delay(message_ids[start : start + BATCH_SIZE])


@shared_task(name="campaigns.messages_recover_stuck", acks_late=True, ignore_result=True)
def messages_recover_stuck() -> None:
    """Beat: messages left in "sending" without an ESP acceptance for STUCK_AFTER (their
    worker died) become due retries; messages_retry_due sends them. Safe to run twice."""
    sending.messages_recover_stuck(older_than=STUCK_AFTER)
