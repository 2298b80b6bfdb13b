"""Celery tasks of the tracking app."""

from __future__ import annotations

from celery import shared_task

from tracking import buffer


@shared_task(name="tracking.hits_drain", ignore_result=True)
def hits_drain() -> int:
    """Move buffered hits into the database (beat: every second). Safe to overlap: the unique
    Activity.key makes a hit written twice a no-op."""
    if not buffer.buffered():
        return 0
    return buffer.hits_drain_all()
