"""Celery tasks of the funnel app."""

from __future__ import annotations

from celery import shared_task

from funnel import webhook_tasks  # noqa: F401  (Celery finds only this module)


@shared_task(name="funnel.events_process", acks_late=True, ignore_result=True)
def events_process(event_ids: list[str]) -> None:
    """Apply stage rules and goals to one batch of stored events (safe to run twice)."""
    from funnel.services import events_process as process

    process(event_ids=event_ids)


@shared_task(name="funnel.events_process_pending", acks_late=True, ignore_result=True)
def events_process_pending() -> None:
    """Beat: pick up events whose processing task was lost (a worker died), oldest first."""
    from datetime import timedelta

    from django.utils import timezone

    from funnel.models import Event
    from funnel.services import events_process as process

    stale = (
        Event.objects.filter(
            processed_at__isnull=True, received_at__lt=timezone.now() - timedelta(minutes=2)
        )
        .order_by("received_at")
        .values_list("pk", flat=True)[:1000]
    )
    ids = [str(pk) for pk in stale]
    if ids:
        process(event_ids=ids)
