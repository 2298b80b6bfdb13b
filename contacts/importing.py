"""CSV import of contacts: upload, column mapping, and the streaming run behind the progress bar.

The file is never read whole: a csv reader over a text wrapper over the stored file yields one
record at a time, and rows are written in batches of BATCH_SIZE, each batch in its own
transaction together with its bad rows and the progress counters. Memory therefore stays flat
whatever the size of the file (bench/import.py measures it).

Rules of the import (DESIGN.md, "Security and compliance rules"):
- Contacts are matched by their normalised, lower-cased address: an existing one is updated,
  never duplicated. Empty cells never erase what is stored; tags are only ever added.
- A row becomes subscribed only with the legal basis: a consent date and a consent source. It
  then gets a ConsentRecord of kind "recorded" (with the consent text version, when a column
  carries one) and, when a list was chosen, a confirmed subscription to that list. A row without
  a status cell is subscribed when it has both, and not_subscribed when it has neither; rows
  that are not subscribed are not put on the list.
- An import never lifts a suppression: a suppressed address, a contact that unsubscribed,
  bounced or complained, or one that left the chosen list is never made subscribed; such a row
  is reported as bad.
- Existing contacts are never downgraded to not_subscribed by a file. "unsubscribed" in the
  status column unsubscribes and suppresses (migrating the unsubscribes of another tool).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import logging
import os
import re
import uuid
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone, translation
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _

from contacts import signals, validators
from contacts.models import (
    SUPPRESSING_STATUSES,
    ConsentKind,
    ConsentRecord,
    ConsentText,
    Contact,
    ContactImport,
    ContactImportError,
    ContactStatus,
    ImportStatus,
    MailingList,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    Tag,
)
from core.exceptions import ApplicationError, ConflictError
from core.models import Workspace

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
ENCODING_SAMPLE_BYTES = 64 * 1024
MAX_IMPORT_BYTES = 512 * 1024 * 1024
MAX_COLUMNS = 200
SAMPLE_ROWS = 3
# Name and id caches of a run are bounded so that memory stays flat on any file.
CACHE_LIMIT = 10_000

SINGLE_TARGETS = (
    "email",
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "source",
    "score",
    "status",
    "consent_at",
    "consent_source",
    "consent_text",
    "tags",
)
ATTRIBUTE_PREFIX = "attributes."
IMPORTABLE_STATUSES = (
    ContactStatus.NOT_SUBSCRIBED,
    ContactStatus.SUBSCRIBED,
    ContactStatus.UNSUBSCRIBED,
)
TEXT_LIMITS = {
    "first_name": 150,
    "last_name": 150,
    "source": 200,
    "locale": 10,
    "timezone": 64,
    "consent_source": 200,
}
SCORE_LIMIT = 1_000_000
# Header names (lower-cased, letters and digits only) that suggest a target, English and German.
HEADER_SUGGESTIONS: dict[str, str] = {
    **dict.fromkeys(
        ("email", "emailaddress", "emailadresse", "mail", "mailadresse", "emailaddresse"), "email"
    ),
    **dict.fromkeys(("firstname", "vorname", "givenname", "fname", "forename"), "first_name"),
    **dict.fromkeys(
        ("lastname", "nachname", "surname", "familyname", "familienname", "lname"), "last_name"
    ),
    **dict.fromkeys(("locale", "language", "sprache", "lang"), "locale"),
    **dict.fromkeys(("timezone", "tz", "zeitzone"), "timezone"),
    **dict.fromkeys(("source", "quelle"), "source"),
    **dict.fromkeys(("score", "punkte"), "score"),
    **dict.fromkeys(("status",), "status"),
    **dict.fromkeys(
        (
            "consentat",
            "consentdate",
            "consentedat",
            "optindate",
            "optintime",
            "optinat",
            "einwilligungsdatum",
            "einwilligungam",
            "einwilligungszeitpunkt",
            "optindatum",
        ),
        "consent_at",
    ),
    **dict.fromkeys(
        ("consentsource", "optinsource", "einwilligungsquelle", "optinquelle"), "consent_source"
    ),
    **dict.fromkeys(("consenttext", "einwilligungstext", "optintext"), "consent_text"),
    **dict.fromkeys(("tags", "tag", "schlagworte", "labels"), "tags"),
}
DATE_FORMATS = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y")
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_TAG_SEPARATORS = re.compile(r"[,;|]")
_ADVISORY_LOCK_NAMESPACE = 0x46570001  # "FW" + 1: keeps import locks apart from others


# --- upload -------------------------------------------------------------------------------------


def sniff_encoding(sample: bytes) -> str:
    """The codec to read a file with, decided from its first bytes.

    UTF-8 (with or without BOM) when the sample is valid UTF-8, or when it is mostly UTF-8 with
    a few bad bytes (a file pasted together from two sources): the rows that fail to decode are
    then reported as bad rows instead of garbling every umlaut of the file. Otherwise Latin-1,
    which decodes any byte.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    text = decoder.decode(sample, final=False)
    undecodable = len(_UNDECODABLE.findall(text))
    if not undecodable:
        return "utf-8"
    non_ascii = sum(1 for char in text if char > "\x7f") - undecodable
    return "utf-8" if non_ascii > undecodable else "latin-1"


