"""Celery tasks of the sequence engine (see campaigns/engine.py).

Beat entries (config/settings/base.py, CELERY_BEAT_SCHEDULE):
    "campaigns-tick": {"task": "campaigns.tick", "schedule": 5.0},
    "campaigns-stalled-scan": {"task": "campaigns.stalled_scan", "schedule": 300.0},
    "campaigns-segment-scan": {"task": "campaigns.segment_scan", "schedule": 300.0},
    "campaigns-step-webhooks-due": {"task": "campaigns.step_webhooks_due", "schedule": 30.0},
"""

from __future__ import annotations

from celery import shared_task

from campaigns import engine, step_webhooks

TICK_BATCH = 1000
# A tick task stops after this many full batches so that one worker never runs for ever; the
# next beat (5 s later) goes on where it stopped.
MAX_BATCHES_PER_TASK = 20


@shared_task(name="campaigns.tick", acks_late=True, ignore_result=True)
def tick_task() -> None:
    """Beat (every 5 s) and after a reaction: advance due enrollments, a batch of 1,000 at a
    time while batches come back full (at most 20). Safe to run twice and in parallel: rows
    are claimed with FOR UPDATE SKIP LOCKED."""
    for _batch in range(MAX_BATCHES_PER_TASK):
        if engine.tick(limit=TICK_BATCH).claimed < TICK_BATCH:
            break


@shared_task(name="campaigns.stalled_scan", acks_late=True, ignore_result=True)
def stalled_scan_task() -> None:
    """Beat (every 5 min): enroll contacts stalled in a stage, once per stay."""
    engine.stalled_scan()


@shared_task(name="campaigns.segment_scan", acks_late=True, ignore_result=True)
def segment_scan_task() -> None:
    """Beat (every 5 min): start runs for contacts that entered a trigger's segment since the
    last scan (leaving and joining again counts; the re-entry policy decides)."""
    engine.segment_scan()


@shared_task(name="campaigns.step_webhooks_send", acks_late=True, ignore_result=True)
def step_webhooks_send_task(delivery_ids: list[str]) -> None:
    """The webhook calls a tick owes (scheduled on its commit): one try each now; a failure
    is retried from its row by campaigns.step_webhooks_due. Safe to run twice."""
    step_webhooks.step_webhooks_send(delivery_ids=delivery_ids)


@shared_task(name="campaigns.step_webhooks_due", acks_late=True, ignore_result=True)
def step_webhooks_due_task() -> None:
    """Beat (every 30 s): try the webhook calls whose next try is due (retries with
    backoff, and calls whose task was lost). Safe to run twice and in parallel."""
    step_webhooks.step_webhooks_due()


@shared_task(name="campaigns.step_webhook_post", acks_late=True, ignore_result=True)
def step_webhook_post(enrollment_id: str, step_key: str) -> None:
    """Kept for tasks queued before webhook calls were rows: make the row, try it now."""
    step_webhooks.step_webhook_deliver_legacy(enrollment_id=enrollment_id, step_key=step_key)
