"""Celery tasks of the sequence engine (see campaigns/engine.py).

Beat entries (config/settings/base.py, CELERY_BEAT_SCHEDULE):
    "campaigns-tick": {"task": "campaigns.tick", "schedule": 5.0},
    "campaigns-stalled-scan": {"task": "campaigns.stalled_scan", "schedule": 300.0},
    "campaigns-segment-scan": {"task": "campaigns.segment_scan", "schedule": 300.0},
"""

from __future__ import annotations

from celery import shared_task

from campaigns import engine

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
    """Beat (every 5 min): enroll segment members never enrolled in the sequence."""
    engine.segment_scan()


@shared_task(name="campaigns.step_webhook_post", acks_late=True, ignore_result=True)
def step_webhook_post(enrollment_id: str, step_key: str) -> None:
    """POST a webhook step's payload (scheduled on commit by the tick). One try."""
    engine.step_webhook_deliver(enrollment_id=enrollment_id, step_key=step_key)
