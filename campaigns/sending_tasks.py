"""Celery tasks that hand messages to the mail transport (see campaigns/sending.py)."""