def sniff_delimiter(header_line: str) -> str:
    """Semicolon for German Excel's CSV, else comma."""
    return ";" if header_line.count(";") > header_line.count(",") else ","


def suggest_mapping(headers: Sequence[str]) -> dict[str, str]:
    """A first guess of the column mapping from the header names ("" = not imported).

    Unknown columns are left out rather than guessed into attributes: only what the user
    chooses is stored.
    """
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for header in headers:
        key = re.sub(r"[^a-z0-9]", "", header.lower())
        target = HEADER_SUGGESTIONS.get(key, "")
        if target and target not in taken:
            taken.add(target)
            mapping[header] = target
        else:
            mapping[header] = ""
    return mapping


def _unique_headers(raw_headers: Sequence[str]) -> list[str]:
    headers: list[str] = []
    for position, raw in enumerate(raw_headers, start=1):
        name = raw.strip() or _("Column %(number)d") % {"number": position}
        candidate, suffix = name, 2
        while candidate in headers:
            candidate = f"{name} ({suffix})"
            suffix += 1
        headers.append(candidate)
    return headers


@transaction.atomic
def contact_import_create(
    *, workspace: Workspace, uploaded_file: File[Any], created_by: str
) -> ContactImport:
    """Store an uploaded CSV file and read what the mapping page needs.

    Sniffs the encoding (UTF-8 with or without BOM, else Latin-1) and the delimiter (, or ;)
    and stores the header names. Nothing is imported yet: the import waits in "uploaded" for
    contact_import_configure. Each call makes a new import.
    """
    size = uploaded_file.size or 0
    if size > MAX_IMPORT_BYTES:
        raise ApplicationError(
            _("The file is larger than %(megabytes)d MB.")
            % {"megabytes": MAX_IMPORT_BYTES // (1024 * 1024)},
            field="file",
        )
    uploaded_file.seek(0)
    sample = uploaded_file.read(ENCODING_SAMPLE_BYTES)
    uploaded_file.seek(0)
    if not isinstance(sample, bytes):
        sample = str(sample).encode()
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ApplicationError(
            _("This file is UTF-16. Save it as “CSV UTF-8” and upload it again."), field="file"
        )
    encoding = sniff_encoding(sample)
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample, final=False)
    if not text.strip():
        raise ApplicationError(_("The file is empty."), field="file")
    delimiter = sniff_delimiter(text.splitlines()[0] if text.splitlines() else "")
    try:
        raw_headers = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except (StopIteration, csv.Error) as exc:
        raise ApplicationError(_("The first row must name the columns."), field="file") from exc
    if not any(cell.strip() for cell in raw_headers):
        raise ApplicationError(_("The first row must name the columns."), field="file")
    if len(raw_headers) > MAX_COLUMNS:
        raise ApplicationError(
            _("The file has more than %(count)d columns.") % {"count": MAX_COLUMNS},
            field="file",
        )
    original_name = os.path.basename(uploaded_file.name or "import.csv")[:255]
    contact_import = ContactImport(
        workspace=workspace,
        created_by=created_by[:200],
        original_name=original_name,
        encoding=encoding,
        delimiter=delimiter,
        headers=_unique_headers(raw_headers),
    )
    contact_import.file.save(original_name, uploaded_file, save=False)
    contact_import.save()
    return contact_import


def contact_import_samples(
    contact_import: ContactImport, *, count: int = SAMPLE_ROWS
) -> dict[str, list[str]]:
    """Header -> its first `count` values in the file, for the mapping page."""
    samples: dict[str, list[str]] = {header: [] for header in contact_import.headers}
    with _open_records(contact_import) as records:
        for record in records:
            if record.cells is None:
                continue
            for header, value in zip(contact_import.headers, record.cells, strict=False):
                samples[header].append(_UNDECODABLE.sub("\ufffd", value))
            count -= 1
            if count == 0:
                break
    return samples


# --- configure ----------------------------------------------------------------------------------


