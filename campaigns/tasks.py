"""Celery tasks of the campaigns app, one module per concern (imported so Celery finds them)."""

from campaigns import engine_tasks, sending_tasks

__all__ = ["engine_tasks", "sending_tasks"]
