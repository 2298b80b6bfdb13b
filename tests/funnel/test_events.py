"""Touchpoint events through POST /api/v1/events/ and /events/batch/: contacts by id or email,
money, late events, idempotency by external_id (also under a race), per-index batch errors."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connection, connections
from rest_framework.test import APIClient

from contacts.models import Contact, ContactStatus
from contacts.segments import segment_queryset
from core.models import Workspace
from funnel import services
from funnel.models import Event
from funnel.services import EventInput
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

EVENTS_URL = "/api/v1/events/"
BATCH_URL = "/api/v1/events/batch/"
NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def ada(workspace: Workspace) -> Contact:
    return ContactFactory(workspace=workspace, email="ada@example.com")


def event_rows() -> list[tuple[Any, ...]]:
    return list(
        Event.objects.order_by("received_at", "name").values_list(
            "workspace_id",
            "contact_id",
            "name",
            "properties",
            "value",
            "currency",
            "occurred_at",
            "source",
            "channel",
            "external_id",
        )
    )


# --- one event ---------------------------------------------------------------------------------


def test_an_event_by_contact_id_is_stored_with_everything_it_says(
    api: APIClient, workspace: Workspace, ada: Contact
) -> None:
    # given: a known contact
    # when
    with time_machine.travel(NOW, tick=False):
        response = api.post(
            EVENTS_URL,
            {
                "contact": str(ada.pk),
                "name": "demo_booked",
                "properties": {"plan": "pro", "seats": 12},
                "source": "crm",
                "channel": "sales",
                "external_id": "crm-1",
            },
            format="json",
        )
    # then
    assert response.status_code == 201
    event = Event.objects.get()
    assert response.json() == {
        "id": str(event.pk),
        "contact": str(ada.pk),
        "name": "demo_booked",
        "properties": {"plan": "pro", "seats": 12},
        "value": None,
        "currency": "",
        "occurred_at": "2025-06-02T12:00:00+00:00",
        "external_id": "crm-1",
        "source": "crm",
        "channel": "sales",
    }
    assert event_rows() == [
        (
            workspace.pk,
            ada.pk,
            "demo_booked",
            {"plan": "pro", "seats": 12},
            None,
            "",
            NOW,
            "crm",
            "sales",
            "crm-1",
        )
    ]
    assert event.received_at == NOW


def test_an_event_by_email_finds_the_contact_whatever_the_case(
    api: APIClient, ada: Contact
) -> None:
    # given: ada@example.com is known
    # when
    response = api.post(
        EVENTS_URL, {"contact": "  Ada@Example.COM ", "name": "page_view"}, format="json"
    )
    # then
    assert response.status_code == 201
    assert response.json()["contact"] == str(ada.pk)
    assert Contact.objects.count() == 1
    assert list(Event.objects.values_list("contact_id", "name")) == [(ada.pk, "page_view")]


def test_an_event_for_an_unknown_email_creates_a_not_subscribed_contact(
    api: APIClient, workspace: Workspace, other_workspace: Workspace
) -> None:
    # given: the address is known only in another workspace
    ContactFactory(workspace=other_workspace, email="new@example.com")
    # when
    response = api.post(
        EVENTS_URL, {"contact": "New@Example.com", "name": "purchase"}, format="json"
    )
    # then
    assert response.status_code == 201
    contact = Contact.objects.get(workspace=workspace)
    assert (contact.email, contact.status, contact.source) == (
        "new@example.com",
        ContactStatus.NOT_SUBSCRIBED,
        "event",
    )
    assert response.json()["contact"] == str(contact.pk)
    assert list(Event.objects.values_list("workspace_id", "contact_id")) == [
        (workspace.pk, contact.pk)
    ]
    assert Contact.objects.count() == 2


def test_a_value_is_a_decimal_string_with_its_currency(api: APIClient, ada: Contact) -> None:
    # given: a known contact
    # when
    response = api.post(
        EVENTS_URL,
        {"contact": str(ada.pk), "name": "purchase", "value": "49.90", "currency": "eur"},
        format="json",
    )
    # then
    assert response.status_code == 201
    assert (response.json()["value"], response.json()["currency"]) == ("49.90", "EUR")
    assert list(Event.objects.values_list("value", "currency")) == [(Decimal("49.90"), "EUR")]


def test_a_value_without_currency_is_refused_naming_currency(api: APIClient, ada: Contact) -> None:
    # when
    response = api.post(
        EVENTS_URL, {"contact": str(ada.pk), "name": "purchase", "value": "49.90"}, format="json"
    )
    # then
    assert response.status_code == 400
    assert response.json() == {"currency": ["Give the currency of the value."]}
    assert Event.objects.count() == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "demo booked!"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"value": "10.00", "currency": "EURO"}, "currency"),
        ({"value": "10.00", "currency": "€"}, "currency"),
        ({"value": "ten", "currency": "EUR"}, "value"),
        ({"value": "10.001", "currency": "EUR"}, "value"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "2025-02-30T10:00:00Z"}, "occurred_at"),
        ({"properties": ["not", "an", "object"]}, "properties"),
        ({"contact": "newbie@@example.com"}, "contact"),
    ],
)
def test_a_bad_field_is_refused_naming_it_and_nothing_is_stored(
    api: APIClient, changes: dict[str, Any], field: str
) -> None:
    # given: an event for an address nobody knows yet, with one bad field
    body = {"contact": "newbie@example.com", "name": "purchase", **changes}
    # when
    response = api.post(EVENTS_URL, body, format="json")
    # then
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert Event.objects.count() == 0
    assert Contact.objects.count() == 0


def test_a_contact_that_is_neither_an_id_nor_an_email_is_refused_naming_contact(
    api: APIClient,
) -> None:
    # given: a contact reference without "@" that is no UUID either
    # when
    response = api.post(EVENTS_URL, {"contact": "not-an-email", "name": "purchase"}, format="json")
    # then: no contact with an impossible address is made up
    assert response.status_code == 400
    assert list(response.json()) == ["contact"]
    assert Event.objects.count() == 0
    assert Contact.objects.count() == 0


def test_a_batch_item_whose_contact_is_neither_an_id_nor_an_email_is_an_error(
    api: APIClient, ada: Contact
) -> None:
    # given: a good item and one naming the contact "12345"
    events = [
        {"contact": str(ada.pk), "name": "page_view"},
        {"contact": "12345", "name": "page_view"},
    ]
    # when
    response = api.post(BATCH_URL, {"events": events}, format="json")
    # then
    assert response.status_code == 200
    body = response.json()
    assert (body["created"], body["duplicates"]) == (1, 0)
    assert [(error["index"], list(error["errors"])) for error in body["errors"]] == [
        (1, ["contact"])
    ]
    assert list(Event.objects.values_list("contact_id", flat=True)) == [ada.pk]
    assert list(Contact.objects.values_list("email", flat=True)) == ["ada@example.com"]


@pytest.mark.parametrize("whose", ["unknown", "other workspace"])
def test_an_unknown_contact_id_is_refused_naming_contact(
    api: APIClient, other_workspace: Workspace, whose: str
) -> None:
    # given: an id nobody has, or the id of another workspace's contact
    contact_id = (
        uuid.uuid4()
        if whose == "unknown"
        else ContactFactory(workspace=other_workspace, email="outsider@example.com").pk
    )
    # when
    response = api.post(EVENTS_URL, {"contact": str(contact_id), "name": "x"}, format="json")
    # then
    assert response.status_code == 400
    assert response.json() == {"contact": ["No such contact."]}
    assert Event.objects.count() == 0


def test_a_late_event_keeps_its_own_time(api: APIClient, ada: Contact) -> None:
    # given: an order from last winter arriving now
    # when
    with time_machine.travel(NOW, tick=False):
        response = api.post(
            EVENTS_URL,
            {
                "contact": str(ada.pk),
                "name": "purchase",
                "occurred_at": "2025-01-15T08:30:00+01:00",
            },
            format="json",
        )
    # then
    assert response.status_code == 201
    event = Event.objects.get()
    assert event.occurred_at == datetime(2025, 1, 15, 7, 30, tzinfo=UTC)
    assert event.received_at == NOW
    assert datetime.fromisoformat(response.json()["occurred_at"]) == event.occurred_at


def test_a_repeated_external_id_answers_200_with_the_first_event_and_stores_nothing(
    api: APIClient, ada: Contact
) -> None:
    # given: an event stored with external_id order-1
    first = api.post(
        EVENTS_URL,
        {
            "contact": str(ada.pk),
            "name": "purchase",
            "value": "10.00",
            "currency": "EUR",
            "external_id": "order-1",
        },
        format="json",
    )
    rows = event_rows()
    # when: the same external id arrives again, the second time for a new address
    again = api.post(
        EVENTS_URL,
        {
            "contact": str(ada.pk),
            "name": "purchase",
            "value": "10.00",
            "currency": "EUR",
            "external_id": "order-1",
        },
        format="json",
    )
    changed = api.post(
        EVENTS_URL,
        {"contact": str(ada.pk), "name": "refund", "external_id": "order-1"},
        format="json",
    )
    # then
    assert first.status_code == 201
    assert (again.status_code, changed.status_code) == (200, 200)
    assert again.json() == first.json()
    assert changed.json() == first.json()
    assert event_rows() == rows
    assert Contact.objects.count() == 1


def test_external_ids_are_per_workspace(
    api: APIClient,
    api_client_for: Callable[..., APIClient],
    ada: Contact,
    other_workspace: Workspace,
) -> None:
    # given: order-1 stored in this workspace
    api.post(
        EVENTS_URL,
        {"contact": str(ada.pk), "name": "purchase", "external_id": "order-1"},
        format="json",
    )
    # when: another workspace sends its own order-1
    response = api_client_for(other_workspace).post(
        EVENTS_URL,
        {"contact": "someone@example.com", "name": "purchase", "external_id": "order-1"},
        format="json",
    )
    # then
    assert response.status_code == 201
    assert sorted(Event.objects.values_list("workspace_id", flat=True)) == sorted(
        [ada.workspace_id, other_workspace.pk]
    )


def test_a_read_only_key_gets_403_and_nothing_is_stored(
    api_client_for: Callable[..., APIClient], workspace: Workspace, ada: Contact
) -> None:
    # given: a read-only key
    reader = api_client_for(workspace, access="read")
    # when
    single = reader.post(
        EVENTS_URL, {"contact": "new@example.com", "name": "purchase"}, format="json"
    )
    batch = reader.post(
        BATCH_URL, {"events": [{"contact": str(ada.pk), "name": "purchase"}]}, format="json"
    )
    # then
    assert (single.status_code, batch.status_code) == (403, 403)
    assert Event.objects.count() == 0
    assert list(Contact.objects.values_list("email", flat=True)) == ["ada@example.com"]


def test_without_a_key_the_answer_is_401_and_nothing_is_stored(ada: Contact) -> None:
    # when
    response = APIClient().post(
        EVENTS_URL, {"contact": str(ada.pk), "name": "purchase"}, format="json"
    )
    # then
    assert response.status_code == 401
    assert Event.objects.count() == 0


# --- the race ------------------------------------------------------------------------------------


def _in_thread(target: Callable[[], Any], results: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(target())
        except Exception as exc:  # the test asserts on it: a thread must not swallow it
            results.append(exc)
        finally:
            connections.close_all()

    return threading.Thread(target=run)


@pytest.mark.django_db(transaction=True)
def test_two_requests_racing_with_one_external_id_store_one_event(
    api_client_for: Callable[..., APIClient], workspace: Workspace
) -> None:
    # given: two clients of the workspace, released at the same moment
    clients = [api_client_for(workspace), api_client_for(workspace)]
    start = threading.Barrier(2)
    body = {
        "contact": "racer@example.com",
        "name": "purchase",
        "value": "5.00",
        "currency": "EUR",
        "external_id": "order-race",
    }

    def post(client: APIClient) -> Callable[[], Any]:
        def send() -> Any:
            start.wait(timeout=10)
            return client.post(EVENTS_URL, body, format="json")

        return send

    results: list[Any] = []
    threads = [_in_thread(post(client), results) for client in clients]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # then
    assert sorted(response.status_code for response in results) == [200, 201]
    event = Event.objects.get()
    assert [response.json()["id"] for response in results] == [str(event.pk)] * 2
    assert Event.objects.filter(external_id="order-race").count() == 1
    assert list(Contact.objects.values_list("email", flat=True)) == ["racer@example.com"]


@pytest.mark.django_db(transaction=True)
def test_a_second_writer_blocked_by_the_first_one_counts_a_duplicate(
    workspace: Workspace,
) -> None:
    # given: writer A has inserted order-7 in an open transaction; writer B inserts order-7
    # too and must wait for A's row lock (seen in pg_stat_activity, no sleeping)
    from django.db import transaction

    item = EventInput(name="purchase", email="racer@example.com", external_id="order-7")
    a_inserted, b_ready = threading.Event(), threading.Event()
    b_pid: list[int] = []

    def writer_a() -> services.BatchResult:
        with transaction.atomic():
            result = services.events_record(workspace=workspace, inputs=[item])
            a_inserted.set()
            assert b_ready.wait(timeout=10)
            deadline = time.monotonic() + 20
            with connection.cursor() as cursor:
                while time.monotonic() < deadline:
                    cursor.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", b_pid
                    )
                    row = cursor.fetchone()
                    if row and row[0] == "Lock":
                        break
                else:
                    raise AssertionError("writer B never waited for writer A's lock")
        return result

    def writer_b() -> services.BatchResult:
        connection.ensure_connection()
        b_pid.append(connection.connection.get_backend_pid())
        assert a_inserted.wait(timeout=10)
        b_ready.set()
        return services.events_record(workspace=workspace, inputs=[item])

    results_a: list[Any] = []
    results_b: list[Any] = []
    threads = [_in_thread(writer_a, results_a), _in_thread(writer_b, results_b)]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # then
    (first,), (second,) = results_a, results_b
    assert (first.created, first.duplicates, first.errors) == (1, 0, [])
    assert (second.created, second.duplicates, second.errors) == (0, 1, [])
    assert Event.objects.filter(external_id="order-7").count() == 1
    assert Event.objects.count() == 1
    assert Contact.objects.filter(email="racer@example.com").count() == 1


# --- batches -------------------------------------------------------------------------------------


def test_a_batch_of_1000_events_is_stored(
    api: APIClient, workspace: Workspace, ada: Contact
) -> None:
    # given: 1000 page views of 10 contacts, half by id and half by email
    others = [
        ContactFactory(workspace=workspace, email=f"c{number}@example.com") for number in range(9)
    ]
    refs = [str(ada.pk)] + [contact.email for contact in others]
    events = [
        {
            "contact": refs[number % 10],
            "name": "page_view",
            "external_id": f"pv-{number}",
            "properties": {"path": f"/p/{number}"},
        }
        for number in range(1000)
    ]
    # when
    response = api.post(BATCH_URL, {"events": events}, format="json")
    # then
    assert response.status_code == 200
    assert response.json() == {"created": 1000, "duplicates": 0, "errors": []}
    assert Event.objects.count() == 1000
    assert Event.objects.filter(contact=ada).count() == 100
    assert Contact.objects.count() == 10


def test_a_batch_of_1001_events_is_refused_naming_events_and_stores_nothing(
    api: APIClient, ada: Contact
) -> None:
    # given
    events = [{"contact": str(ada.pk), "name": "page_view"} for _number in range(1001)]
    # when
    response = api.post(BATCH_URL, {"events": events}, format="json")
    # then
    assert response.status_code == 400
    assert list(response.json()) == ["events"]
    assert Event.objects.count() == 0


def test_an_empty_batch_is_refused_naming_events(api: APIClient) -> None:
    # when
    response = api.post(BATCH_URL, {"events": []}, format="json")
    # then
    assert response.status_code == 400
    assert list(response.json()) == ["events"]
    assert Event.objects.count() == 0


def test_a_batch_stores_the_good_items_and_names_each_bad_index(
    api: APIClient, workspace: Workspace, ada: Contact
) -> None:
    # given: order-0 is stored already
    api.post(
        EVENTS_URL,
        {"contact": str(ada.pk), "name": "purchase", "external_id": "order-0"},
        format="json",
    )
    events = [
        {"contact": "ada@example.com", "name": "page_view"},  # 0 good, by email
        {"contact": "ada@@example", "name": "page_view"},  # 1 bad email
        {"contact": str(uuid.uuid4()), "name": "page_view"},  # 2 unknown contact id
        {"contact": str(ada.pk)},  # 3 no name
        {"contact": str(ada.pk), "name": "purchase", "value": "5.00"},  # 4 no currency
        {  # 5 good, by id, with money
            "contact": str(ada.pk),
            "name": "purchase",
            "value": "10.00",
            "currency": "EUR",
            "external_id": "order-1",
        },
        {  # 6 order-1 again in the same batch
            "contact": str(ada.pk),
            "name": "purchase",
            "value": "99.00",
            "currency": "EUR",
            "external_id": "order-1",
        },
        {"contact": str(ada.pk), "name": "purchase", "external_id": "order-0"},  # 7 stored
        {"contact": "new@example.com", "name": "signup"},  # 8 good, a new address
    ]
    # when
    response = api.post(BATCH_URL, {"events": events}, format="json")
    # then
    assert response.status_code == 200
    body = response.json()
    assert (body["created"], body["duplicates"]) == (3, 2)
    assert [(error["index"], list(error["errors"])) for error in body["errors"]] == [
        (1, ["contact"]),
        (2, ["contact"]),
        (3, ["name"]),
        (4, ["currency"]),
    ]
    assert body["errors"][1:] == [
        {"index": 2, "errors": {"contact": ["No such contact."]}},
        {"index": 3, "errors": {"name": ["This field is required."]}},
        {"index": 4, "errors": {"currency": ["Give the currency of the value."]}},
    ]
    assert body["errors"][0]["errors"]["contact"][0].startswith("Enter a valid email address")
    new = Contact.objects.get(email="new@example.com")
    assert (new.status, new.source) == (ContactStatus.NOT_SUBSCRIBED, "event")
    assert sorted(
        Event.objects.values_list("contact__email", "name", "value", "external_id"),
        key=str,
    ) == sorted(
        [
            ("ada@example.com", "purchase", None, "order-0"),
            ("ada@example.com", "page_view", None, None),
            ("ada@example.com", "purchase", Decimal("10.00"), "order-1"),
            ("new@example.com", "signup", None, None),
        ],
        key=str,
    )
    assert Contact.objects.count() == 2


def test_a_batch_of_only_bad_items_stores_nothing(api: APIClient, ada: Contact) -> None:
    # given
    events = [{"contact": str(uuid.uuid4()), "name": "x"}, {"contact": str(ada.pk)}]
    # when
    response = api.post(BATCH_URL, {"events": events}, format="json")
    # then
    assert response.status_code == 200
    assert response.json() == {
        "created": 0,
        "duplicates": 0,
        "errors": [
            {"index": 0, "errors": {"contact": ["No such contact."]}},
            {"index": 1, "errors": {"name": ["This field is required."]}},
        ],
    }
    assert Event.objects.count() == 0


# --- segments ------------------------------------------------------------------------------------


def test_the_segment_condition_event_within_matches_recent_events_only(
    workspace: Workspace, other_workspace: Workspace, ada: Contact
) -> None:
    # given: ada bought 10 days ago, grace 40 days ago, linus only viewed a page,
    # and someone in another workspace bought yesterday
    grace = ContactFactory(workspace=workspace, email="grace@example.com")
    linus = ContactFactory(workspace=workspace, email="linus@example.com")
    outsider = ContactFactory(workspace=other_workspace, email="outsider@example.com")
    for contact, name, days in [
        (ada, "purchase", 10),
        (grace, "purchase", 40),
        (linus, "page_view", 1),
        (outsider, "purchase", 1),
    ]:
        services.events_record(
            workspace=contact.workspace,
            inputs=[
                EventInput(name=name, contact_id=contact.pk, occurred_at=NOW - timedelta(days=days))
            ],
        )
    # when
    with time_machine.travel(NOW, tick=False):
        recent = segment_queryset(
            workspace=workspace, filter={"all": [{"event": "purchase", "within": "P30D"}]}
        )
        recent_emails = sorted(recent.values_list("email", flat=True))
        ever = sorted(
            segment_queryset(
                workspace=workspace, filter={"all": [{"event": "purchase"}]}
            ).values_list("email", flat=True)
        )
    # and: 31 days later ada's purchase is too old as well
    with time_machine.travel(NOW + timedelta(days=21), tick=False):
        later = list(
            segment_queryset(
                workspace=workspace, filter={"all": [{"event": "purchase", "within": "P30D"}]}
            ).values_list("email", flat=True)
        )
    # then
    assert recent_emails == ["ada@example.com"]
    assert ever == ["ada@example.com", "grace@example.com"]
    assert later == []