def validate_mapping(*, headers: Sequence[str], mapping: Any) -> dict[str, str]:
    """The mapping {header: target} with unmapped columns dropped; ApplicationError if invalid.

    Targets are allow-listed; exactly one column is the email address; every other target
    but attributes.<key> is used at most once.
    """
    if not isinstance(mapping, dict):
        raise ApplicationError(
            _("Give the mapping as an object: column -> field."), field="mapping"
        )
    cleaned: dict[str, str] = {}
    used: set[str] = set()
    for header, target in mapping.items():
        if header not in headers:
            raise ApplicationError(
                _("The file has no column %(column)s.") % {"column": header}, field="mapping"
            )
        if target in ("", None):
            continue
        if not isinstance(target, str):
            raise ApplicationError(_("Each column maps to a field name."), field="mapping")
        if target.startswith(ATTRIBUTE_PREFIX):
            key = target.removeprefix(ATTRIBUTE_PREFIX)
            if not _ATTRIBUTE_KEY.match(key) or len(key) > 100:
                raise ApplicationError(
                    _("Attribute names use letters, digits and _ and start with a letter: %(key)s")
                    % {"key": key},
                    field="mapping",
                )
        elif target not in SINGLE_TARGETS:
            raise ApplicationError(
                _("%(target)s is not a field a column can be imported into.") % {"target": target},
                field="mapping",
            )
        if target in used:
            raise ApplicationError(
                _("Two columns are mapped to %(target)s.") % {"target": target}, field="mapping"
            )
        used.add(target)
        cleaned[header] = target
    if "email" not in used:
        raise ApplicationError(_("Map exactly one column to the email address."), field="mapping")
    if sum(target.startswith(ATTRIBUTE_PREFIX) for target in used) > validators.MAX_ATTRIBUTES:
        raise ApplicationError(
            _("At most %(count)d attribute columns.") % {"count": validators.MAX_ATTRIBUTES},
            field="mapping",
        )
    return cleaned


@transaction.atomic
def contact_import_configure(
    *,
    contact_import: ContactImport,
    mapping: Any,
    tags: Any = (),
    mailing_list: MailingList | None = None,
) -> ContactImport:
    """Set the column mapping, the tags to add and the list, and queue the run on commit.

    Only an import waiting in "uploaded" can be configured: a second call (a double-clicked
    form) gets ConflictError and queues nothing.
    """
    from contacts.tasks.imports import import_run

    cleaned_mapping = validate_mapping(headers=contact_import.headers, mapping=mapping)
    try:
        cleaned_tags = validators.clean_tags(list(tags))
    except (ValidationError, TypeError) as exc:
        message = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
        raise ApplicationError(message, field="tags") from exc
    if mailing_list is not None and mailing_list.workspace_id != contact_import.workspace_id:
        raise ApplicationError(_("Choose one of this workspace's lists."), field="list")
    queued = ContactImport.objects.filter(
        pk=contact_import.pk, status=ImportStatus.UPLOADED
    ).update(
        status=ImportStatus.QUEUED,
        mapping=cleaned_mapping,
        tags=cleaned_tags,
        mailing_list=mailing_list,
    )
    if not queued:
        raise ConflictError(_("This import has already been started."))
    contact_import.refresh_from_db()
    import_id = str(contact_import.pk)
    transaction.on_commit(lambda: import_run.delay(import_id))
    return contact_import


@transaction.atomic
def contact_import_start(
    *,
    workspace: Workspace,
    uploaded_file: File[Any],
    created_by: str,
    mapping: Any = None,
    tags: Any = (),
    mailing_list: MailingList | None = None,
) -> ContactImport:
    """Upload and configure in one step (the API): the suggested mapping when none is given.

    Nothing is kept when the mapping is refused: the row rolls back and the stored file is
    deleted.
    """
    contact_import = contact_import_create(
        workspace=workspace, uploaded_file=uploaded_file, created_by=created_by
    )
    if mapping is None:
        mapping = suggest_mapping(contact_import.headers)
    try:
        return contact_import_configure(
            contact_import=contact_import,
            mapping=mapping,
            tags=tags,
            mailing_list=mailing_list,
        )
    except ApplicationError:
        contact_import.file.delete(save=False)
        raise


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    """One record of the file: its row number (header = 1) and cells, or why it was unreadable."""

    number: int
    cells: list[str] | None
    problem: str = ""


@contextlib.contextmanager
def _open_records(contact_import: ContactImport) -> Iterator[Iterator[_Record]]:
    """The data records of the stored file, streamed; blank records are skipped."""
    binary: IO[bytes] = contact_import.file.open("rb")
    text = io.TextIOWrapper(
        binary,
        encoding=contact_import.encoding or "utf-8-sig",
        errors="surrogateescape",
        newline="",
    )
    try:
        yield _records(text, delimiter=contact_import.delimiter or ",")
    finally:
        text.close()


def _records(text: IO[str], *, delimiter: str) -> Iterator[_Record]:
    reader = csv.reader(text, delimiter=delimiter)
    number = 0
    while True:
        number += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if number > 1:
                yield _Record(
                    number,
                    None,
                    _("The row could not be read as CSV: %(reason)s") % {"reason": exc},
                )
            continue
        if number == 1:
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if _UNDECODABLE.search("\x00".join(cells)):
            yield _Record(
                number,
                None,
                _(
                    "This row is not valid UTF-8 (wrong encoding). Save the file as UTF-8 and "
                    "import the row again."
                ),
            )
            continue
        yield _Record(number, cells)


# --- parsing one row ----------------------------------------------------------------------------


@dataclass
class _Row:
    """A row that passed validation, ready to be written."""

    number: int
    email: str
    profile: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    status: str = ContactStatus.NOT_SUBSCRIBED
    consent_at: datetime | None = None
    consent_source: str = ""
    consent_text: str = ""


