"""Contact pages: list, search, filters, pages, htmx fragment, create, edit, erase, isolation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from contacts.models import (
    ConsentKind,
    ConsentRecord,
    Contact,
    ContactStatus,
    Suppression,
    SuppressionReason,
)
from contacts.services import contact_update
from core.models import Role
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
def editor(workspace, owner, member_of):
    return member_of(workspace, Role.EDITOR)


def listed_emails(response) -> set[str]:
    return {contact.email for contact in response.context["page"]}


def contact_data(**overrides: str) -> dict[str, str]:
    data = {
        "email": "new@example.org",
        "first_name": "",
        "last_name": "",
        "locale": "",
        "timezone": "",
        "tags": "",
        "attributes": "",
        "source": "",
        "score": "0",
        "status": ContactStatus.NOT_SUBSCRIBED,
        "consent_text": "",
        "consent_at": "",
    }
    data.update(overrides)
    return data


def edit_data(contact: Contact, **overrides: str) -> dict[str, str]:
    current = {
        "email": contact.email,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "status": contact.status,
    }
    return contact_data(**{**current, **overrides})


def contact_state() -> list[tuple]:
    return list(
        Contact.objects.order_by("pk").values_list(
            "pk", "workspace_id", "email", "first_name", "last_name", "status", "attributes"
        )
    )


# List, search, filters, pages


def test_the_list_shows_the_workspaces_contacts_only(workspace, other_workspace, owner, logged_in):
    # given
    ContactFactory(workspace=workspace, email="ada@example.org")
    ContactFactory(workspace=workspace, email="grace@example.org")
    ContactFactory(workspace=other_workspace, email="foreign@example.org")
    client = logged_in(owner)

    # when
    response = client.get("/contacts/")

    # then
    assert response.status_code == 200
    assert listed_emails(response) == {"ada@example.org", "grace@example.org"}
    content = response.content.decode()
    assert "ada@example.org" in content
    assert "foreign@example.org" not in content
    assert "2 contacts" in content


def test_search_finds_contacts_by_email_and_by_name(workspace, owner, logged_in):
    # given
    ContactFactory(workspace=workspace, email="ada@lovelace.org", first_name="Ada", last_name="L")
    ContactFactory(
        workspace=workspace, email="grace@navy.mil", first_name="Grace", last_name="Hopper"
    )
    ContactFactory(workspace=workspace, email="alan@turing.org", first_name="Alan", last_name="T")
    client = logged_in(owner)

    # when
    by_email = client.get("/contacts/", {"search": "LOVELACE"})
    by_first_name = client.get("/contacts/", {"search": "grace"})
    by_last_name = client.get("/contacts/", {"search": "hopp"})
    by_nothing = client.get("/contacts/", {"search": "zuse"})

    # then
    assert listed_emails(by_email) == {"ada@lovelace.org"}
    assert listed_emails(by_first_name) == {"grace@navy.mil"}
    assert listed_emails(by_last_name) == {"grace@navy.mil"}
    assert listed_emails(by_nothing) == set()
    assert "No contacts match." in by_nothing.content.decode()


def test_the_list_filters_by_status_and_by_tag(workspace, owner, logged_in):
    # given
    ContactFactory(workspace=workspace, email="sub@example.org", status=ContactStatus.SUBSCRIBED)
    vip = ContactFactory(workspace=workspace, email="vip@example.org")
    contact_update(contact=vip, changes={"tags": ["vip", "lead"]})
    lead = ContactFactory(workspace=workspace, email="lead@example.org")
    contact_update(contact=lead, changes={"tags": ["lead"]})
    client = logged_in(owner)

    # when
    subscribed = client.get("/contacts/", {"status": "subscribed"})
    tagged_vip = client.get("/contacts/", {"tag": "vip"})
    tagged_lead = client.get("/contacts/", {"tag": "lead"})
    both = client.get("/contacts/", {"tag": "lead", "status": "not_subscribed", "search": "vip"})

    # then
    assert listed_emails(subscribed) == {"sub@example.org"}
    assert listed_emails(tagged_vip) == {"vip@example.org"}
    assert listed_emails(tagged_lead) == {"vip@example.org", "lead@example.org"}
    assert listed_emails(both) == {"vip@example.org"}


def test_an_unknown_filter_value_is_ignored(workspace, owner, logged_in):
    # given
    ContactFactory(workspace=workspace, email="ada@example.org")
    client = logged_in(owner)

    # when
    response = client.get("/contacts/", {"status": "deleted", "ordering": "password"})

    # then
    assert response.status_code == 200
    assert listed_emails(response) == {"ada@example.org"}


def test_the_list_shows_25_contacts_a_page(workspace, owner, logged_in):
    # given: 30 contacts, one a minute
    start = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    for minute in range(30):
        with time_machine.travel(start + timedelta(minutes=minute), tick=False):
            ContactFactory(workspace=workspace, email=f"c{minute:02}@example.org")
    client = logged_in(owner)

    # when
    first = client.get("/contacts/")
    second = client.get("/contacts/", {"page": "2"})

    # then: newest first
    assert [c.email for c in first.context["page"]] == [
        f"c{minute:02}@example.org" for minute in range(29, 4, -1)
    ]
    assert [c.email for c in second.context["page"]] == [
        f"c{minute:02}@example.org" for minute in range(4, -1, -1)
    ]
    assert "Page 1 of 2" in first.content.decode()
    assert '<a class="button small" href="?page=2">Next</a>' in first.content.decode()
    assert "Page 2 of 2" in second.content.decode()


def test_the_page_links_keep_the_filters(workspace, owner, logged_in):
    # given
    for number in range(26):
        ContactFactory(workspace=workspace, email=f"c{number:02}@example.org")
    ContactFactory(workspace=workspace, email="other@example.net")
    client = logged_in(owner)

    # when
    response = client.get("/contacts/", {"search": "example.org"})

    # then
    assert len(response.context["page"]) == 25
    assert response.context["page"].paginator.count == 26
    assert 'href="?search=example.org&amp;page=2"' in response.content.decode()


def test_an_htmx_request_gets_only_the_table_fragment(workspace, owner, logged_in):
    # given
    ContactFactory(workspace=workspace, email="ada@example.org")
    client = logged_in(owner)

    # when
    response = client.get("/contacts/", {"search": "ada"}, headers={"HX-Request": "true"})

    # then
    assert response.status_code == 200
    assert [template.name for template in response.templates] == [
        "contacts/_contact_table.html",
        "includes/pagination.html",
    ]
    content = response.content.decode()
    assert content.startswith('<div class="card flush">')
    assert "<html" not in content
    assert "<form" not in content
    assert 'data-testid="contact-table"' in content
    assert "ada@example.org" in content


def test_a_normal_request_gets_the_whole_page(workspace, owner, logged_in):
    # given
    client = logged_in(owner)

    # when
    response = client.get("/contacts/")

    # then
    content = response.content.decode()
    assert content.startswith("<!doctype html>")
    assert '<div id="contact-table">' in content


# Create


def test_create_normalises_the_email_to_lower_case(workspace, editor, logged_in):
    # given
    client = logged_in(editor)

    # when
    response = client.post(
        "/contacts/new/",
        contact_data(email="  Ada.Lovelace@Example.ORG ", first_name="Ada", tags="vip, lead"),
    )

    # then
    contact = Contact.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/contacts/{contact.pk}/"
    assert contact.workspace == workspace
    assert contact.email == "ada.lovelace@example.org"
    assert contact.first_name == "Ada"
    assert contact.status == ContactStatus.NOT_SUBSCRIBED
    assert sorted(contact.tags.values_list("name", flat=True)) == ["lead", "vip"]
    assert ConsentRecord.objects.count() == 0


def test_create_with_an_invalid_email_shows_the_error_and_creates_nothing(
    workspace, editor, logged_in
):
    # given
    client = logged_in(editor)

    # when
    response = client.post("/contacts/new/", contact_data(email="not-an-email"))

    # then
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "email": ["Enter a valid email address: An email address must have an @-sign."]
    }
    assert (
        '<small class="error">Enter a valid email address: An email address must have an '
        "@-sign.</small>" in response.content.decode()
    )
    assert Contact.objects.count() == 0


def test_create_as_subscribed_without_consent_text_shows_the_error_and_creates_nothing(
    workspace, editor, logged_in
):
    # given
    client = logged_in(editor)

    # when
    response = client.post(
        "/contacts/new/",
        contact_data(status=ContactStatus.SUBSCRIBED, consent_at="2025-03-01T10:30"),
    )

    # then
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "consent_text": ["Give the consent text to mark as subscribed."]
    }
    assert "Give the consent text to mark as subscribed." in response.content.decode()
    assert Contact.objects.count() == 0
    assert ConsentRecord.objects.count() == 0


def test_create_as_subscribed_without_consent_time_shows_the_error_and_creates_nothing(
    workspace, editor, logged_in
):
    # given
    client = logged_in(editor)

    # when
    response = client.post(
        "/contacts/new/",
        contact_data(status=ContactStatus.SUBSCRIBED, consent_text="Yes, send me news."),
    )

    # then
    assert response.status_code == 200
    assert response.context["form"].errors == {"consent_at": ["Give the time consent was given."]}
    assert Contact.objects.count() == 0


def test_create_as_subscribed_with_consent_text_and_time_records_the_consent(
    workspace, editor, logged_in
):
    # given
    client = logged_in(editor)

    # when
    response = client.post(
        "/contacts/new/",
        contact_data(
            status=ContactStatus.SUBSCRIBED,
            consent_text="Yes, send me the monthly newsletter.",
            consent_at="2025-03-01T10:30",
        ),
    )

    # then
    assert response.status_code == 302
    contact = Contact.objects.get()
    assert contact.status == ContactStatus.SUBSCRIBED
    assert contact.confirmed_at.isoformat() == "2025-03-01T10:30:00+00:00"
    record = ConsentRecord.objects.get()
    assert record.contact == contact
    assert record.workspace_id == workspace.pk
    assert record.kind == ConsentKind.RECORDED
    assert record.occurred_at.isoformat() == "2025-03-01T10:30:00+00:00"
    assert record.consent_text.text == "Yes, send me the monthly newsletter."
    assert record.recorded_by == f"user:{editor.user.pk}"
    assert record.privacy_policy_url == workspace.privacy_policy_url
    detail = client.get(f"/contacts/{contact.pk}/")
    assert "Yes, send me the monthly newsletter." in detail.content.decode()


def test_the_consent_time_is_read_in_the_workspaces_time_zone(workspace, editor, logged_in):
    # given
    workspace.timezone = "Europe/Berlin"
    workspace.save(update_fields=["timezone"])
    client = logged_in(editor)

    # when: 10:30 in Berlin in winter
    response = client.post(
        "/contacts/new/",
        contact_data(
            status=ContactStatus.SUBSCRIBED,
            consent_text="Yes, send me the monthly newsletter.",
            consent_at="2025-03-01T10:30",
        ),
    )

    # then: is 09:30 UTC
    assert response.status_code == 302
    record = ConsentRecord.objects.get()
    assert record.occurred_at.isoformat() == "2025-03-01T09:30:00+00:00"
    assert Contact.objects.get().confirmed_at.isoformat() == "2025-03-01T09:30:00+00:00"


def test_create_of_an_existing_address_updates_it(workspace, editor, logged_in):
    # given
    existing = ContactFactory(workspace=workspace, email="ada@example.org", first_name="Old")
    client = logged_in(editor)

    # when
    response = client.post(
        "/contacts/new/", contact_data(email="ADA@example.org", first_name="New"), follow=True
    )

    # then
    assert response.redirect_chain == [(f"/contacts/{existing.pk}/", 302)]
    assert "ada@example.org already existed; it was updated." in response.content.decode()
    assert Contact.objects.count() == 1
    existing.refresh_from_db()
    assert existing.first_name == "New"


# Edit


def test_edit_replaces_the_tags_and_removes_dropped_attribute_keys(workspace, editor, logged_in):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org", first_name="Ada")
    contact_update(
        contact=contact,
        changes={"tags": ["vip", "lead"], "attributes": {"city": "Berlin", "plan": "pro"}},
    )
    client = logged_in(editor)

    # when
    response = client.post(
        f"/contacts/{contact.pk}/edit/",
        edit_data(contact, tags="lead, customer", attributes='{"city": "Hamburg", "seats": 3}'),
    )

    # then
    assert response.status_code == 302
    assert response["Location"] == f"/contacts/{contact.pk}/"
    contact.refresh_from_db()
    assert sorted(contact.tags.values_list("name", flat=True)) == ["customer", "lead"]
    assert contact.attributes == {"city": "Hamburg", "seats": 3}


def test_edit_with_an_emptied_attributes_field_removes_all_attributes(workspace, editor, logged_in):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org")
    contact_update(contact=contact, changes={"attributes": {"city": "Berlin"}})
    client = logged_in(editor)

    # when
    response = client.post(f"/contacts/{contact.pk}/edit/", edit_data(contact, attributes=""))

    # then
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.attributes == {}


def test_the_edit_form_shows_the_current_tags_and_attributes(workspace, editor, logged_in):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org")
    contact_update(contact=contact, changes={"tags": ["vip", "lead"], "attributes": {"a": 1}})
    client = logged_in(editor)

    # when
    response = client.get(f"/contacts/{contact.pk}/edit/")

    # then
    form = response.context["form"]
    assert form["tags"].value() == "lead, vip"
    assert form["attributes"].value() == '{\n  "a": 1\n}'


def test_edit_with_bad_json_shows_a_readable_error_and_changes_nothing(
    workspace, editor, logged_in
):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org", first_name="Ada")
    contact_update(contact=contact, changes={"tags": ["vip"], "attributes": {"city": "Berlin"}})
    client = logged_in(editor)
    before = contact_state()

    # when
    response = client.post(
        f"/contacts/{contact.pk}/edit/",
        edit_data(contact, first_name="Changed", tags="other", attributes='{"city": }'),
    )

    # then
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "attributes": ["This is not valid JSON (line 1): Expecting value"]
    }
    assert "This is not valid JSON (line 1): Expecting value" in response.content.decode()
    assert contact_state() == before
    assert list(contact.tags.values_list("name", flat=True)) == ["vip"]


def test_edit_with_a_json_list_or_a_bad_key_shows_the_error(workspace, editor, logged_in):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org")
    client = logged_in(editor)
    before = contact_state()

    # when
    as_list = client.post(f"/contacts/{contact.pk}/edit/", edit_data(contact, attributes="[1]"))
    bad_key = client.post(
        f"/contacts/{contact.pk}/edit/", edit_data(contact, attributes='{"1st": true}')
    )

    # then
    assert as_list.context["form"].errors == {"attributes": ["Attributes must be a JSON object."]}
    assert bad_key.context["form"].errors == {
        "attributes": ["Attribute names use letters, digits and _ and start with a letter: 1st"]
    }
    assert contact_state() == before


def test_edit_cannot_change_the_email(workspace, editor, logged_in):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org")
    client = logged_in(editor)

    # when
    response = client.post(
        f"/contacts/{contact.pk}/edit/",
        {**edit_data(contact), "email": "someone.else@example.org"},
    )

    # then
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.email == "ada@example.org"
    assert not Contact.objects.filter(email="someone.else@example.org").exists()


# Erase


def test_the_erase_page_asks_first_and_changes_nothing(workspace, editor, logged_in):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org")
    client = logged_in(editor)

    # when
    response = client.get(f"/contacts/{contact.pk}/delete/")

    # then
    assert response.status_code == 200
    assert "Erase all personal data of <strong>ada@example.org</strong>?" in (
        response.content.decode()
    )
    assert Contact.objects.filter(pk=contact.pk).exists()
    assert Suppression.objects.count() == 0


def test_erase_removes_the_contact_and_leaves_a_suppression(workspace, editor, logged_in):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org")
    contact_update(contact=contact, changes={"tags": ["vip"]})
    other = ContactFactory(workspace=workspace, email="grace@example.org")
    client = logged_in(editor)

    # when
    response = client.post(f"/contacts/{contact.pk}/delete/", follow=True)

    # then
    assert response.redirect_chain == [("/contacts/", 302)]
    assert (
        "ada@example.org was erased. The address stays suppressed and will not be mailed again."
        in response.content.decode()
    )
    assert list(Contact.objects.all()) == [other]
    suppression = Suppression.objects.get()
    assert suppression.workspace == workspace
    assert suppression.email_hash == hashlib.sha256(b"ada@example.org").hexdigest()
    assert suppression.reason == SuppressionReason.ERASED
    assert client.get(f"/contacts/{contact.pk}/").status_code == 404


def test_an_erased_address_cannot_be_added_back_as_subscribed(workspace, editor, logged_in):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org")
    client = logged_in(editor)
    client.post(f"/contacts/{contact.pk}/delete/")

    # when
    response = client.post(
        "/contacts/new/",
        contact_data(
            email="Ada@example.org",
            status=ContactStatus.SUBSCRIBED,
            consent_text="Yes, send me the monthly newsletter.",
            consent_at="2025-03-01T10:30",
        ),
    )

    # then
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "status": [
            "This address unsubscribed, bounced or complained; only a new double opt-in "
            "started by the person can subscribe it again."
        ]
    }
    assert Contact.objects.count() == 0
    assert ConsentRecord.objects.count() == 0
    assert list(Suppression.objects.values_list("reason", flat=True)) == [SuppressionReason.ERASED]


# Workspace isolation


@pytest.mark.parametrize(
    "path", ["/contacts/{pk}/", "/contacts/{pk}/edit/", "/contacts/{pk}/delete/"]
)
def test_a_member_of_another_workspace_gets_404_for_this_workspaces_contact(
    workspace, other_workspace, member_of, logged_in, path
):
    # given
    contact = ContactFactory(workspace=workspace, email="ada@example.org", first_name="Ada")
    client = logged_in(member_of(other_workspace, Role.OWNER))
    before = contact_state()

    # when
    page = client.get(path.format(pk=contact.pk))
    post = client.post(path.format(pk=contact.pk), edit_data(contact, first_name="Stolen"))

    # then
    assert page.status_code == 404
    assert post.status_code == 404
    assert "ada@example.org" not in page.content.decode()
    assert contact_state() == before
    assert Suppression.objects.count() == 0


def test_a_member_of_another_workspace_never_sees_the_contact_in_list_or_search(
    workspace, other_workspace, member_of, logged_in
):
    # given
    ContactFactory(workspace=workspace, email="ada@example.org", first_name="Ada")
    ContactFactory(workspace=other_workspace, email="own@example.org", first_name="Own")
    client = logged_in(member_of(other_workspace, Role.OWNER))

    # when
    listing = client.get("/contacts/")
    search = client.get("/contacts/", {"search": "ada"})
    fragment = client.get("/contacts/", {"search": "ada@"}, headers={"HX-Request": "true"})

    # then
    assert listed_emails(listing) == {"own@example.org"}
    assert listed_emails(search) == set()
    for response in (listing, search, fragment):
        assert "ada@example.org" not in response.content.decode()


def test_creating_an_address_that_exists_in_another_workspace_makes_a_separate_contact(
    workspace, other_workspace, member_of, logged_in
):
    # given
    foreign = ContactFactory(workspace=workspace, email="ada@example.org", first_name="Ada")
    client = logged_in(member_of(other_workspace, Role.EDITOR))

    # when
    response = client.post("/contacts/new/", contact_data(email="ada@example.org", first_name="X"))

    # then
    assert response.status_code == 302
    own = Contact.objects.get(workspace=other_workspace)
    assert own.pk != foreign.pk
    assert own.first_name == "X"
    foreign.refresh_from_db()
    assert foreign.first_name == "Ada"


# Escaping


def test_user_data_is_escaped_in_the_list_and_the_detail(workspace, owner, logged_in):
    # given
    contact = ContactFactory(
        workspace=workspace, email="ada@example.org", first_name=SCRIPT, last_name="", source=SCRIPT
    )
    contact_update(
        contact=contact,
        changes={"tags": ["<b>vip</b>"], "attributes": {"note": SCRIPT}},
    )
    client = logged_in(owner)

    # when
    listing = client.get("/contacts/").content.decode()
    search = client.get("/contacts/", {"search": "script"}).content.decode()
    fragment = client.get("/contacts/", headers={"HX-Request": "true"}).content.decode()
    detail = client.get(f"/contacts/{contact.pk}/").content.decode()
    edit = client.get(f"/contacts/{contact.pk}/edit/").content.decode()

    # then
    for html in (listing, search, fragment, detail, edit):
        assert SCRIPT not in html
        assert "<b>vip</b>" not in html
    for html in (listing, search, fragment):
        assert f"<td>{ESCAPED_SCRIPT}</td>" in html
        assert '<span class="tag">&lt;b&gt;vip&lt;/b&gt;</span>' in html
    assert f"<h1>{ESCAPED_SCRIPT} " in detail
    assert f"<dt>Source</dt><dd>{ESCAPED_SCRIPT}</dd>" in detail
    assert f"<dt>note</dt><dd>{ESCAPED_SCRIPT}</dd>" in detail
    assert '<span class="tag">&lt;b&gt;vip&lt;/b&gt;</span>' in detail


def test_the_search_term_is_escaped_in_the_filter_form(workspace, owner, logged_in):
    # given
    client = logged_in(owner)

    # when
    response = client.get("/contacts/", {"search": '"><script>alert(1)</script>'})

    # then
    content = response.content.decode()
    assert SCRIPT not in content
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in content
