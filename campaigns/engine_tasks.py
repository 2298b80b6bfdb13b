"""Celery tasks of the sequence engine (see campaigns/engine.py)."""