@dataclass(frozen=True)
class _Plan:
    """What a run needs to turn cells into rows, fixed once per run."""

    columns: tuple[tuple[int, str], ...]
    header_count: int
    zone: zoneinfo.ZoneInfo


def _plan_for(contact_import: ContactImport) -> _Plan:
    columns_by_header: Mapping[str, str] = contact_import.mapping or {}
    positions = {header: index for index, header in enumerate(contact_import.headers)}
    columns = tuple(
        (positions[header], target)
        for header, target in columns_by_header.items()
        if header in positions and target
    )
    try:
        zone = zoneinfo.ZoneInfo(contact_import.workspace.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    return _Plan(
        columns=columns,
        header_count=len(contact_import.headers),
        zone=zone,
    )


def _parse_status(value: str) -> str | None:
    normalised = value.strip().lower().replace(" ", "_").replace("-", "_")
    return normalised if normalised in IMPORTABLE_STATUSES else None


def _parse_moment(value: str, zone: zoneinfo.ZoneInfo) -> datetime | None:
    value = value.strip()
    moment: datetime | None = None
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            if day is not None:
                moment = datetime.combine(day, time.min)
    except ValueError:
        moment = None
    if moment is None:
        for pattern in DATE_FORMATS:
            try:
                moment = datetime.strptime(value, pattern)  # noqa: DTZ007  # made aware below
            except ValueError:
                continue
            break
    if moment is None:
        return None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, zone)
    return moment


def _missing_consent_date() -> str:
    return _(
        "The consent date is missing: status subscribed needs the date and the source of the "
        "consent."
    )


def _missing_consent_source() -> str:
    return _(
        "The consent source is missing: status subscribed needs the date and the source of the "
        "consent."
    )


def _parse_row(record: _Record, plan: _Plan, now: datetime) -> _Row | list[str]:
    """The validated row, or the reasons it cannot be imported."""
    cells = record.cells or []
    problems: list[str] = []
    if len(cells) > plan.header_count and any(c.strip() for c in cells[plan.header_count :]):
        problems.append(
            _("The row has %(cells)d cells but the header only %(columns)d.")
            % {"cells": len(cells), "columns": plan.header_count}
        )
    row = _Row(number=record.number, email="", status="")
    raw_status = ""
    consent_at_given = False
    for index, target in plan.columns:
        value = cells[index].strip() if index < len(cells) else ""
        if not value:
            continue
        if target == "email":
            row.email = value
        elif target in ("first_name", "last_name", "source"):
            if len(value) > TEXT_LIMITS[target]:
                problems.append(
                    _("%(field)s has more than %(count)d characters.")
                    % {"field": target, "count": TEXT_LIMITS[target]}
                )
            row.profile[target] = value
        elif target in ("locale", "timezone"):
            check = (
                validators.validate_locale if target == "locale" else validators.validate_timezone
            )
            try:
                check(value)
            except ValidationError as exc:
                problems.extend(exc.messages)
            else:
                if len(value) > TEXT_LIMITS[target]:
                    problems.append(
                        _("%(field)s has more than %(count)d characters.")
                        % {"field": target, "count": TEXT_LIMITS[target]}
                    )
            row.profile[target] = value
        elif target == "score":
            try:
                score = int(value)
            except ValueError:
                score = None
            if score is None or abs(score) > SCORE_LIMIT:
                problems.append(_("The score %(value)s is not a whole number.") % {"value": value})
            else:
                row.profile["score"] = score
        elif target == "status":
            raw_status = value
        elif target == "consent_at":
            consent_at_given = True
            moment = _parse_moment(value, plan.zone)
            if moment is None:
                problems.append(
                    _(
                        "The consent date %(value)s is not a date; use 2024-03-31, "
                        "2024-03-31 14:30 or 31.03.2024."
                    )
                    % {"value": value}
                )
            elif moment > now:
                problems.append(_("The consent date lies in the future."))
            else:
                row.consent_at = moment
        elif target == "consent_source":
            if len(value) > TEXT_LIMITS[target]:
                problems.append(
                    _("%(field)s has more than %(count)d characters.")
                    % {"field": target, "count": TEXT_LIMITS[target]}
                )
            row.consent_source = value
        elif target == "consent_text":
            row.consent_text = value
        elif target == "tags":
            try:
                row.tags = validators.clean_tags(_TAG_SEPARATORS.split(value))
            except ValidationError as exc:
                problems.extend(exc.messages)
        else:
            row.attributes[target.removeprefix(ATTRIBUTE_PREFIX)] = value
    if not row.email:
        problems.insert(0, _("The email address is missing."))
    else:
        try:
            row.email = validators.normalize_email(row.email)
        except ValidationError as exc:
            problems[:0] = exc.messages
    if raw_status:
        status = _parse_status(raw_status)
        if status is None:
            problems.append(
                _("Unknown status %(value)s; use subscribed, not_subscribed or unsubscribed.")
                % {"value": raw_status}
            )
        row.status = status or ""
        if row.status == ContactStatus.SUBSCRIBED:
            if not consent_at_given:
                problems.append(_missing_consent_date())
            if not row.consent_source:
                problems.append(_missing_consent_source())
    elif consent_at_given and row.consent_source:
        # The rule: with a consent date and source a row is subscribed, else not.
        row.status = ContactStatus.SUBSCRIBED
    elif consent_at_given:
        problems.append(_missing_consent_source())
    elif row.consent_source:
        problems.append(_missing_consent_date())
    else:
        row.status = ContactStatus.NOT_SUBSCRIBED
    return problems or row


