"""Celery tasks of the analytics app.

Beat entry (config/settings/base.py, CELERY_BEAT_SCHEDULE):
    "analytics-rollups-refresh": {"task": "analytics.rollups_refresh", "schedule": 5.0},
"""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from analytics import rollups

# A refresh stops after this many full batches so that one worker never runs for ever; the
# next beat (5 s later) goes on where it stopped.
MAX_BATCHES_PER_TASK = 20


@shared_task(name="analytics.rollups_refresh", acks_late=True, ignore_result=True)
def rollups_refresh_task() -> None:
    """Beat (every 5 s): mark the keys of recent sends whose announcement may have been lost,
    then recompute dirty rollup keys, a batch at a time while batches come back full. Safe to
    run twice and in parallel: one refresh at a time holds the analytics lock."""
    rollups.rollups_reconcile(now=timezone.now())
    for _batch in range(MAX_BATCHES_PER_TASK):
        if rollups.rollups_refresh(limit=rollups.REFRESH_BATCH) < rollups.REFRESH_BATCH:
            break
