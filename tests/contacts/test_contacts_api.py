"""GET/POST /api/v1/contacts/ and GET/PATCH/DELETE /api/v1/contacts/{id}/ (API.md: Contacts)."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail

from contacts.models import (
    ConsentKind,
    ConsentRecord,
    ConsentText,
    Contact,
    ContactStatus,
    Suppression,
    Tag,
)
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

CONTACTS_URL = "/api/v1/contacts/"
CONSENT_TEXT = (
    "Ja, ich möchte den Newsletter von Acme erhalten.\n"
    "Abmeldung jederzeit über den Link in jeder Mail."
)
CONSENT = {"text": CONSENT_TEXT, "ip": "203.0.113.7", "at": "2025-03-01T10:15:00+01:00"}
CONSENT_AT = datetime(2025, 3, 1, 9, 15, tzinfo=UTC)
NAMED_FIELDS = {
    "id",
    "email",
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "attributes",
    "tags",
    "status",
    "source",
    "score",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "stages",
}
ISO_8601_WITH_OFFSET = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)


def detail_url(contact_id: object) -> str:
    return f"{CONTACTS_URL}{contact_id}/"


def create(api, **body):
    response = api.post(CONTACTS_URL, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- POST: upsert by email ---------------------------------------------------------------


def test_post_creates_a_contact_with_201(workspace, api):
    # when
    response = api.post(
        CONTACTS_URL,
        {
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "locale": "de-AT",
            "timezone": "Europe/Vienna",
            "attributes": {"plan": "pro", "orders": 3},
            "tags": ["vip"],
            "source": "shop",
            "score": 42,
        },
        format="json",
    )

    # then
    assert response.status_code == 201
    body = response.json()
    contact = Contact.objects.get()
    assert body["id"] == str(contact.id)
    assert contact.workspace_id == workspace.id
    assert {key: body[key] for key in NAMED_FIELDS - {"id", "created_at"}} == {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "locale": "de-AT",
        "timezone": "Europe/Vienna",
        "attributes": {"plan": "pro", "orders": 3},
        "tags": ["vip"],
        "status": "not_subscribed",
        "source": "shop",
        "score": 42,
        "confirmed_at": None,
        "unsubscribed_at": None,
        "stages": {},
    }
    assert contact.first_name == "Ada"
    assert contact.attributes == {"plan": "pro", "orders": 3}
    assert list(contact.tags.values_list("name", flat=True)) == ["vip"]


def test_post_with_only_an_email_takes_the_defaults(workspace, api):
    # when
    body = create(api, email="ada@example.com")

    # then
    assert {key: body[key] for key in NAMED_FIELDS - {"id", "created_at"}} == {
        "email": "ada@example.com",
        "first_name": "",
        "last_name": "",
        "locale": "",
        "timezone": "",
        "attributes": {},
        "tags": [],
        "status": "not_subscribed",
        "source": "",
        "score": 0,
        "confirmed_at": None,
        "unsubscribed_at": None,
        "stages": {},
    }


def test_post_upserts_by_case_insensitive_email(workspace, api):
    # given
    first = api.post(CONTACTS_URL, {"email": "Ada@Example.com"}, format="json")

    # when the same address is posted in another case with more data
    second = api.post(
        CONTACTS_URL, {"email": "  ADA@example.COM ", "first_name": "Ada"}, format="json"
    )

    # then the first answer is 201, the second 200, and there is one row
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["first_name"] == "Ada"
    assert Contact.objects.count() == 1
    assert Contact.objects.get().email == "ada@example.com"


def test_post_stores_the_email_normalised_and_lower_cased(workspace, api):
    # when
    body = create(api, email="  Ada.Lovelace@EXAMPLE.COM ")

    # then
    assert body["email"] == "ada.lovelace@example.com"
    assert Contact.objects.get().email == "ada.lovelace@example.com"


def test_post_decodes_idn_domains_so_both_spellings_are_one_contact(workspace, api):
    # given
    first = api.post(CONTACTS_URL, {"email": "max@XN--BCHER-KVA.de"}, format="json")

    # when
    second = api.post(CONTACTS_URL, {"email": "Max@Bücher.de"}, format="json")

    # then
    assert first.status_code == 201
    assert second.status_code == 200
    assert first.json()["email"] == "max@bücher.de"
    assert Contact.objects.count() == 1


def test_upsert_of_an_existing_contact_keeps_what_is_not_sent(workspace, api):
    # given
    create(api, email="ada@example.com", first_name="Ada", score=5, tags=["vip"])

    # when only the last name is sent
    response = api.post(
        CONTACTS_URL, {"email": "ada@example.com", "last_name": "Lovelace"}, format="json"
    )

    # then
    assert response.status_code == 200
    body = response.json()
    assert (body["first_name"], body["last_name"], body["score"], body["tags"]) == (
        "Ada",
        "Lovelace",
        5,
        ["vip"],
    )


# --- output shape ------------------------------------------------------------------------


def test_output_has_every_named_field_with_the_right_type(workspace, api):
    # given
    created = create(
        api,
        email="ada@example.com",
        tags=["zeta", "alpha", "beta", "alpha", "  "],
        status="subscribed",
        consent=CONSENT,
    )

    # when
    body = api.get(detail_url(created["id"])).json()

    # then
    assert set(body) >= NAMED_FIELDS
    assert str(uuid.UUID(body["id"])) == body["id"]
    for key in ("created_at", "confirmed_at"):
        assert isinstance(body[key], str)
        assert ISO_8601_WITH_OFFSET.match(body[key]), body[key]
        assert datetime.fromisoformat(body[key]).utcoffset() is not None
    assert body["unsubscribed_at"] is None
    assert body["stages"] == {}
    assert body["tags"] == ["alpha", "beta", "zeta"]
    assert body["attributes"] == {}
    assert type(body["score"]) is int
    assert body["status"] == "subscribed"
    contact = Contact.objects.get()
    assert datetime.fromisoformat(body["created_at"]) == contact.created_at


def test_get_returns_the_contact(workspace, api):
    # given
    created = create(api, email="ada@example.com", first_name="Ada")

    # when
    response = api.get(detail_url(created["id"]))

    # then
    assert response.status_code == 200
    assert response.json() == created


def test_get_of_an_unknown_id_is_404(workspace, api):
    # when
    response = api.get(detail_url(uuid.uuid4()))

    # then
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "email"),
        ({"email": ""}, "email"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "ada@@example.com"}, "email"),
        ({"email": "ada@example.com", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"email": "ada@example.com", "locale": "English!"}, "locale"),
        ({"email": "ada@example.com", "attributes": ["plan", "pro"]}, "attributes"),
        ({"email": "ada@example.com", "attributes": "plan=pro"}, "attributes"),
        ({"email": "ada@example.com", "attributes": {"1st": "x"}}, "attributes"),
        ({"email": "ada@example.com", "tags": "vip"}, "tags"),
        ({"email": "ada@example.com", "tags": ["vip", 7]}, "tags"),
        ({"email": "ada@example.com", "tags": {"vip": True}}, "tags"),
        ({"email": "ada@example.com", "tags": ["x" * 101]}, "tags"),
        ({"email": "ada@example.com", "tags": None}, "tags"),
        ({"email": "ada@example.com", "attributes": None}, "attributes"),
        ({"email": "ada@example.com", "status": "vip"}, "status"),
        ({"email": "ada@example.com", "score": "many"}, "score"),
        ({"email": "ada@example.com", "score": 1.5}, "score"),
    ],
)
def test_invalid_input_is_400_naming_the_field_and_creates_nothing(workspace, api, body, field):
    # when
    response = api.post(CONTACTS_URL, body, format="json")

    # then
    assert response.status_code == 400
    errors = response.json()
    assert set(errors) == {field}
    assert isinstance(errors[field], list)
    assert errors[field]
    assert all(isinstance(message, str) for message in errors[field])
    assert Contact.objects.count() == 0
    assert Tag.objects.count() == 0


def test_invalid_patch_is_400_and_changes_nothing(workspace, api):
    # given
    created = create(api, email="ada@example.com", timezone="Europe/Berlin", tags=["vip"])

    # when
    response = api.patch(
        detail_url(created["id"]),
        {"timezone": "Atlantis/Capital", "tags": ["new"]},
        format="json",
    )

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"timezone"}
    contact = Contact.objects.get()
    assert contact.timezone == "Europe/Berlin"
    assert list(contact.tags.values_list("name", flat=True)) == ["vip"]


# --- consent -----------------------------------------------------------------------------


def test_subscribed_without_consent_is_400_and_creates_nothing(workspace, api):
    # when
    response = api.post(
        CONTACTS_URL, {"email": "ada@example.com", "status": "subscribed"}, format="json"
    )

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"consent"}
    assert isinstance(response.json()["consent"], list)
    assert Contact.objects.count() == 0
    assert ConsentRecord.objects.count() == 0
    assert ConsentText.objects.count() == 0


def test_subscribed_with_incomplete_consent_is_400(workspace, api):
    # when the consent lacks the time it was given
    response = api.post(
        CONTACTS_URL,
        {"email": "ada@example.com", "status": "subscribed", "consent": {"text": CONSENT_TEXT}},
        format="json",
    )

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"consent"}
    assert Contact.objects.count() == 0
    assert ConsentRecord.objects.count() == 0


def test_subscribed_without_consent_on_patch_is_400_and_changes_nothing(workspace, api):
    # given
    created = create(api, email="ada@example.com")

    # when
    response = api.patch(detail_url(created["id"]), {"status": "subscribed"}, format="json")

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"consent"}
    assert Contact.objects.get().status == ContactStatus.NOT_SUBSCRIBED
    assert ConsentRecord.objects.count() == 0


def test_subscribed_with_consent_is_stored_as_proof(workspace, api):
    # when
    response = api.post(
        CONTACTS_URL,
        {"email": "ada@example.com", "status": "subscribed", "consent": CONSENT},
        format="json",
    )

    # then
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "subscribed"
    assert datetime.fromisoformat(body["confirmed_at"]) == CONSENT_AT
    contact = Contact.objects.get()
    assert contact.status == ContactStatus.SUBSCRIBED
    assert contact.confirmed_at == CONSENT_AT
    record = ConsentRecord.objects.get()
    assert record.contact_id == contact.id
    assert record.workspace_id == workspace.id
    assert record.kind == ConsentKind.RECORDED
    assert record.occurred_at == CONSENT_AT
    assert record.ip_address == "203.0.113.7"
    assert record.consent_text is not None
    assert record.consent_text.text == CONSENT_TEXT
    assert record.consent_text.workspace_id == workspace.id


def test_subscribing_an_existing_contact_by_patch_with_consent(workspace, api):
    # given
    created = create(api, email="ada@example.com")

    # when
    response = api.patch(
        detail_url(created["id"]), {"status": "subscribed", "consent": CONSENT}, format="json"
    )

    # then
    assert response.status_code == 200
    assert response.json()["status"] == "subscribed"
    assert datetime.fromisoformat(response.json()["confirmed_at"]) == CONSENT_AT
    assert ConsentRecord.objects.get().consent_text.text == CONSENT_TEXT


def test_a_second_contact_with_the_same_consent_text_reuses_its_version(workspace, api):
    # given
    create(api, email="ada@example.com", status="subscribed", consent=CONSENT)

    # when
    create(api, email="grace@example.com", status="subscribed", consent=CONSENT)

    # then
    assert ConsentText.objects.count() == 1
    text_ids = set(ConsentRecord.objects.values_list("consent_text_id", flat=True))
    assert text_ids == {ConsentText.objects.get().id}
    assert ConsentRecord.objects.count() == 2


def test_another_consent_text_makes_another_version(workspace, api):
    # given
    create(api, email="ada@example.com", status="subscribed", consent=CONSENT)

    # when
    create(
        api,
        email="grace@example.com",
        status="subscribed",
        consent={**CONSENT, "text": CONSENT_TEXT + " (v2)"},
    )

    # then
    assert sorted(ConsentText.objects.values_list("text", flat=True)) == [
        CONSENT_TEXT,
        CONSENT_TEXT + " (v2)",
    ]


@pytest.mark.parametrize("status", ["pending", "bounced", "complained"])
def test_system_statuses_cannot_be_set_on_post(workspace, api, status):
    # when
    response = api.post(CONTACTS_URL, {"email": "ada@example.com", "status": status}, format="json")

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"status"}
    assert Contact.objects.count() == 0


@pytest.mark.parametrize("status", ["pending", "bounced", "complained"])
def test_system_statuses_cannot_be_set_on_patch(workspace, api, status):
    # given
    created = create(api, email="ada@example.com")

    # when
    response = api.patch(detail_url(created["id"]), {"status": status}, format="json")

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"status"}
    assert Contact.objects.get().status == ContactStatus.NOT_SUBSCRIBED


def test_unsubscribing_through_the_api_sets_the_time_and_suppresses(workspace, api):
    # given
    created = create(api, email="ada@example.com", status="subscribed", consent=CONSENT)
    moment = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)

    # when
    with time_machine.travel(moment, tick=False):
        response = api.patch(detail_url(created["id"]), {"status": "unsubscribed"}, format="json")

    # then
    assert response.status_code == 200
    assert response.json()["status"] == "unsubscribed"
    assert datetime.fromisoformat(response.json()["unsubscribed_at"]) == moment
    suppression = Suppression.objects.get()
    assert (suppression.email_hash, suppression.reason) == (
        sha256("ada@example.com"),
        "unsubscribed",
    )


def test_an_unsubscribed_contact_cannot_be_subscribed_again_by_patch(workspace, api):
    # given
    created = create(api, email="ada@example.com", status="unsubscribed")
    assert created["status"] == "unsubscribed"

    # when
    response = api.patch(
        detail_url(created["id"]), {"status": "subscribed", "consent": CONSENT}, format="json"
    )

    # then
    assert response.status_code == 409
    assert set(response.json()) == {"status"}
    contact = Contact.objects.get()
    assert contact.status == ContactStatus.UNSUBSCRIBED
    assert contact.confirmed_at is None
    assert list(ConsentRecord.objects.values_list("kind", flat=True)) == [ConsentKind.UNSUBSCRIBE]
    assert ConsentText.objects.count() == 0


def test_an_unsubscribed_contact_cannot_be_subscribed_again_by_post(workspace, api):
    # given
    create(api, email="ada@example.com", status="unsubscribed")

    # when
    response = api.post(
        CONTACTS_URL,
        {"email": "ADA@example.com", "status": "subscribed", "consent": CONSENT, "score": 9},
        format="json",
    )

    # then
    assert response.status_code == 409
    assert set(response.json()) == {"status"}
    contact = Contact.objects.get()
    assert (contact.status, contact.score) == (ContactStatus.UNSUBSCRIBED, 0)
    assert ConsentRecord.objects.filter(kind=ConsentKind.RECORDED).count() == 0


@pytest.mark.parametrize("status", [ContactStatus.BOUNCED, ContactStatus.COMPLAINED])
def test_a_bounced_or_complained_contact_cannot_be_subscribed(workspace, api, status):
    # given a contact the mail system marked
    contact = ContactFactory(workspace=workspace, email="ada@example.com", status=status)

    # when
    response = api.patch(
        detail_url(contact.id), {"status": "subscribed", "consent": CONSENT}, format="json"
    )

    # then
    assert response.status_code == 409
    assert set(response.json()) == {"status"}
    contact.refresh_from_db()
    assert contact.status == status
    assert ConsentRecord.objects.count() == 0


def test_an_erased_address_cannot_be_recreated_as_subscribed(workspace, api):
    # given a contact that was erased
    created = create(api, email="ada@example.com")
    assert api.delete(detail_url(created["id"])).status_code == 204

    # when the address is posted again as subscribed, with consent
    response = api.post(
        CONTACTS_URL,
        {"email": "Ada@Example.com", "status": "subscribed", "consent": CONSENT},
        format="json",
    )

    # then
    assert response.status_code == 409
    assert set(response.json()) == {"status"}
    assert Contact.objects.count() == 0
    assert ConsentRecord.objects.count() == 0


def test_an_erased_address_recreated_without_status_cannot_be_subscribed_later(workspace, api):
    # given an erased address that came back as a plain contact
    created = create(api, email="ada@example.com")
    api.delete(detail_url(created["id"]))
    recreated = create(api, email="ada@example.com")
    assert recreated["status"] == "not_subscribed"

    # when
    response = api.patch(
        detail_url(recreated["id"]), {"status": "subscribed", "consent": CONSENT}, format="json"
    )

    # then
    assert response.status_code == 409
    assert Contact.objects.get().status == ContactStatus.NOT_SUBSCRIBED
    assert ConsentRecord.objects.count() == 0


# --- PATCH -------------------------------------------------------------------------------


def test_patch_merges_attributes_and_null_removes_a_key(workspace, api):
    # given
    created = create(api, email="ada@example.com", attributes={"plan": "pro", "city": "Berlin"})

    # when
    response = api.patch(
        detail_url(created["id"]),
        {"attributes": {"city": None, "orders": 3, "missing": None}},
        format="json",
    )

    # then
    assert response.status_code == 200
    assert response.json()["attributes"] == {"plan": "pro", "orders": 3}
    assert Contact.objects.get().attributes == {"plan": "pro", "orders": 3}


def test_patch_replaces_tags(workspace, api):
    # given
    created = create(api, email="ada@example.com", tags=["b", "a"])

    # when
    replaced = api.patch(detail_url(created["id"]), {"tags": ["c"]}, format="json")
    emptied = api.patch(detail_url(created["id"]), {"tags": []}, format="json")

    # then
    assert created["tags"] == ["a", "b"]
    assert replaced.status_code == 200
    assert replaced.json()["tags"] == ["c"]
    assert emptied.json()["tags"] == []
    assert Contact.objects.get().tags.count() == 0


def test_patch_without_tags_leaves_them(workspace, api):
    # given
    created = create(api, email="ada@example.com", tags=["vip"])

    # when
    response = api.patch(detail_url(created["id"]), {"first_name": "Ada"}, format="json")

    # then
    assert response.status_code == 200
    assert response.json()["tags"] == ["vip"]
    assert response.json()["first_name"] == "Ada"


def test_patch_refuses_changing_the_email(workspace, api):
    # given
    created = create(api, email="ada@example.com")

    # when
    response = api.patch(
        detail_url(created["id"]),
        {"email": "grace@example.com", "first_name": "Grace"},
        format="json",
    )

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"email"}
    contact = Contact.objects.get()
    assert (contact.email, contact.first_name) == ("ada@example.com", "")


def test_patch_accepts_the_same_email_in_another_case(workspace, api):
    # given
    created = create(api, email="ada@example.com")

    # when
    response = api.patch(
        detail_url(created["id"]), {"email": "ADA@Example.com", "score": 3}, format="json"
    )

    # then
    assert response.status_code == 200
    assert (response.json()["email"], response.json()["score"]) == ("ada@example.com", 3)


def test_patch_of_an_unknown_id_is_404(workspace, api):
    # when
    response = api.patch(detail_url(uuid.uuid4()), {"first_name": "Ada"}, format="json")

    # then
    assert response.status_code == 404


# --- DELETE ------------------------------------------------------------------------------


def test_delete_erases_the_contact_and_keeps_the_address_suppressed(workspace, api):
    # given a subscribed contact with tags and proof of consent
    created = create(
        api, email="Ada@Example.com", tags=["vip"], status="subscribed", consent=CONSENT
    )

    # when
    response = api.delete(detail_url(created["id"]))

    # then
    assert response.status_code == 204
    assert response.content == b""
    assert Contact.objects.count() == 0
    assert ConsentRecord.objects.count() == 0
    suppression = Suppression.objects.get()
    assert suppression.workspace_id == workspace.id
    assert suppression.reason == "erased"
    assert suppression.email_hash == sha256("ada@example.com")
    assert api.get(detail_url(created["id"])).status_code == 404


def test_delete_of_an_unknown_id_is_404_and_suppresses_nothing(workspace, api):
    # given
    create(api, email="ada@example.com")

    # when
    response = api.delete(detail_url(uuid.uuid4()))

    # then
    assert response.status_code == 404
    assert Contact.objects.count() == 1
    assert Suppression.objects.count() == 0


# --- filters and ordering ----------------------------------------------------------------


def emails_of(response) -> list[str]:
    return [contact["email"] for contact in response.json()["results"]]


def test_filter_by_email_is_case_insensitive(workspace, api):
    # given
    create(api, email="ada@example.com")
    create(api, email="grace@example.com")

    # when
    response = api.get(CONTACTS_URL, {"email": " ADA@Example.COM "})

    # then
    assert response.status_code == 200
    assert response.json()["count"] == 1
    assert emails_of(response) == ["ada@example.com"]


def test_filter_by_status(workspace, api):
    # given
    create(api, email="ada@example.com", status="subscribed", consent=CONSENT)
    create(api, email="grace@example.com")
    create(api, email="linus@example.com", status="unsubscribed")

    # when
    subscribed = api.get(CONTACTS_URL, {"status": "subscribed"})
    unsubscribed = api.get(CONTACTS_URL, {"status": "unsubscribed"})
    pending = api.get(CONTACTS_URL, {"status": "pending"})

    # then
    assert emails_of(subscribed) == ["ada@example.com"]
    assert emails_of(unsubscribed) == ["linus@example.com"]
    assert pending.json()["count"] == 0


def test_filter_by_unknown_status_is_400(workspace, api):
    # when
    response = api.get(CONTACTS_URL, {"status": "vip"})

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"status"}


def test_filter_by_tag(workspace, api):
    # given
    create(api, email="ada@example.com", tags=["vip", "newsletter"])
    create(api, email="grace@example.com", tags=["newsletter"])
    create(api, email="linus@example.com")

    # when
    vip = api.get(CONTACTS_URL, {"tag": "vip"})
    newsletter = api.get(CONTACTS_URL, {"tag": "newsletter", "ordering": "email"})

    # then
    assert emails_of(vip) == ["ada@example.com"]
    assert emails_of(newsletter) == ["ada@example.com", "grace@example.com"]
    assert newsletter.json()["count"] == 2


def test_search_matches_email_first_and_last_name(workspace, api):
    # given
    create(api, email="jsmith@example.com")
    create(api, email="b@example.com", first_name="Smithers")
    create(api, email="c@example.com", last_name="SMITH")
    create(api, email="d@example.com", first_name="Ada", last_name="Lovelace")

    # when
    response = api.get(CONTACTS_URL, {"search": "smith", "ordering": "email"})

    # then
    assert response.json()["count"] == 3
    assert emails_of(response) == ["b@example.com", "c@example.com", "jsmith@example.com"]


def test_ordering_by_allowed_fields(workspace, api):
    # given
    create(api, email="b@example.com", score=1)
    create(api, email="c@example.com", score=3)
    create(api, email="a@example.com", score=2)

    # when
    by_email = api.get(CONTACTS_URL, {"ordering": "email"})
    by_score_desc = api.get(CONTACTS_URL, {"ordering": "-score"})

    # then
    assert emails_of(by_email) == ["a@example.com", "b@example.com", "c@example.com"]
    assert emails_of(by_score_desc) == ["c@example.com", "a@example.com", "b@example.com"]


def test_default_ordering_is_newest_first(workspace, api):
    # given contacts made a minute apart
    start = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as traveller:
        for email in ("first@example.com", "second@example.com", "third@example.com"):
            create(api, email=email)
            traveller.shift(timedelta(minutes=1))

        # when
        response = api.get(CONTACTS_URL)

    # then
    assert emails_of(response) == ["third@example.com", "second@example.com", "first@example.com"]


@pytest.mark.parametrize(
    "ordering", ["password", "workspace__name", "id; DROP TABLE contacts_contact", "attributes"]
)
def test_ordering_outside_the_allow_list_is_400(workspace, api, ordering):
    # given
    create(api, email="ada@example.com")

    # when
    response = api.get(CONTACTS_URL, {"ordering": ordering})

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"ordering"}
    assert Contact.objects.count() == 1


# --- pagination --------------------------------------------------------------------------


def test_list_is_paginated(workspace, api):
    # given
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        create(api, email=email)

    # when
    first_page = api.get(CONTACTS_URL, {"page_size": 2, "ordering": "email"})
    second_page = api.get(CONTACTS_URL, {"page_size": 2, "ordering": "email", "page": 2})

    # then
    first = first_page.json()
    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] == 3
    assert first["previous"] is None
    assert first["next"] == "http://testserver/api/v1/contacts/?ordering=email&page=2&page_size=2"
    assert emails_of(first_page) == ["a@example.com", "b@example.com"]
    second = second_page.json()
    assert second["next"] is None
    assert second["previous"] == "http://testserver/api/v1/contacts/?ordering=email&page_size=2"
    assert emails_of(second_page) == ["c@example.com"]


def test_empty_list_shape(workspace, api):
    # when
    response = api.get(CONTACTS_URL)

    # then
    assert response.status_code == 200
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_page_size_is_capped_at_500(workspace, api):
    # given 501 contacts
    Contact.objects.bulk_create(
        Contact(workspace=workspace, email=f"contact{number}@example.org") for number in range(501)
    )

    # when
    response = api.get(CONTACTS_URL, {"page_size": 1000})

    # then
    body = response.json()
    assert response.status_code == 200
    assert body["count"] == 501
    assert len(body["results"]) == 500
    assert body["next"] is not None


def test_list_query_count_does_not_grow_with_contacts(workspace, api, django_assert_num_queries):
    # given one tagged contact and a key already used this minute
    with time_machine.travel(datetime(2025, 3, 3, 9, 0, tzinfo=UTC), tick=False):
        create(api, email="first@example.com", tags=["vip", "newsletter"])

        # when the list is read with one contact
        # (api key, count, page of contacts, their tags, their funnel stages)
        with django_assert_num_queries(5):
            one = api.get(CONTACTS_URL)

        # and again with twenty-one contacts, each with tags
        for number in range(20):
            create(api, email=f"c{number}@example.com", tags=["vip", f"t{number}"])
        with django_assert_num_queries(5):
            many = api.get(CONTACTS_URL)

    # then
    assert one.json()["count"] == 1
    assert many.json()["count"] == 21
    assert all(len(contact["tags"]) == 2 for contact in many.json()["results"])


# --- workspace isolation -----------------------------------------------------------------


def test_another_workspace_gets_404_on_get_patch_and_delete(
    workspace, other_workspace, api, api_client_for
):
    # given a contact of this workspace and a key of another
    created = create(api, email="ada@example.com", first_name="Ada", tags=["vip"])
    intruder = api_client_for(other_workspace)

    # when
    got = intruder.get(detail_url(created["id"]))
    patched = intruder.patch(
        detail_url(created["id"]), {"first_name": "Eve", "tags": ["stolen"]}, format="json"
    )
    deleted = intruder.delete(detail_url(created["id"]))

    # then
    for response in (got, patched, deleted):
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}
    contact = Contact.objects.get()
    assert contact.first_name == "Ada"
    assert list(contact.tags.values_list("name", flat=True)) == ["vip"]
    assert Suppression.objects.count() == 0
    assert Tag.objects.filter(workspace=other_workspace).count() == 0


def test_another_workspace_never_sees_the_rows_in_lists_or_filters(
    workspace, other_workspace, api, api_client_for
):
    # given
    create(
        api,
        email="ada@example.com",
        first_name="Ada",
        tags=["vip"],
        status="subscribed",
        consent=CONSENT,
    )
    intruder = api_client_for(other_workspace)

    # when
    responses = [
        intruder.get(CONTACTS_URL),
        intruder.get(CONTACTS_URL, {"email": "ada@example.com"}),
        intruder.get(CONTACTS_URL, {"status": "subscribed"}),
        intruder.get(CONTACTS_URL, {"tag": "vip"}),
        intruder.get(CONTACTS_URL, {"search": "ada"}),
    ]

    # then
    for response in responses:
        assert response.status_code == 200
        assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_lists_show_only_the_own_workspace(workspace, other_workspace, api):
    # given
    ContactFactory(workspace=other_workspace, email="other@example.com")
    create(api, email="ada@example.com")

    # when
    response = api.get(CONTACTS_URL)

    # then
    assert emails_of(response) == ["ada@example.com"]


def test_post_of_an_address_known_in_another_workspace_creates_a_separate_contact(
    workspace, other_workspace, api, api_client_for
):
    # given the address in another workspace
    other = create(api_client_for(other_workspace), email="ada@example.com", first_name="Other")

    # when
    response = api.post(
        CONTACTS_URL, {"email": "Ada@example.com", "first_name": "Ada"}, format="json"
    )

    # then
    assert response.status_code == 201
    assert response.json()["id"] != other["id"]
    mine = Contact.objects.get(workspace=workspace)
    assert (mine.email, mine.first_name) == ("ada@example.com", "Ada")
    theirs = Contact.objects.get(workspace=other_workspace)
    assert (str(theirs.id), theirs.first_name) == (other["id"], "Other")


def test_erasure_in_one_workspace_does_not_suppress_in_another(
    workspace, other_workspace, api, api_client_for
):
    # given the address erased in the other workspace
    other_api = api_client_for(other_workspace)
    theirs = create(other_api, email="ada@example.com")
    other_api.delete(detail_url(theirs["id"]))

    # when this workspace subscribes the address with consent
    response = api.post(
        CONTACTS_URL,
        {"email": "ada@example.com", "status": "subscribed", "consent": CONSENT},
        format="json",
    )

    # then
    assert response.status_code == 201
    assert response.json()["status"] == "subscribed"


def test_tags_are_per_workspace(workspace, other_workspace, api, api_client_for):
    # given
    create(api, email="ada@example.com", tags=["vip"])

    # when
    create(api_client_for(other_workspace), email="grace@example.com", tags=["vip"])

    # then
    assert Tag.objects.filter(workspace=workspace, name="vip").count() == 1
    assert Tag.objects.filter(workspace=other_workspace, name="vip").count() == 1


# --- no mail -----------------------------------------------------------------------------


def test_the_api_never_sends_mail(workspace, api):
    # when a contact is created, subscribed, changed, unsubscribed and erased
    created = create(api, email="ada@example.com")
    api.patch(
        detail_url(created["id"]), {"status": "subscribed", "consent": CONSENT}, format="json"
    )
    api.patch(detail_url(created["id"]), {"first_name": "Ada", "tags": ["vip"]}, format="json")
    api.post(
        CONTACTS_URL,
        {"email": "grace@example.com", "status": "subscribed", "consent": CONSENT},
        format="json",
    )
    api.patch(detail_url(created["id"]), {"status": "unsubscribed"}, format="json")
    api.delete(detail_url(created["id"]))

    # then
    assert mail.outbox == []