# --- writing one batch --------------------------------------------------------------------------


@dataclass
class _Outcome:
    created: int = 0
    updated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


class _Run:
    """State of one run: the import, its fixed plan and bounded caches of names to ids."""

    def __init__(self, contact_import: ContactImport) -> None:
        self.contact_import = contact_import
        self.workspace = contact_import.workspace
        self.plan = _plan_for(contact_import)
        self.mailing_list = contact_import.mailing_list
        self.new_source = f"import:{contact_import.original_name}"[:200]
        self.recorded_by = " ".join(
            part for part in (contact_import.created_by, f"import:{contact_import.pk}") if part
        )[:200]
        self.tag_ids: dict[str, int] = {}
        self.consent_text_ids: dict[str, int] = {}

    def forget_ids(self) -> None:
        """After a rollback: ids created inside it no longer exist."""
        self.tag_ids.clear()
        self.consent_text_ids.clear()

    def tag_ids_for(self, names: set[str]) -> dict[str, int]:
        if len(self.tag_ids) > CACHE_LIMIT:
            self.tag_ids.clear()
        missing = [name for name in names if name not in self.tag_ids]
        if missing:
            Tag.objects.bulk_create(
                [Tag(workspace=self.workspace, name=name) for name in missing],
                ignore_conflicts=True,
            )
            self.tag_ids.update(
                Tag.objects.filter(workspace=self.workspace, name__in=missing).values_list(
                    "name", "pk"
                )
            )
        return {name: self.tag_ids[name] for name in names}

    def consent_text_id(self, text: str) -> int:
        if len(self.consent_text_ids) > CACHE_LIMIT:
            self.consent_text_ids.clear()
        if text not in self.consent_text_ids:
            version, _created = ConsentText.objects.get_or_create(
                workspace=self.workspace,
                digest=ConsentText.digest_of(text),
                defaults={"text": text},
            )
            self.consent_text_ids[text] = version.pk
        return self.consent_text_ids[text]


def _suppressed_message() -> str:
    return _(
        "The address is suppressed (it unsubscribed, bounced, complained or was erased); an "
        "import cannot subscribe it."
    )


