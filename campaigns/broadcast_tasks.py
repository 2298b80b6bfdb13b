"""Celery tasks of broadcasts (see campaigns/broadcasts.py).

Beat entries (config/settings/base.py, CELERY_BEAT_SCHEDULE):
    "broadcasts-dispatch": {"task": "campaigns.broadcasts_dispatch", "schedule": 10.0},
    "broadcasts-ab-decide": {"task": "campaigns.broadcast_ab_decide", "schedule": 60.0},
"""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from campaigns import broadcasts


@shared_task(name="campaigns.broadcasts_dispatch", acks_late=True, ignore_result=True)
def broadcasts_dispatch() -> None:
    """Beat: hand due messages of scheduled and sending broadcasts to sending tasks (one per
    batch) and mark finished broadcasts sent. Safe to run twice: every message is claimed by
    one sending task only."""
    broadcasts.broadcasts_dispatch(now=timezone.now())


@shared_task(name="campaigns.broadcast_ab_decide", acks_late=True, ignore_result=True)
def broadcast_ab_decide() -> None:
    """Beat: decide the A/B tests whose wait is over and queue the rest of their audience with
    the winner. Safe to run twice: the winner is written once, messages are unique per
    contact."""
    broadcasts.broadcasts_ab_decide_due(now=timezone.now())


@shared_task(name="campaigns.broadcast_prepare", acks_late=True, ignore_result=True)
def broadcast_prepare(broadcast_id: str) -> None:
    """Create the messages of a started broadcast (broadcasts.broadcast_send). Safe to run
    twice: messages are unique per contact; a paused or finished broadcast is left alone."""
    from campaigns.models import Broadcast

    broadcast = Broadcast.objects.filter(pk=broadcast_id, status__in=broadcasts.RUNNING).first()
    if broadcast is not None:
        broadcasts.broadcast_send(broadcast=broadcast, now=timezone.now())
