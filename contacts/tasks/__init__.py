"""Celery tasks of the contacts app, one module per concern (imported so Celery finds them)."""

from contacts.tasks import confirmation, imports

__all__ = ["confirmation", "imports"]