def _write_rows(run: _Run, rows: list[_Row], outcome: _Outcome) -> list[_Row]:
    """Upsert the rows (emails unique among them) in the open transaction.

    Returns the rows whose insert lost a race with another writer of the same address; the
    caller writes them again, as updates.
    """
    workspace = run.workspace
    mailing_list = run.mailing_list
    now = timezone.now()
    existing = {
        contact.email: contact
        for contact in Contact.objects.select_for_update()
        .filter(workspace=workspace, email__in=[row.email for row in rows])
        .order_by("pk")
    }
    wants_subscribed = [row for row in rows if row.status == ContactStatus.SUBSCRIBED]
    suppressed: set[str] = set()
    left_list: set[uuid.UUID] = set()
    subscriptions: dict[uuid.UUID, Subscription] = {}
    if wants_subscribed:
        suppressed = set(
            Suppression.objects.filter(
                workspace=workspace,
                email_hash__in=[Suppression.hash_email(row.email) for row in wants_subscribed],
            ).values_list("email_hash", flat=True)
        )
        if mailing_list is not None:
            known_ids = [
                existing[row.email].pk for row in wants_subscribed if row.email in existing
            ]
            for subscription in Subscription.objects.select_for_update().filter(
                mailing_list=mailing_list, contact_id__in=known_ids
            ):
                subscriptions[subscription.contact_id] = subscription
                if subscription.status == SubscriptionStatus.UNSUBSCRIBED:
                    left_list.add(subscription.contact_id)

    new_contacts: list[Contact] = []
    changed_contacts: list[Contact] = []
    changed_fields: set[str] = set()
    contact_by_row: list[tuple[_Row, Contact]] = []
    consent_rows: list[tuple[_Row, Contact]] = []
    unsubscribing: list[Contact] = []
    unsubscribed_signal_ids: list[str] = []
    for row in rows:
        contact = existing.get(row.email)
        if row.status == ContactStatus.SUBSCRIBED:
            if Suppression.hash_email(row.email) in suppressed or (
                contact is not None and contact.status in SUPPRESSING_STATUSES
            ):
                outcome.errors.append((row.number, _suppressed_message()))
                continue
            if contact is not None and contact.pk in left_list and mailing_list is not None:
                outcome.errors.append(
                    (
                        row.number,
                        _(
                            "The address left the list %(list)s; only a new double opt-in by "
                            "the person can bring it back."
                        )
                        % {"list": mailing_list.name},
                    )
                )
                continue
        if contact is None:
            contact = Contact(
                workspace=workspace,
                email=row.email,
                attributes=dict(row.attributes),
                source=row.profile.get("source", run.new_source),
                status=row.status or ContactStatus.NOT_SUBSCRIBED,
                **{key: value for key, value in row.profile.items() if key != "source"},
            )
            if row.status == ContactStatus.SUBSCRIBED:
                contact.confirmed_at = row.consent_at
                consent_rows.append((row, contact))
            elif row.status == ContactStatus.UNSUBSCRIBED:
                contact.unsubscribed_at = now
                unsubscribing.append(contact)
            new_contacts.append(contact)
        else:
            fields: list[str] = []
            for key, value in row.profile.items():
                if getattr(contact, key) != value:
                    setattr(contact, key, value)
                    fields.append(key)
            if row.attributes:
                attributes = {**contact.attributes, **row.attributes}
                if attributes != contact.attributes:
                    contact.attributes = attributes
                    fields.append("attributes")
            if row.status == ContactStatus.SUBSCRIBED:
                if contact.status != ContactStatus.SUBSCRIBED:
                    contact.status = ContactStatus.SUBSCRIBED
                    contact.confirmed_at = row.consent_at
                    fields += ["status", "confirmed_at"]
                    consent_rows.append((row, contact))
                elif mailing_list is not None and (
                    contact.pk not in subscriptions
                    or subscriptions[contact.pk].status != SubscriptionStatus.SUBSCRIBED
                ):
                    consent_rows.append((row, contact))
            elif (
                row.status == ContactStatus.UNSUBSCRIBED
                and contact.status not in SUPPRESSING_STATUSES
            ):
                contact.status = ContactStatus.UNSUBSCRIBED
                contact.unsubscribed_at = now
                contact.confirmation_nonce = ""
                fields += ["status", "unsubscribed_at", "confirmation_nonce"]
                unsubscribing.append(contact)
                unsubscribed_signal_ids.append(str(contact.pk))
            if fields:
                contact.updated_at = now
                changed_fields.update(fields)
                changed_contacts.append(contact)
        contact_by_row.append((row, contact))

    lost_races: list[_Row] = []
    if new_contacts:
        Contact.objects.bulk_create(new_contacts, ignore_conflicts=True)
        inserted = set(
            Contact.objects.filter(pk__in=[contact.pk for contact in new_contacts]).values_list(
                "pk", flat=True
            )
        )
        if len(inserted) < len(new_contacts):
            lost = {contact.pk for contact in new_contacts if contact.pk not in inserted}
            lost_races = [row for row, contact in contact_by_row if contact.pk in lost]
            contact_by_row = [(r, c) for r, c in contact_by_row if c.pk not in lost]
            consent_rows = [(r, c) for r, c in consent_rows if c.pk not in lost]
            unsubscribing = [c for c in unsubscribing if c.pk not in lost]
    if changed_contacts:
        Contact.objects.bulk_update(changed_contacts, [*sorted(changed_fields), "updated_at"])

    _write_tags(run, contact_by_row)
    _write_consents(run, consent_rows, subscriptions, now)
    _write_unsubscribes(run, unsubscribing, now)
    signals.unsubscribed_announce(workspace_id=workspace.pk, contact_ids=unsubscribed_signal_ids)
    new_ids = {contact.pk for contact in new_contacts}
    for _row, contact in contact_by_row:
        if contact.pk in new_ids:
            outcome.created += 1
        else:
            outcome.updated += 1
    return lost_races


def _write_tags(run: _Run, contact_by_row: list[tuple[_Row, Contact]]) -> None:
    wanted = {contact.pk: {*run.contact_import.tags, *row.tags} for row, contact in contact_by_row}
    names = set().union(*wanted.values()) if wanted else set()
    if not names:
        return
    tag_ids = run.tag_ids_for(names)
    through = Contact.tags.through
    through.objects.bulk_create(
        [
            through(contact_id=contact_id, tag_id=tag_ids[name])
            for contact_id, tag_names in wanted.items()
            for name in sorted(tag_names)
        ],
        ignore_conflicts=True,
    )


def _consent_moment(row: _Row) -> datetime:
    assert row.consent_at is not None, "only rows with a consent date are subscribed"
    return row.consent_at


