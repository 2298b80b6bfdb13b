"""CSV export of contacts and of an import's bad rows, streamed and safe to open in Excel.

Every text cell that a spreadsheet would read as a formula (starting with = + - @, a tab or a
line break) gets a leading single quote (DESIGN.md: formula injection, OWASP "CSV injection").
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime

from django.db.models import QuerySet

from contacts.models import Contact, ContactImport

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
EXPORT_CHUNK_SIZE = 2000
CONTACT_COLUMNS = [
    "email",
    "first_name",
    "last_name",
    "status",
    "locale",
    "timezone",
    "source",
    "score",
    "tags",
    "attributes",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
]
IMPORT_ERROR_COLUMNS = ["row", "message"]


def csv_safe(value: object) -> str:
    """The cell as text, with a leading ' when a spreadsheet would run it as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_TRIGGERS) else text


def _moment(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def contacts_csv_rows(queryset: QuerySet[Contact]) -> Iterator[list[str]]:
    """The header row, then one row per contact, read in chunks (memory stays flat).

    Tags are prefetched per chunk; attributes are one JSON cell. The caller scopes and orders
    the queryset (a list's subscribers, a segment's members).
    """
    yield list(CONTACT_COLUMNS)
    contacts = queryset.prefetch_related("tags").iterator(chunk_size=EXPORT_CHUNK_SIZE)
    for contact in contacts:
        yield [
            csv_safe(contact.email),
            csv_safe(contact.first_name),
            csv_safe(contact.last_name),
            contact.status,
            csv_safe(contact.locale),
            csv_safe(contact.timezone),
            csv_safe(contact.source),
            str(contact.score),
            csv_safe(", ".join(sorted(tag.name for tag in contact.tags.all()))),
            csv_safe(
                json.dumps(contact.attributes, ensure_ascii=False, sort_keys=True)
                if contact.attributes
                else ""
            ),
            _moment(contact.created_at),
            _moment(contact.confirmed_at),
            _moment(contact.unsubscribed_at),
        ]


def import_errors_csv_rows(contact_import: ContactImport) -> Iterator[list[str]]:
    """The header row, then each bad row of the import: its row number and the reason."""
    yield list(IMPORT_ERROR_COLUMNS)
    errors = contact_import.errors.order_by("row", "pk").values_list("row", "message")
    for row, message in errors.iterator(chunk_size=EXPORT_CHUNK_SIZE):
        yield [str(row), csv_safe(message)]


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a streamed response."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[list[str]], *, delimiter: str = ",") -> Iterator[str]:
    """The rows encoded as CSV lines, starting with a BOM so that Excel reads UTF-8."""
    writer = csv.writer(_Echo(), delimiter=delimiter)
    yield "\ufeff"
    for row in rows:
        yield writer.writerow(row)
