"""Celery tasks of the campaigns app, one module per concern (imported so Celery finds them)."""

from campaigns import broadcast_tasks, engine_tasks, sending_tasks

__all__ = ["broadcast_tasks", "engine_tasks", "sending_tasks"]