def _write_consents(
    run: _Run,
    consent_rows: list[tuple[_Row, Contact]],
    subscriptions: dict[uuid.UUID, Subscription],
    now: datetime,
) -> None:
    if not consent_rows:
        return
    mailing_list = run.mailing_list
    privacy_policy_url = run.workspace.privacy_policy_url
    ConsentRecord.objects.bulk_create(
        [
            ConsentRecord(
                workspace=run.workspace,
                contact=contact,
                kind=ConsentKind.RECORDED,
                occurred_at=_consent_moment(row),
                consent_text_id=run.consent_text_id(row.consent_text) if row.consent_text else None,
                privacy_policy_url=privacy_policy_url,
                mailing_list=mailing_list,
                source=row.consent_source,
                recorded_by=run.recorded_by,
            )
            for row, contact in consent_rows
        ]
    )
    if mailing_list is None:
        return
    to_create: list[Subscription] = []
    to_confirm: list[Subscription] = []
    for row, contact in consent_rows:
        subscription = subscriptions.get(contact.pk)
        if subscription is None:
            to_create.append(
                Subscription(
                    contact=contact,
                    mailing_list=mailing_list,
                    status=SubscriptionStatus.SUBSCRIBED,
                    source=row.consent_source,
                    confirmed_at=row.consent_at,
                )
            )
        elif subscription.status != SubscriptionStatus.SUBSCRIBED:
            subscription.status = SubscriptionStatus.SUBSCRIBED
            subscription.confirmed_at = row.consent_at
            subscription.updated_at = now
            to_confirm.append(subscription)
    Subscription.objects.bulk_create(to_create, ignore_conflicts=True)
    if to_confirm:
        Subscription.objects.bulk_update(to_confirm, ["status", "confirmed_at", "updated_at"])


def _write_unsubscribes(run: _Run, contacts: list[Contact], now: datetime) -> None:
    if not contacts:
        return
    Subscription.objects.filter(
        contact_id__in=[contact.pk for contact in contacts],
        status__in=[SubscriptionStatus.SUBSCRIBED, SubscriptionStatus.PENDING],
    ).update(status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=now, updated_at=now)
    Suppression.objects.bulk_create(
        [
            Suppression(
                workspace=run.workspace,
                email_hash=Suppression.hash_email(contact.email),
                reason=SuppressionReason.UNSUBSCRIBED,
            )
            for contact in contacts
        ],
        ignore_conflicts=True,
    )
    ConsentRecord.objects.bulk_create(
        [
            ConsentRecord(
                workspace=run.workspace,
                contact=contact,
                kind=ConsentKind.UNSUBSCRIBE,
                occurred_at=now,
                source=run.new_source,
                recorded_by=run.recorded_by,
            )
            for contact in contacts
        ]
    )


def _write_batch(run: _Run, rows: list[_Row], outcome: _Outcome) -> None:
    """Write the rows; a row the database refuses is reported alone, not the whole batch."""
    try:
        with transaction.atomic():
            pending = rows
            for _attempt in range(3):
                if not pending:
                    return
                pending = _write_rows(run, pending, outcome)
            if pending:
                raise IntegrityError("the same addresses kept being created concurrently")
    except OperationalError:
        raise
    except (DataError, IntegrityError):
        logger.warning(
            "Import %s: a batch was refused, writing its rows one by one", run.contact_import.pk
        )
        run.forget_ids()
    else:
        return
    outcome.created = outcome.updated = 0
    outcome.errors = [error for error in outcome.errors if error[0] not in {r.number for r in rows}]
    for row in rows:
        try:
            with transaction.atomic():
                single = _Outcome()
                if _write_rows(run, [row], single):
                    raise IntegrityError("lost a race twice")
        except OperationalError:
            raise
        except DatabaseError:
            run.forget_ids()
            outcome.errors.append((row.number, _("The row could not be saved.")))
        else:
            outcome.created += single.created
            outcome.updated += single.updated
            outcome.errors.extend(single.errors)


def _flush(run: _Run, rows: list[_Row], parse_errors: list[tuple[int, str]]) -> None:
    """Write one batch with its bad rows and progress counters in one transaction."""
    outcome = _Outcome(errors=list(parse_errors))
    with transaction.atomic():
        if rows:
            _write_batch(run, rows, outcome)
        ContactImportError.objects.bulk_create(
            [
                ContactImportError(contact_import=run.contact_import, row=number, message=message)
                for number, message in sorted(outcome.errors)
            ]
        )
        ContactImport.objects.filter(pk=run.contact_import.pk).update(
            processed=F("processed") + len(rows) + len(parse_errors),
            created=F("created") + outcome.created,
            updated=F("updated") + outcome.updated,
            failed=F("failed") + len(outcome.errors),
        )


