"""CSV import and export: real services, the real Celery task (eager), real PostgreSQL."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
import time_machine
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from contacts import importing
from contacts.exporting import csv_safe
from contacts.models import (
    ConsentKind,
    ConsentRecord,
    Contact,
    ContactImport,
    ContactImportError,
    ContactStatus,
    ImportStatus,
    MailingList,
    Segment,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    Tag,
)
from contacts.services import suppression_add
from core.models import Role
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
SUBSCRIBED_HEADER = "email,first_name,last_name,status,consent_at,consent_source,consent_text"
CONSENT = "Send me the newsletter."
MISSING_DATE = (
    "The consent date is missing: status subscribed needs the date and the source of the consent."
)
MISSING_SOURCE = (
    "The consent source is missing: status subscribed needs the date and the source of the consent."
)
SUPPRESSED = (
    "The address is suppressed (it unsubscribed, bounced, complained or was erased); an import "
    "cannot subscribe it."
)
WRONG_ENCODING = (
    "This row is not valid UTF-8 (wrong encoding). Save the file as UTF-8 and import the row again."
)
FULL_MAPPING = {
    "email": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "status": "status",
    "consent_at": "consent_at",
    "consent_source": "consent_source",
    "consent_text": "consent_text",
}


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _frozen_time():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def editor(workspace, owner, member_of):
    return member_of(workspace, Role.EDITOR)


@pytest.fixture
def viewer(workspace, owner, member_of):
    return member_of(workspace, Role.VIEWER)


def csv_file(content: bytes, name: str = "contacts.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="text/csv")


def run_import(
    capture,
    workspace,
    content: bytes,
    mapping: dict[str, str] | None = None,
    *,
    tags=(),
    mailing_list=None,
    name: str = "contacts.csv",
) -> ContactImport:
    """Upload, configure and run the import through the task, as the pages do."""
    contact_import = importing.contact_import_create(
        workspace=workspace, uploaded_file=csv_file(content, name), created_by="user:test"
    )
    if mapping is None:
        mapping = importing.suggest_mapping(contact_import.headers)
    with capture(execute=True):
        importing.contact_import_configure(
            contact_import=contact_import, mapping=mapping, tags=tags, mailing_list=mailing_list
        )
    contact_import.refresh_from_db()
    return contact_import


def errors_of(contact_import: ContactImport) -> list[tuple[int, str]]:
    return list(contact_import.errors.order_by("row").values_list("row", "message"))


def counters(contact_import: ContactImport) -> dict[str, object]:
    contact_import.refresh_from_db()
    return {
        "status": contact_import.status,
        "total": contact_import.total,
        "processed": contact_import.processed,
        "created": contact_import.created,
        "updated": contact_import.updated,
        "failed": contact_import.failed,
    }


def contact_state() -> list[tuple]:
    return list(
        Contact.objects.order_by("email").values_list(
            "workspace_id", "email", "first_name", "last_name", "status", "attributes"
        )
    )


def parse_csv(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))


# --- good and bad rows ----------------------------------------------------------------------------


def test_good_rows_are_imported_and_each_bad_row_is_named_with_its_row_number(
    workspace, django_capture_on_commit_callbacks
):
    # given: a UTF-8 file with BOM, good rows and one bad row of each kind
    suppression_add(workspace=workspace, email="gone@example.org", reason=SuppressionReason.ERASED)
    lines = [
        SUBSCRIBED_HEADER.encode(),
        f"ada@example.org,Ada,Lovelace,subscribed,2024-05-01,Shop checkout,{CONSENT}".encode(),
        b"not-an-email,Bad,Address,,,,",
        "jürgen@example.org,Jürgen,Müller,,,,".encode("latin-1"),
        b"nodate@example.org,No,Date,subscribed,,Shop checkout,",
        b"nosource@example.org,No,Source,subscribed,2024-05-01,,",
        b"gone@example.org,Gone,Person,subscribed,2024-05-01,Shop checkout,",
        b"grace@example.org,Grace,Hopper,,,,",
    ]
    content = codecs.BOM_UTF8 + b"\r\n".join(lines) + b"\r\n"

    # when
    contact_import = run_import(
        django_capture_on_commit_callbacks, workspace, content, FULL_MAPPING
    )

    # then
    assert contact_import.encoding == "utf-8-sig"
    assert errors_of(contact_import) == [
        (3, "Enter a valid email address: An email address must have an @-sign."),
        (4, WRONG_ENCODING),
        (5, MISSING_DATE),
        (6, MISSING_SOURCE),
        (7, SUPPRESSED),
    ]
    assert counters(contact_import) == {
        "status": ImportStatus.COMPLETED,
        "total": 7,
        "processed": 7,
        "created": 2,
        "updated": 0,
        "failed": 5,
    }
    assert contact_state() == [
        (workspace.pk, "ada@example.org", "Ada", "Lovelace", ContactStatus.SUBSCRIBED, {}),
        (workspace.pk, "grace@example.org", "Grace", "Hopper", ContactStatus.NOT_SUBSCRIBED, {}),
    ]
    ada = Contact.objects.get(email="ada@example.org")
    assert ada.source == "import:contacts.csv"
    assert ada.confirmed_at == datetime(2024, 5, 1, tzinfo=UTC)
    record = ConsentRecord.objects.get()
    assert (
        record.contact_id,
        record.kind,
        record.occurred_at,
        record.source,
        record.consent_text.text,
        record.mailing_list_id,
        record.recorded_by,
    ) == (
        ada.pk,
        ConsentKind.RECORDED,
        datetime(2024, 5, 1, tzinfo=UTC),
        "Shop checkout",
        CONSENT,
        None,
        f"user:test import:{contact_import.pk}",
    )
    assert contact_import.started_at == NOW
    assert contact_import.finished_at == NOW


def test_a_latin1_file_is_read_as_latin1(workspace, django_capture_on_commit_callbacks):
    # given
    content = "email,first_name,last_name\njürgen@example.org,Jürgen,Weiß\n".encode("latin-1")

    # when
    contact_import = run_import(django_capture_on_commit_callbacks, workspace, content)

    # then
    assert (contact_import.encoding, contact_import.delimiter) == ("latin-1", ",")
    assert errors_of(contact_import) == []
    assert contact_state() == [
        (workspace.pk, "jürgen@example.org", "Jürgen", "Weiß", ContactStatus.NOT_SUBSCRIBED, {})
    ]


def test_a_german_excel_file_with_semicolons_is_mapped_by_its_german_headers(
    workspace, django_capture_on_commit_callbacks
):
    # given: what German Excel writes as "CSV (Trennzeichen-getrennt)"
    content = (
        "E-Mail;Vorname;Nachname;Stadt\r\n"
        "anna@example.de;Anna;Größer;Köln\r\n"
        "bernd@example.de;Bernd;Schäfer;München\r\n"
    ).encode("cp1252")
    contact_import = importing.contact_import_create(
        workspace=workspace, uploaded_file=csv_file(content), created_by="user:test"
    )

    # when
    suggested = importing.suggest_mapping(contact_import.headers)
    mapping = {**suggested, "Stadt": "attributes.city"}
    with django_capture_on_commit_callbacks(execute=True):
        importing.contact_import_configure(contact_import=contact_import, mapping=mapping)

    # then
    assert (contact_import.encoding, contact_import.delimiter) == ("latin-1", ";")
    assert contact_import.headers == ["E-Mail", "Vorname", "Nachname", "Stadt"]
    assert suggested == {
        "E-Mail": "email",
        "Vorname": "first_name",
        "Nachname": "last_name",
        "Stadt": "",
    }
    assert errors_of(contact_import) == []
    assert contact_state() == [
        (
            workspace.pk,
            "anna@example.de",
            "Anna",
            "Größer",
            ContactStatus.NOT_SUBSCRIBED,
            {"city": "Köln"},
        ),
        (
            workspace.pk,
            "bernd@example.de",
            "Bernd",
            "Schäfer",
            ContactStatus.NOT_SUBSCRIBED,
            {"city": "München"},
        ),
    ]


def test_a_utf8_file_without_bom_reports_its_one_latin1_row(
    workspace, django_capture_on_commit_callbacks
):
    # given: mostly UTF-8 (umlauts in three rows), one row pasted in from a Latin-1 file
    content = (
        b"email,first_name\n"
        + "a@example.org,Jörg\nb@example.org,Björn\n".encode()
        + "c@example.org,Jürgen\n".encode("latin-1")
        + "d@example.org,Sören\n".encode()
    )

    # when
    contact_import = run_import(django_capture_on_commit_callbacks, workspace, content)

    # then
    assert contact_import.encoding == "utf-8"
    assert errors_of(contact_import) == [(4, WRONG_ENCODING)]
    assert [row[1:3] for row in contact_state()] == [
        ("a@example.org", "Jörg"),
        ("b@example.org", "Björn"),
        ("d@example.org", "Sören"),
    ]


def test_more_bad_rows_are_named_with_their_reasons(workspace, django_capture_on_commit_callbacks):
    # given
    content = (
        b"email,status,consent_at,consent_source,score,locale\n"
        b",not_subscribed,,,,\n"
        b"a@example.org,maybe,,,,\n"
        b"b@example.org,subscribed,yesterday,Fair,,\n"
        b"c@example.org,subscribed,2026-01-01,Fair,,\n"
        b"d@example.org,,,,many,\n"
        b"e@example.org,,2024-01-01,,,\n"
        b"f@example.org,,,,,123\n"
        b"h@example.org,,,,,de-DE-xx-12\n"
        b"g@example.org,,,,,\n"
    )
    mapping = {
        "email": "email",
        "status": "status",
        "consent_at": "consent_at",
        "consent_source": "consent_source",
        "score": "score",
        "locale": "locale",
    }

    # when
    contact_import = run_import(django_capture_on_commit_callbacks, workspace, content, mapping)

    # then
    errors = errors_of(contact_import)
    assert errors == [
        (2, "The email address is missing."),
        (3, "Unknown status maybe; use subscribed, not_subscribed or unsubscribed."),
        (
            4,
            "The consent date yesterday is not a date; use 2024-03-31, 2024-03-31 14:30 or "
            "31.03.2024.",
        ),
        (5, "The consent date lies in the future."),
        (6, "The score many is not a whole number."),
        (7, MISSING_SOURCE),
        (8, "Use a language code such as en, de or de-AT."),
        (9, "locale has more than 10 characters."),
    ]
    assert [row[1] for row in contact_state()] == ["g@example.org"]


def test_a_row_with_consent_date_and_source_but_no_status_column_is_subscribed(
    workspace, django_capture_on_commit_callbacks
):
    # given: German date formats, naive times in the workspace's time zone
    workspace.timezone = "Europe/Berlin"
    workspace.save(update_fields=["timezone"])
    content = (
        "E-Mail;Einwilligungsdatum;Einwilligungsquelle\n"
        "a@example.de;01.02.2024 10:30;Messe Köln\n"
        "b@example.de;;\n"
    ).encode()

    # when
    contact_import = run_import(django_capture_on_commit_callbacks, workspace, content)

    # then
    assert errors_of(contact_import) == []
    assert dict(Contact.objects.values_list("email", "status")) == {
        "a@example.de": ContactStatus.SUBSCRIBED,
        "b@example.de": ContactStatus.NOT_SUBSCRIBED,
    }
    record = ConsentRecord.objects.get()
    assert (record.occurred_at, record.source, record.consent_text) == (
        datetime(2024, 2, 1, 9, 30, tzinfo=UTC),
        "Messe Köln",
        None,
    )


# --- upsert, tags, lists --------------------------------------------------------------------------


def test_an_existing_contact_is_updated_by_its_address_in_any_case_not_duplicated(
    workspace, other_workspace, django_capture_on_commit_callbacks
):
    # given
    existing = ContactFactory(
        workspace=workspace,
        email="ada@example.org",
        first_name="A.",
        last_name="Lovelace",
        source="api",
        attributes={"plan": "pro"},
    )
    ContactFactory(workspace=other_workspace, email="ada@example.org", first_name="Other")
    content = (
        b"Email,First Name,Last Name,City\nADA@Example.ORG,Ada,,London\nnew@example.org,New,,\n"
    )
    mapping = {
        "Email": "email",
        "First Name": "first_name",
        "Last Name": "last_name",
        "City": "attributes.city",
    }

    # when
    contact_import = run_import(django_capture_on_commit_callbacks, workspace, content, mapping)

    # then
    existing.refresh_from_db()
    assert (
        existing.first_name,
        existing.last_name,
        existing.source,
        existing.attributes,
        existing.status,
        existing.updated_at,
    ) == ("Ada", "Lovelace", "api", {"plan": "pro", "city": "London"}, "not_subscribed", NOW)
    assert Contact.objects.filter(workspace=workspace).count() == 2
    assert Contact.objects.get(workspace=other_workspace).first_name == "Other"
    assert counters(contact_import) == {
        "status": ImportStatus.COMPLETED,
        "total": 2,
        "processed": 2,
        "created": 1,
        "updated": 1,
        "failed": 0,
    }


def test_the_same_address_twice_in_a_file_makes_one_contact_and_the_later_row_wins(
    workspace, django_capture_on_commit_callbacks
):
    # given
    content = b"email,first_name\nsam@example.org,Sam\nSAM@example.org,Samuel\n"

    # when
    contact_import = run_import(django_capture_on_commit_callbacks, workspace, content)

    # then
    assert [row[1:3] for row in contact_state()] == [("sam@example.org", "Samuel")]
    assert (contact_import.created, contact_import.updated) == (1, 1)


def test_tags_of_the_import_and_of_a_column_are_added_and_none_removed(
    workspace, django_capture_on_commit_callbacks
):
    # given
    existing = ContactFactory(workspace=workspace, email="ada@example.org")
    existing.tags.add(Tag.objects.create(workspace=workspace, name="customer"))
    content = b'email,tags\nada@example.org,"vip, fair-2024"\nbob@example.org,\n'

    # when
    run_import(django_capture_on_commit_callbacks, workspace, content, tags=["imported"])

    # then
    tags = {
        contact.email: sorted(tag.name for tag in contact.tags.all())
        for contact in Contact.objects.prefetch_related("tags")
    }
    assert tags == {
        "ada@example.org": ["customer", "fair-2024", "imported", "vip"],
        "bob@example.org": ["imported"],
    }
    assert Tag.objects.filter(workspace=workspace).count() == 4


def test_rows_with_consent_are_subscribed_to_the_chosen_list_and_the_others_are_not(
    workspace, django_capture_on_commit_callbacks
):
    # given
    newsletter = MailingList.objects.create(
        workspace=workspace, name="Newsletter", double_opt_in=True
    )
    already = ContactFactory(
        workspace=workspace, email="already@example.org", status=ContactStatus.SUBSCRIBED
    )
    content = (
        f"{SUBSCRIBED_HEADER}\n"
        f"ada@example.org,Ada,,subscribed,2024-05-01 09:00,Shop checkout,{CONSENT}\n"
        "bob@example.org,Bob,,,,,\n"
        f"already@example.org,,,subscribed,2024-04-01,Fair,{CONSENT}\n"
    ).encode()

    # when
    contact_import = run_import(
        django_capture_on_commit_callbacks,
        workspace,
        content,
        FULL_MAPPING,
        mailing_list=newsletter,
    )

    # then
    assert errors_of(contact_import) == []
    subscriptions = {
        subscription.contact.email: (
            subscription.status,
            subscription.confirmed_at,
            subscription.source,
        )
        for subscription in Subscription.objects.select_related("contact")
    }
    assert subscriptions == {
        "ada@example.org": (
            SubscriptionStatus.SUBSCRIBED,
            datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
            "Shop checkout",
        ),
        "already@example.org": (
            SubscriptionStatus.SUBSCRIBED,
            datetime(2024, 4, 1, tzinfo=UTC),
            "Fair",
        ),
    }
    records = sorted(ConsentRecord.objects.values_list("contact__email", "mailing_list_id", "kind"))
    assert records == [
        ("ada@example.org", newsletter.pk, ConsentKind.RECORDED),
        ("already@example.org", newsletter.pk, ConsentKind.RECORDED),
    ]
    already.refresh_from_db()
    assert already.status == ContactStatus.SUBSCRIBED


def test_an_import_never_subscribes_a_suppressed_address_or_one_that_left(
    workspace, django_capture_on_commit_callbacks
):
    # given
    newsletter = MailingList.objects.create(workspace=workspace, name="Newsletter")
    ContactFactory(
        workspace=workspace, email="unsub@example.org", status=ContactStatus.UNSUBSCRIBED
    )
    ContactFactory(workspace=workspace, email="bounced@example.org", status=ContactStatus.BOUNCED)
    left = ContactFactory(workspace=workspace, email="left@example.org")
    Subscription.objects.create(
        contact=left, mailing_list=newsletter, status=SubscriptionStatus.UNSUBSCRIBED
    )
    before = contact_state()
    content = (
        f"{SUBSCRIBED_HEADER}\n"
        "unsub@example.org,Un,,subscribed,2024-05-01,Fair,\n"
        "bounced@example.org,Bo,,subscribed,2024-05-01,Fair,\n"
        "left@example.org,Le,,subscribed,2024-05-01,Fair,\n"
    ).encode()

    # when
    contact_import = run_import(
        django_capture_on_commit_callbacks,
        workspace,
        content,
        FULL_MAPPING,
        mailing_list=newsletter,
    )

    # then
    assert errors_of(contact_import) == [
        (2, SUPPRESSED),
        (3, SUPPRESSED),
        (
            4,
            "The address left the list Newsletter; only a new double opt-in by the person can "
            "bring it back.",
        ),
    ]
    assert contact_state() == before
    assert ConsentRecord.objects.count() == 0
    assert list(Subscription.objects.values_list("status", flat=True)) == [
        SubscriptionStatus.UNSUBSCRIBED
    ]


def test_unsubscribed_in_the_file_unsubscribes_and_suppresses(
    workspace, django_capture_on_commit_callbacks
):
    # given
    newsletter = MailingList.objects.create(workspace=workspace, name="Newsletter")
    subscriber = ContactFactory(
        workspace=workspace, email="ada@example.org", status=ContactStatus.SUBSCRIBED
    )
    Subscription.objects.create(
        contact=subscriber, mailing_list=newsletter, status=SubscriptionStatus.SUBSCRIBED
    )
    content = b"email,status\nada@example.org,unsubscribed\nnew@example.org,Unsubscribed\n"

    # when
    run_import(django_capture_on_commit_callbacks, workspace, content)

    # then
    assert dict(Contact.objects.values_list("email", "status")) == {
        "ada@example.org": ContactStatus.UNSUBSCRIBED,
        "new@example.org": ContactStatus.UNSUBSCRIBED,
    }
    assert set(Suppression.objects.values_list("email_hash", "reason")) == {
        (Suppression.hash_email("ada@example.org"), SuppressionReason.UNSUBSCRIBED),
        (Suppression.hash_email("new@example.org"), SuppressionReason.UNSUBSCRIBED),
    }
    assert list(Subscription.objects.values_list("status", flat=True)) == [
        SubscriptionStatus.UNSUBSCRIBED
    ]
    assert sorted(ConsentRecord.objects.values_list("contact__email", "kind")) == [
        ("ada@example.org", ConsentKind.UNSUBSCRIBE),
        ("new@example.org", ConsentKind.UNSUBSCRIBE),
    ]


def test_not_subscribed_in_the_file_does_not_downgrade_a_subscriber(
    workspace, django_capture_on_commit_callbacks
):
    # given
    ContactFactory(workspace=workspace, email="ada@example.org", status=ContactStatus.SUBSCRIBED)
    content = b"email,status\nada@example.org,not_subscribed\n"

    # when
    run_import(django_capture_on_commit_callbacks, workspace, content)

    # then
    assert Contact.objects.get().status == ContactStatus.SUBSCRIBED


# --- mapping and configuring ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"first_name": "first_name"}, "Map exactly one column to the email address."),
        (
            {"email": "email", "first_name": "email"},
            "Two columns are mapped to email.",
        ),
        (
            {"email": "email", "first_name": "is_staff"},
            "is_staff is not a field a column can be imported into.",
        ),
        (
            {"email": "email", "first_name": "attributes.a__b c"},
            "Attribute names use letters, digits and _ and start with a letter: a__b c",
        ),
        ({"email": "email", "nope": "first_name"}, "The file has no column nope."),
    ],
)
def test_a_mapping_outside_the_allow_list_is_refused_and_nothing_is_queued(
    workspace, django_capture_on_commit_callbacks, mapping, message
):
    # given
    contact_import = importing.contact_import_create(
        workspace=workspace,
        uploaded_file=csv_file(b"email,first_name\na@example.org,A\n"),
        created_by="user:test",
    )

    # when
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(importing.ApplicationError) as raised,
    ):
        importing.contact_import_configure(contact_import=contact_import, mapping=mapping)

    # then
    assert raised.value.message == message
    assert callbacks == []
    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.UPLOADED
    assert Contact.objects.count() == 0


def test_configuring_twice_is_refused_and_runs_once(workspace, django_capture_on_commit_callbacks):
    # given
    contact_import = run_import(
        django_capture_on_commit_callbacks, workspace, b"email\na@example.org\n"
    )

    # when
    with pytest.raises(importing.ConflictError):
        importing.contact_import_configure(
            contact_import=contact_import, mapping={"email": "email"}
        )

    # then
    assert counters(contact_import)["created"] == 1


# --- running twice, resuming ----------------------------------------------------------------------


def queued_import(workspace, content: bytes, capture) -> ContactImport:
    contact_import = importing.contact_import_create(
        workspace=workspace, uploaded_file=csv_file(content), created_by="user:test"
    )
    with capture(execute=False):
        importing.contact_import_configure(
            contact_import=contact_import,
            mapping=importing.suggest_mapping(contact_import.headers),
        )
    return contact_import


def test_running_a_finished_import_again_changes_nothing(
    workspace, django_capture_on_commit_callbacks
):
    # given
    contact_import = run_import(
        django_capture_on_commit_callbacks, workspace, b"email\na@example.org\nbad\n"
    )
    before = (counters(contact_import), contact_state(), errors_of(contact_import))

    # when
    importing.contact_import_run(import_id=str(contact_import.pk))

    # then
    assert (counters(contact_import), contact_state(), errors_of(contact_import)) == before


def test_a_run_after_a_crash_resumes_after_the_last_committed_batch(
    workspace, django_capture_on_commit_callbacks
):
    # given: the first row was committed, then the worker died (status still running)
    content = b"email,first_name\na@example.org,Ann\nb@example.org,Ben\nc@example.org,Cy\n"
    contact_import = queued_import(workspace, content, django_capture_on_commit_callbacks)
    ContactFactory(workspace=workspace, email="a@example.org", first_name="Ann (edited since)")
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING, processed=1, created=1
    )

    # when
    importing.contact_import_run(import_id=str(contact_import.pk))

    # then
    assert counters(contact_import) == {
        "status": ImportStatus.COMPLETED,
        "total": 3,
        "processed": 3,
        "created": 3,
        "updated": 0,
        "failed": 0,
    }
    assert [row[1:3] for row in contact_state()] == [
        ("a@example.org", "Ann (edited since)"),
        ("b@example.org", "Ben"),
        ("c@example.org", "Cy"),
    ]


def test_a_second_delivery_while_a_worker_holds_the_import_does_nothing(
    workspace, django_capture_on_commit_callbacks
):
    # given: another database session (another worker) holds the import's lock
    contact_import = queued_import(
        workspace, b"email\na@example.org\n", django_capture_on_commit_callbacks
    )
    settings_dict = connection.settings_dict
    other_worker = psycopg2.connect(
        dbname=settings_dict["NAME"],
        user=settings_dict["USER"] or None,
        password=settings_dict["PASSWORD"] or None,
        host=settings_dict["HOST"] or None,
        port=settings_dict["PORT"] or None,
    )
    key = int.from_bytes(contact_import.pk.bytes[:4], "big", signed=True)
    try:
        with other_worker.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [0x46570001, key])

        # when
        importing.contact_import_run(import_id=str(contact_import.pk))
    finally:
        other_worker.close()

    # then
    assert counters(contact_import)["status"] == ImportStatus.QUEUED
    assert Contact.objects.count() == 0


# --- API ------------------------------------------------------------------------------------------


def test_the_api_accepts_an_upload_with_202_and_reports_its_progress(
    workspace, api, django_capture_on_commit_callbacks
):
    # given
    content = b"E-Mail;Vorname\nada@example.org;Ada\nnope;Bad\n"

    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/contacts/import/",
            {
                "file": csv_file(content),
                "mapping": json.dumps({"E-Mail": "email", "Vorname": "first_name"}),
                "tags": json.dumps(["api"]),
            },
            format="multipart",
        )

    # then
    assert response.status_code == 202
    contact_import = ContactImport.objects.get()
    assert response.json() == {"id": str(contact_import.pk), "status": "queued"}
    state = api.get(f"/api/v1/imports/{contact_import.pk}/")
    assert state.status_code == 200
    assert state.json() == {
        "id": str(contact_import.pk),
        "status": "completed",
        "total": 2,
        "processed": 2,
        "created": 1,
        "updated": 0,
        "failed": 1,
        "errors": [
            {
                "row": 3,
                "message": "Enter a valid email address: An email address must have an @-sign.",
            }
        ],
        "errors_truncated": False,
    }
    assert list(Contact.objects.values_list("email", "first_name", "tags__name")) == [
        ("ada@example.org", "Ada", "api")
    ]


def test_the_api_refuses_a_bad_mapping_and_keeps_nothing(
    workspace, api, django_capture_on_commit_callbacks
):
    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = api.post(
            "/api/v1/contacts/import/",
            {"file": csv_file(b"name\nAda\n")},
            format="multipart",
        )

    # then
    assert response.status_code == 400
    assert response.json() == {"mapping": ["Map exactly one column to the email address."]}
    assert callbacks == []
    assert ContactImport.objects.count() == 0


def test_another_workspaces_import_is_not_found(
    workspace, other_workspace, api, django_capture_on_commit_callbacks
):
    # given
    theirs = run_import(
        django_capture_on_commit_callbacks, other_workspace, b"email\na@example.org\n"
    )

    # when
    response = api.get(f"/api/v1/imports/{theirs.pk}/")

    # then
    assert response.status_code == 404


def test_a_read_only_key_cannot_import(workspace, api_client_for):
    # given
    api = api_client_for(workspace, access="read")

    # when
    response = api.post(
        "/api/v1/contacts/import/",
        {"file": csv_file(b"email\na@example.org\n")},
        format="multipart",
    )

    # then
    assert response.status_code == 403
    assert ContactImport.objects.count() == 0


def test_the_api_lists_at_most_1000_errors(workspace, api, django_capture_on_commit_callbacks):
    # given
    content = b"email\n" + b"bad\n" * 1001

    # when
    contact_import = run_import(django_capture_on_commit_callbacks, workspace, content)
    body = api.get(f"/api/v1/imports/{contact_import.pk}/").json()

    # then
    assert (body["failed"], len(body["errors"]), body["errors_truncated"]) == (1001, 1000, True)
    assert body["errors"][-1]["row"] == 1001


# --- pages ----------------------------------------------------------------------------------------


def test_an_editor_uploads_maps_and_follows_the_progress(
    workspace, editor, logged_in, django_capture_on_commit_callbacks
):
    # given
    client = logged_in(editor)
    newsletter = MailingList.objects.create(workspace=workspace, name="Newsletter")
    content = "E-Mail;Vorname;Stadt\nada@example.org;Ada;Köln\nbob@example.org;Bob;Ulm\n".encode()

    # when: upload
    response = client.post(reverse("import-upload"), {"file": csv_file(content)})

    # then
    contact_import = ContactImport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("import-mapping", args=[contact_import.pk])
    mapping_page = client.get(response["Location"])
    assert mapping_page.status_code == 200
    assert [column["samples"] for column in mapping_page.context["columns"]] == [
        ["ada@example.org", "bob@example.org"],
        ["Ada", "Bob"],
        ["Köln", "Ulm"],
    ]
    assert [column["selected"] for column in mapping_page.context["columns"]] == [
        "email",
        "first_name",
        "",
    ]
    assert '<option value="attributes.stadt">' in mapping_page.content.decode()

    # when: the mapping is sent, but the run has not started yet
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("import-mapping", args=[contact_import.pk]),
            {
                "column-0": "email",
                "column-1": "first_name",
                "column-2": "attributes.stadt",
                "tags": "fair, 2024",
                "list": str(newsletter.pk),
            },
        )

    # then: the progress fragment polls
    assert response.status_code == 302
    assert response["Location"] == reverse("import-detail", args=[contact_import.pk])
    fragment = client.get(
        reverse("import-progress", args=[contact_import.pk]), HTTP_HX_REQUEST="true"
    )
    assert 'hx-trigger="every 1s"' in fragment.content.decode()
    assert "HX-Refresh" not in fragment

    # when: the run happens
    for callback in callbacks:
        callback()

    # then: the fragment stops polling and reloads the page once
    fragment = client.get(
        reverse("import-progress", args=[contact_import.pk]), HTTP_HX_REQUEST="true"
    )
    assert "hx-trigger" not in fragment.content.decode()
    assert fragment["HX-Refresh"] == "true"
    assert '<progress max="100" value="100"' in fragment.content.decode()
    detail = client.get(reverse("import-detail", args=[contact_import.pk]))
    assert detail.status_code == 200
    assert "hx-trigger" not in detail.content.decode()
    assert sorted(Contact.objects.values_list("email", "attributes")) == [
        ("ada@example.org", {"stadt": "Köln"}),
        ("bob@example.org", {"stadt": "Ulm"}),
    ]
    assert sorted(Tag.objects.values_list("name", flat=True)) == ["2024", "fair"]


def test_the_error_report_downloads_as_csv(
    workspace, editor, logged_in, django_capture_on_commit_callbacks
):
    # given
    contact_import = run_import(
        django_capture_on_commit_callbacks,
        workspace,
        b"email,status\nok@example.org,\n=1+1,\nb@example.org,=cmd\n",
    )

    # when
    response = logged_in(editor).get(reverse("import-errors-csv", args=[contact_import.pk]))

    # then
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="import-errors-{contact_import.pk}.csv"'
    )
    assert parse_csv(b"".join(response.streaming_content)) == [
        ["row", "message"],
        [
            "3",
            "Enter a valid email address: An email address must have an @-sign.",
        ],
        ["4", "Unknown status =cmd; use subscribed, not_subscribed or unsubscribed."],
    ]


def test_another_workspaces_import_pages_are_not_found(
    workspace, other_workspace, editor, logged_in, django_capture_on_commit_callbacks
):
    # given
    theirs = run_import(
        django_capture_on_commit_callbacks, other_workspace, b"email\na@example.org\n"
    )
    client = logged_in(editor)

    # when / then
    for name in ("import-detail", "import-progress", "import-errors-csv", "import-mapping"):
        assert client.get(reverse(name, args=[theirs.pk])).status_code == 404


# --- export ---------------------------------------------------------------------------------------


def test_csv_safe_prefixes_every_cell_a_spreadsheet_would_run_as_a_formula():
    assert [
        csv_safe(value)
        for value in ("=1+1", "+49 30 1234", "-2", "@SUM(A1)", "\tx", "\rx", "\nx", "Ada", "", None)
    ] == ["'=1+1", "'+49 30 1234", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "'\nx", "Ada", "", ""]


def test_a_list_export_escapes_formulas_and_holds_only_the_lists_subscribers(
    workspace, other_workspace, editor, logged_in
):
    # given
    newsletter = MailingList.objects.create(workspace=workspace, name="News letter")
    names = [
        '=HYPERLINK("http://evil.example","x")',
        "+1",
        "-2",
        "@SUM(A1)",
        "\tTab",
        "\rCr",
        "Ada",
    ]
    for number, first_name in enumerate(names):
        contact = ContactFactory(
            workspace=workspace,
            email=f"c{number}@example.org",
            first_name=first_name,
            last_name="Plain",
            status=ContactStatus.SUBSCRIBED,
            source="=cmd|' /C calc'!A0",
            attributes={"city": "Köln"} if number == 6 else {},
        )
        Subscription.objects.create(
            contact=contact, mailing_list=newsletter, status=SubscriptionStatus.SUBSCRIBED
        )
    pending = ContactFactory(workspace=workspace, email="pending@example.org")
    Subscription.objects.create(
        contact=pending, mailing_list=newsletter, status=SubscriptionStatus.PENDING
    )
    ContactFactory(workspace=workspace, email="elsewhere@example.org")
    Tag.objects.create(workspace=workspace, name="@vip").contacts.add(
        Contact.objects.get(email="c6@example.org")
    )

    # when
    response = logged_in(editor).get(reverse("export-list-csv", args=[newsletter.pk]))

    # then
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="list-news-letter.csv"'
    rows = parse_csv(b"".join(response.streaming_content))
    assert rows[0] == [
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
    assert [row[:3] for row in rows[1:]] == [
        ["c0@example.org", '\'=HYPERLINK("http://evil.example","x")', "Plain"],
        ["c1@example.org", "'+1", "Plain"],
        ["c2@example.org", "'-2", "Plain"],
        ["c3@example.org", "'@SUM(A1)", "Plain"],
        ["c4@example.org", "'\tTab", "Plain"],
        ["c5@example.org", "'\rCr", "Plain"],
        ["c6@example.org", "Ada", "Plain"],
    ]
    assert rows[7][3:] == [
        "subscribed",
        "",
        "",
        "'=cmd|' /C calc'!A0",
        "0",
        "'@vip",
        '{"city": "Köln"}',
        NOW.isoformat(),
        "",
        "",
    ]


def test_a_segment_export_holds_the_segments_members(workspace, editor, logged_in):
    # given
    vip = Tag.objects.create(workspace=workspace, name="vip")
    member = ContactFactory(workspace=workspace, email="member@example.org", first_name="+Mem")
    member.tags.add(vip)
    ContactFactory(workspace=workspace, email="other@example.org")
    segment = Segment.objects.create(
        workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]}
    )

    # when
    response = logged_in(editor).get(reverse("export-segment-csv", args=[segment.pk]))

    # then
    assert response.status_code == 200
    rows = parse_csv(b"".join(response.streaming_content))
    assert [row[:2] for row in rows[1:]] == [["member@example.org", "'+Mem"]]


def test_another_workspaces_list_or_segment_is_not_exported(
    workspace, other_workspace, editor, logged_in
):
    # given
    theirs = MailingList.objects.create(workspace=other_workspace, name="Theirs")
    their_segment = Segment.objects.create(workspace=other_workspace, name="Theirs", filter={})
    client = logged_in(editor)

    # when / then
    assert client.get(reverse("export-list-csv", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("export-segment-csv", args=[their_segment.pk])).status_code == 404


# --- roles ----------------------------------------------------------------------------------------


def test_a_viewer_can_neither_import_nor_export(workspace, viewer, logged_in):
    # given
    client = logged_in(viewer)
    newsletter = MailingList.objects.create(workspace=workspace, name="Newsletter")
    segment = Segment.objects.create(
        workspace=workspace, name="All", filter={"all": [{"status": "subscribed"}]}
    )
    before = contact_state()

    # when
    responses = [
        client.get(reverse("import-upload")),
        client.post(reverse("import-upload"), {"file": csv_file(b"email\na@example.org\n")}),
        client.get(reverse("export-list-csv", args=[newsletter.pk])),
        client.get(reverse("export-segment-csv", args=[segment.pk])),
    ]

    # then
    assert [response.status_code for response in responses] == [403, 403, 403, 403]
    assert ContactImport.objects.count() == 0
    assert ContactImportError.objects.count() == 0
    assert contact_state() == before


def test_the_mapping_page_refuses_another_workspaces_list(
    workspace, other_workspace, editor, logged_in, django_capture_on_commit_callbacks
):
    # given
    theirs = MailingList.objects.create(workspace=other_workspace, name="Theirs")
    contact_import = importing.contact_import_create(
        workspace=workspace, uploaded_file=csv_file(b"email\na@example.org\n"), created_by="x"
    )
    client = logged_in(editor)

    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        responses = [
            client.post(
                reverse("import-mapping", args=[contact_import.pk]),
                {"column-0": "email", "list": list_id},
            )
            for list_id in (str(theirs.pk), "not-a-uuid")
        ]

    # then
    assert [response.status_code for response in responses] == [200, 200]
    assert [response.context["error"] for response in responses] == [
        "Choose one of this workspace's lists.",
        "Choose one of this workspace's lists.",
    ]
    assert callbacks == []
    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.UPLOADED
    assert Contact.objects.count() == 0


def test_uploaded_files_are_deleted_after_the_retention_period(
    workspace, settings, django_capture_on_commit_callbacks
):
    # given a finished import and an upload that was never configured
    settings.IMPORT_FILE_RETENTION_DAYS = 7
    finished = run_import(
        django_capture_on_commit_callbacks, workspace, b"email\nada@example.org\n"
    )
    abandoned = importing.contact_import_create(
        workspace=workspace, uploaded_file=csv_file(b"email\nbob@example.org\n"), created_by="t"
    )
    finished_path, abandoned_path = finished.file.path, abandoned.file.path
    assert finished.status == ImportStatus.COMPLETED

    # when the purge runs within the retention period, nothing goes
    with time_machine.travel(NOW + timedelta(days=6), tick=False):
        assert importing.contact_import_files_purge() == 0
    assert os.path.exists(finished_path) and os.path.exists(abandoned_path)

    # when it runs after the period
    with time_machine.travel(NOW + timedelta(days=8), tick=False):
        purged = importing.contact_import_files_purge()

    # then both files are gone and the reports stay
    assert purged == 2
    assert not os.path.exists(finished_path) and not os.path.exists(abandoned_path)
    finished.refresh_from_db()
    assert finished.file.name == ""
    assert finished.created == 1
