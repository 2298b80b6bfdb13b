"""Celery task of the CSV import: one task per import, streaming the file in batches."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError


@shared_task(
    name="contacts.import_run",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=5,
)
def import_run(import_id: str) -> None:
    """Run a queued contact import (contacts.importing.contact_import_run).

    Safe to run twice: the import is claimed with a conditional UPDATE, and a delivery after a
    lost worker resumes after the last committed batch. A lost database connection is retried
    with backoff; any other error marks the import failed with a reason a person can read.
    """
    from contacts.importing import contact_import_run

    contact_import_run(import_id=import_id)


@shared_task(name="contacts.import_files_purge", acks_late=True, ignore_result=True)
def import_files_purge() -> None:
    """Beat: delete uploaded CSV files of imports that finished more than
    IMPORT_FILE_RETENTION_DAYS ago. They hold personal data; the counts and the error report
    (row numbers and reasons) stay."""
    from contacts.importing import contact_import_files_purge

    contact_import_files_purge()