# --- running ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _run_lock(import_id: str) -> Iterator[bool]:
    """A lock that lives as long as this worker's database session.

    It tells a redelivered task apart from one still running: when a worker dies its session
    ends, the lock goes with it, and the next delivery resumes the import. On SQLite (the
    embedded single-worker setup) there is nothing to guard against, and no such lock.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    key = int.from_bytes(uuid.UUID(import_id).bytes[:4], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_ADVISORY_LOCK_NAMESPACE, key])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_ADVISORY_LOCK_NAMESPACE, key])


def contact_import_run(*, import_id: str) -> None:
    """Import the rows of a queued import, streaming the file in batches of BATCH_SIZE.

    Claims the import with a conditional UPDATE (queued -> running); a second delivery while
    the first runs does nothing. A delivery after a crash (the import is still "running" but no
    worker holds its lock) resumes after the last committed batch: each batch commits its
    contacts, bad rows and counters together, so `processed` says exactly where to go on, and
    upserting by address never duplicates a contact. Finished imports are left alone.

    No contact_created or contact_subscribed signal is sent for imported contacts: an import
    moves known relationships in, it is not a signup, and the receivers (funnel triggers)
    would otherwise schedule one task per row. contact_unsubscribed is sent when the file
    unsubscribes an existing contact, because that must stop its mail.
    """
    with _run_lock(import_id) as acquired:
        if not acquired:
            return
        claimed = ContactImport.objects.filter(
            pk=import_id, status__in=[ImportStatus.QUEUED, ImportStatus.RUNNING]
        ).update(status=ImportStatus.RUNNING, started_at=Coalesce(F("started_at"), timezone.now()))
        if not claimed:
            return
        contact_import = ContactImport.objects.select_related("workspace", "mailing_list").get(
            pk=import_id
        )
        with translation.override(contact_import.workspace.locale):
            try:
                _run(contact_import)
            except OperationalError:
                raise  # transient: the task retries and the import resumes
            except Exception:
                _finish(
                    import_id,
                    ImportStatus.FAILED,
                    _("An unexpected error stopped the import. The rows counted were imported."),
                )
                raise


def _finish(import_id: str, status: str, reason: str = "") -> None:
    ContactImport.objects.filter(pk=import_id, status=ImportStatus.RUNNING).update(
        status=status, failure_reason=reason, finished_at=timezone.now()
    )


def _run(contact_import: ContactImport) -> None:
    import_id = str(contact_import.pk)
    if not contact_import.file or not contact_import.file.storage.exists(contact_import.file.name):
        _finish(import_id, ImportStatus.FAILED, _("The uploaded file is missing."))
        return
    with _open_records(contact_import) as records:
        total = sum(1 for _record in records)
    ContactImport.objects.filter(pk=import_id).update(total=total)
    run = _Run(contact_import)
    skip = contact_import.processed
    rows: list[_Row] = []
    emails: set[str] = set()
    parse_errors: list[tuple[int, str]] = []
    now = timezone.now()
    with _open_records(contact_import) as records:
        for record in records:
            if skip:
                skip -= 1
                continue
            if record.cells is None:
                parsed: _Row | list[str] = [record.problem]
            else:
                parsed = _parse_row(record, run.plan, now)
            if isinstance(parsed, list):
                parse_errors.append((record.number, " ".join(parsed)))
            else:
                if parsed.email in emails:
                    # The same address twice: the later row updates what the earlier wrote.
                    _flush(run, rows, parse_errors)
                    rows, emails, parse_errors = [], set(), []
                    now = timezone.now()
                rows.append(parsed)
                emails.add(parsed.email)
            if len(rows) + len(parse_errors) >= BATCH_SIZE:
                _flush(run, rows, parse_errors)
                rows, emails, parse_errors = [], set(), []
                now = timezone.now()
    if rows or parse_errors:
        _flush(run, rows, parse_errors)
    _finish(import_id, ImportStatus.COMPLETED)


# --- reading results ----------------------------------------------------------------------------


def contact_import_get(*, workspace: Workspace, import_id: uuid.UUID | str) -> ContactImport:
    """One import of this workspace; ContactImport.DoesNotExist for any other id."""
    return ContactImport.objects.select_related("mailing_list").get(
        workspace=workspace, pk=import_id
    )


def contact_import_errors(
    contact_import: ContactImport, *, limit: int
) -> tuple[list[ContactImportError], bool]:
    """The first `limit` bad rows by row number, and whether there are more."""
    errors = list(contact_import.errors.order_by("row", "pk")[: limit + 1])
    return errors[:limit], len(errors) > limit


def contact_import_is_finished(contact_import: ContactImport) -> bool:
    return contact_import.status in (ImportStatus.COMPLETED, ImportStatus.FAILED)


__all__ = [
    "BATCH_SIZE",
    "contact_import_configure",
    "contact_import_create",
    "contact_import_errors",
    "contact_import_get",
    "contact_import_is_finished",
    "contact_import_run",
    "contact_import_samples",
    "contact_import_start",
    "suggest_mapping",
    "validate_mapping",
]


def contact_import_files_purge() -> int:
    """Delete the stored files of imports finished more than IMPORT_FILE_RETENTION_DAYS ago
    (and of uploads never configured within that time). Returns how many. Safe to run twice."""
    cutoff = timezone.now() - timedelta(days=settings.IMPORT_FILE_RETENTION_DAYS)
    stale = ContactImport.objects.exclude(file="").filter(
        Q(finished_at__lt=cutoff) | Q(status=ImportStatus.UPLOADED, created_at__lt=cutoff)
    )
    purged = 0
    for contact_import in stale.iterator():
        contact_import.file.delete(save=False)
        ContactImport.objects.filter(pk=contact_import.pk).update(file="")
        purged += 1
    return purged
