"""Celery tasks of the outgoing webhooks. Imported by funnel/tasks.py so that Celery's
autodiscovery registers them."""

from __future__ import annotations

from celery import shared_task

from funnel import webhooks


@shared_task(name="funnel.webhook_deliveries_send", acks_late=True, ignore_result=True)
def webhook_deliveries_send(delivery_ids: list[str]) -> None:
    """Send these new deliveries (scheduled on commit by webhook_enqueue). Safe to run twice:
    each try is claimed first, and rows that are not due are left to the beat."""
    webhooks.deliveries_send(delivery_ids=delivery_ids)


@shared_task(name="funnel.webhook_deliveries_due", acks_late=True, ignore_result=True)
def webhook_deliveries_due() -> None:
    """Beat (every 30 s): send the deliveries whose next try is due, a batch at a time."""
    webhooks.deliveries_due(limit=webhooks.DUE_BATCH)


@shared_task(name="funnel.webhook_deliveries_purge", acks_late=True, ignore_result=True)
def webhook_deliveries_purge() -> None:
    """Beat (hourly): delete finished deliveries older than 30 days with their attempt log."""
    webhooks.deliveries_purge()
