"""Role enforcement on every workspace page; the API keys page; the local outbox."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client, override_settings

from contacts.models import Contact
from contacts.services import contact_update
from core import services
from core.models import ApiKey, Invitation, Membership, OutboxMessage, Role, Workspace
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

ROLES = [Role.VIEWER, Role.EDITOR, Role.ADMIN, Role.OWNER]
NEW_KEY = re.compile(r'<pre class="secret" id="new-api-key">(fw_[0-9a-f]{8}_[A-Za-z0-9_-]+)</pre>')


@dataclass
class World:
    """A workspace with a contact, a second member, an open invitation and an API key."""

    workspace: Workspace
    contact: Contact
    other_member: Membership
    invitation: Invitation
    api_key: ApiKey


@pytest.fixture
def world(workspace, owner, member_of) -> World:
    contact = ContactFactory(workspace=workspace, email="ada@example.org", first_name="Ada")
    contact_update(contact=contact, changes={"tags": ["vip"], "attributes": {"city": "Berlin"}})
    invitation = services.invitation_create(actor=owner, email="invited@example.com", role="viewer")
    api_key, _raw_key = services.api_key_create(
        workspace=workspace, name="Shop", created_by=owner.user
    )
    return World(
        workspace=workspace,
        contact=contact,
        other_member=member_of(workspace, Role.EDITOR),
        invitation=invitation,
        api_key=api_key,
    )


def database_state() -> dict[str, list]:
    """Everything a workspace page could change, to compare before and after a refused POST."""
    return {
        "contacts": list(
            Contact.objects.order_by("pk").values_list(
                "pk", "email", "first_name", "last_name", "status", "attributes", "score"
            )
        ),
        "contact_tags": list(
            Contact.tags.through.objects.order_by("pk").values_list("contact_id", "tag__name")
        ),
        "memberships": list(
            Membership.objects.order_by("pk").values_list("pk", "user_id", "workspace_id", "role")
        ),
        "invitations": list(
            Invitation.objects.order_by("pk").values_list(
                "pk", "email", "role", "accepted_at", "revoked_at"
            )
        ),
        "api_keys": list(
            ApiKey.objects.order_by("pk").values_list("pk", "name", "revoked_at", "access")
        ),
        "workspaces": list(
            Workspace.objects.order_by("pk").values_list(
                "pk", "name", "sender_name", "postal_address", "timezone", "locale"
            )
        ),
    }


def contact_data(**overrides: str) -> dict[str, str]:
    data = {"email": "new@example.org", "first_name": "New", "status": "not_subscribed"}
    data.update(overrides)
    return data


def settings_data(workspace: Workspace, **overrides: object) -> dict[str, object]:
    data = {
        "name": "Renamed",
        "sender_name": "Renamed Team",
        "sender_email": "team@example.com",
        "postal_address": "Hauptstraße 2, 20095 Hamburg",
        "privacy_policy_url": "https://example.com/privacy",
        "timezone": "Europe/Berlin",
        "locale": "de",
        "frequency_cap_per_day": 1,
        "frequency_cap_per_week": 3,
        "send_rate_per_second": 20,
        "tracking_mode": "anonymous",
        "track_opens": "on",
        "soft_bounce_limit": 3,
    }
    data.update(overrides)
    return data


# Which page each role may see

GET_PAGES = {
    "dashboard": (lambda w: "/", Role.VIEWER),
    "contact list": (lambda w: "/contacts/", Role.VIEWER),
    "contact detail": (lambda w: f"/contacts/{w.contact.pk}/", Role.VIEWER),
    "members": (lambda w: "/settings/members/", Role.VIEWER),
    "outbox": (lambda w: "/outbox/", Role.VIEWER),
    "contact create": (lambda w: "/contacts/new/", Role.EDITOR),
    "contact edit": (lambda w: f"/contacts/{w.contact.pk}/edit/", Role.EDITOR),
    "contact delete": (lambda w: f"/contacts/{w.contact.pk}/delete/", Role.EDITOR),
    "settings": (lambda w: "/settings/", Role.ADMIN),
    "api keys": (lambda w: "/settings/api-keys/", Role.ADMIN),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", list(GET_PAGES))
def test_get_of_each_page_is_allowed_from_its_role_up(world, member_of, logged_in, role, page):
    # given
    url_of, required = GET_PAGES[page]
    client = logged_in(member_of(world.workspace, role))
    before = database_state()

    # when
    response = client.get(url_of(world))

    # then
    assert response.status_code == (200 if Role.allows(role, required) else 403)
    assert database_state() == before


@pytest.mark.parametrize("role", ROLES)
def test_head_follows_the_read_role(world, member_of, logged_in, role):
    # given
    client = logged_in(member_of(world.workspace, role))

    # when
    response = client.head("/settings/api-keys/")

    # then
    assert response.status_code == (200 if Role.allows(role, Role.ADMIN) else 403)


# Which change each role may make


def _reloaded(instance):
    instance.refresh_from_db()
    return instance


# action: (request of the world, least role allowed, what is true once it was done)
POST_ACTIONS = {
    "contact create": (
        lambda w: ("/contacts/new/", contact_data()),
        Role.EDITOR,
        lambda w: Contact.objects.filter(workspace=w.workspace, email="new@example.org").exists(),
    ),
    "contact edit": (
        lambda w: (
            f"/contacts/{w.contact.pk}/edit/",
            contact_data(email=w.contact.email, first_name="Changed", tags="other"),
        ),
        Role.EDITOR,
        lambda w: _reloaded(w.contact).first_name == "Changed",
    ),
    "contact delete": (
        lambda w: (f"/contacts/{w.contact.pk}/delete/", {}),
        Role.EDITOR,
        lambda w: not Contact.objects.filter(pk=w.contact.pk).exists(),
    ),
    "invite": (
        lambda w: ("/settings/members/", {"email": "someone@example.com", "role": "viewer"}),
        Role.ADMIN,
        lambda w: Invitation.objects.filter(email="someone@example.com", role="viewer").exists(),
    ),
    "invitation revoke": (
        lambda w: (f"/settings/invitations/{w.invitation.pk}/revoke/", {}),
        Role.ADMIN,
        lambda w: _reloaded(w.invitation).revoked_at is not None,
    ),
    "api key create": (
        lambda w: ("/settings/api-keys/", {"name": "CRM", "access": "read"}),
        Role.ADMIN,
        lambda w: ApiKey.objects.filter(workspace=w.workspace, name="CRM", access="read").exists(),
    ),
    "api key revoke": (
        lambda w: (f"/settings/api-keys/{w.api_key.pk}/revoke/", {}),
        Role.ADMIN,
        lambda w: _reloaded(w.api_key).revoked_at is not None,
    ),
    "role change": (
        lambda w: (f"/settings/members/{w.other_member.pk}/role/", {"role": "admin"}),
        Role.ADMIN,
        lambda w: _reloaded(w.other_member).role == Role.ADMIN,
    ),
    "settings": (
        lambda w: ("/settings/", settings_data(w.workspace)),
        Role.ADMIN,
        lambda w: _reloaded(w.workspace).name == "Renamed",
    ),
}


REFUSED_POSTS = [
    (role, action)
    for action, (_request_of, required, _done) in POST_ACTIONS.items()
    for role in ROLES
    if not Role.allows(role, required)
]
ALLOWED_POSTS = [
    (role, action)
    for action, (_request_of, required, _done) in POST_ACTIONS.items()
    for role in ROLES
    if Role.allows(role, required)
]


@pytest.mark.parametrize(("role", "action"), REFUSED_POSTS)
def test_post_of_each_change_is_refused_below_its_role_and_changes_nothing(
    world, member_of, logged_in, django_capture_on_commit_callbacks, role, action
):
    # given
    request_of, _required, done = POST_ACTIONS[action]
    client = logged_in(member_of(world.workspace, role))
    url, data = request_of(world)
    before = database_state()

    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(url, data)

    # then
    assert response.status_code == 403
    assert "Your role in this workspace does not allow this." in response.content.decode()
    assert database_state() == before
    assert not done(world)
    assert callbacks == []
    assert mail.outbox == []


@pytest.mark.parametrize(("role", "action"), ALLOWED_POSTS)
def test_post_of_each_change_is_done_from_its_role_up(
    world, member_of, logged_in, django_capture_on_commit_callbacks, role, action
):
    # given
    request_of, _required, done = POST_ACTIONS[action]
    client = logged_in(member_of(world.workspace, role))
    url, data = request_of(world)
    assert not done(world)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, data)

    # then: the API key page answers with the new key, every other change redirects
    assert response.status_code == (200 if action == "api key create" else 302)
    assert done(world)


def test_editor_creates_edits_and_erases_a_contact(world, member_of, logged_in):
    # given
    client = logged_in(member_of(world.workspace, Role.EDITOR))

    # when
    created = client.post("/contacts/new/", contact_data())
    contact = Contact.objects.get(email="new@example.org")
    edited = client.post(
        f"/contacts/{contact.pk}/edit/",
        contact_data(email=contact.email, first_name="Renamed", tags="lead"),
    )
    contact.refresh_from_db()
    name_after_edit = contact.first_name
    tags_after_edit = sorted(contact.tags.values_list("name", flat=True))
    erased = client.post(f"/contacts/{contact.pk}/delete/")

    # then
    assert created.status_code == edited.status_code == erased.status_code == 302
    assert created["Location"] == f"/contacts/{contact.pk}/"
    assert name_after_edit == "Renamed"
    assert tags_after_edit == ["lead"]
    assert erased["Location"] == "/contacts/"
    assert not Contact.objects.filter(pk=contact.pk).exists()


def test_admin_changes_a_role_and_saves_settings(world, member_of, logged_in):
    # given
    client = logged_in(member_of(world.workspace, Role.ADMIN))

    # when
    role_url = f"/settings/members/{world.other_member.pk}/role/"
    role_change = client.post(role_url, {"role": "viewer"})
    settings_save = client.post("/settings/", settings_data(world.workspace))

    # then
    assert role_change.status_code == settings_save.status_code == 302
    world.other_member.refresh_from_db()
    assert world.other_member.role == Role.VIEWER
    world.workspace.refresh_from_db()
    assert (
        world.workspace.name,
        world.workspace.postal_address,
        world.workspace.timezone,
        world.workspace.locale,
        world.workspace.tracking_mode,
        world.workspace.track_opens,
        world.workspace.track_clicks,
    ) == (
        "Renamed",
        "Hauptstraße 2, 20095 Hamburg",
        "Europe/Berlin",
        "de",
        "anonymous",
        True,
        False,
    )


def test_settings_with_a_weekly_cap_below_the_daily_cap_shows_the_error(
    world, member_of, logged_in
):
    # given
    client = logged_in(member_of(world.workspace, Role.ADMIN))
    before = database_state()

    # when
    response = client.post(
        "/settings/",
        settings_data(world.workspace, frequency_cap_per_day=5, frequency_cap_per_week=2),
    )

    # then
    assert response.status_code == 200
    assert "The weekly cap must be at least the daily cap." in response.content.decode()
    assert database_state() == before


def test_a_viewer_cannot_remove_another_member_but_can_leave(world, member_of, logged_in):
    # given
    viewer = member_of(world.workspace, Role.VIEWER)
    client = logged_in(viewer)
    before = database_state()

    # when
    refused = client.post(f"/settings/members/{world.other_member.pk}/remove/", follow=True)

    # then
    assert "Your role does not allow this." in refused.content.decode()
    assert database_state() == before

    # when
    left = client.post(f"/settings/members/{viewer.pk}/remove/")

    # then
    assert left.status_code == 302
    assert not Membership.objects.filter(pk=viewer.pk).exists()
    assert Membership.objects.filter(pk=world.other_member.pk).exists()


def test_an_admin_of_another_workspace_cannot_touch_this_workspaces_members_and_keys(
    world, other_workspace, member_of, logged_in
):
    # given
    client = logged_in(member_of(other_workspace, Role.OWNER))
    before = database_state()

    # when
    responses = [
        client.post(f"/settings/members/{world.other_member.pk}/role/", {"role": "viewer"}),
        client.post(f"/settings/members/{world.other_member.pk}/remove/"),
        client.post(f"/settings/api-keys/{world.api_key.pk}/revoke/"),
        client.post(f"/settings/invitations/{world.invitation.pk}/revoke/"),
    ]

    # then
    assert [response.status_code for response in responses] == [404, 404, 404, 404]
    assert database_state() == before


# API keys page


def test_a_new_api_key_is_shown_once_and_only_its_digest_is_stored(
    workspace, owner, member_of, logged_in
):
    # given
    client = logged_in(member_of(workspace, Role.ADMIN))

    # when
    response = client.post("/settings/api-keys/", {"name": "Shopify shop", "access": "full"})

    # then
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    found = NEW_KEY.search(response.content.decode())
    assert found is not None
    raw_key = found.group(1)
    api_key = ApiKey.objects.get()
    assert (api_key.name, api_key.access, api_key.workspace) == ("Shopify shop", "full", workspace)
    assert raw_key.startswith(f"fw_{api_key.prefix}_")
    assert api_key.key_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    stored = ApiKey.objects.values_list("name", "prefix", "key_hash").get()
    assert all(raw_key not in value for value in stored)

    # when: the page is loaded again
    reloaded = client.get("/settings/api-keys/")

    # then
    content = reloaded.content.decode()
    assert raw_key not in content
    assert 'id="new-api-key"' not in content
    assert f"fw_{api_key.prefix}_…" in content
    assert reloaded.get("Cache-Control") is None


def test_a_revoked_api_key_fails_on_the_api(workspace, owner, member_of, logged_in):
    # given
    client = logged_in(member_of(workspace, Role.ADMIN))
    response = client.post("/settings/api-keys/", {"name": "Shopify shop", "access": "full"})
    raw_key = NEW_KEY.search(response.content.decode()).group(1)
    api = Client(headers={"Authorization": f"Bearer {raw_key}"})
    assert api.get("/api/v1/contacts/").status_code == 200
    api_key = ApiKey.objects.get()

    # when
    revoke = client.post(f"/settings/api-keys/{api_key.pk}/revoke/", follow=True)

    # then
    assert revoke.redirect_chain == [("/settings/api-keys/", 302)]
    assert "API key Shopify shop revoked." in revoke.content.decode()
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    refused = api.get("/api/v1/contacts/")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Invalid or revoked API key."}


def test_the_keys_page_shows_when_a_key_was_last_used(workspace, owner, member_of, logged_in):
    # given
    client = logged_in(member_of(workspace, Role.ADMIN))
    with time_machine.travel("2025-03-01 12:00:00+00:00", tick=False):
        response = client.post("/settings/api-keys/", {"name": "Shopify shop", "access": "full"})
        raw_key = NEW_KEY.search(response.content.decode()).group(1)
        unused = client.get("/settings/api-keys/")

    # when
    with time_machine.travel("2025-03-01 12:10:00+00:00", tick=False):
        Client(headers={"Authorization": f"Bearer {raw_key}"}).get("/api/v1/contacts/")
    with time_machine.travel("2025-03-01 12:15:00+00:00", tick=False):
        used = client.get("/settings/api-keys/")

    # then
    assert "never" in unused.content.decode()
    assert ApiKey.objects.get().last_used_at.isoformat() == "2025-03-01T12:10:00+00:00"
    content = used.content.decode()
    assert "5\xa0minutes ago" in content
    assert "never" not in content


# Outbox


@pytest.fixture
def outbox_mail(workspace, owner, logged_in, django_capture_on_commit_callbacks, client):
    """An invitation sent through the local outbox transport; the client is the owner's."""
    with override_settings(EMAIL_BACKEND="core.mail.OutboxEmailBackend"):
        logged_in(owner)
        with django_capture_on_commit_callbacks(execute=True):
            client.post("/settings/members/", {"email": "new@example.com", "role": "editor"})
    return OutboxMessage.objects.get()


def test_a_mail_sent_through_the_outbox_is_stored_with_its_workspace(workspace, outbox_mail):
    # then
    assert outbox_mail.workspace == workspace
    assert outbox_mail.to == ["new@example.com"]
    assert outbox_mail.cc == outbox_mail.bcc == []
    assert outbox_mail.from_email == "Funnelwerk <noreply@funnelwerk.local>"
    assert outbox_mail.subject == f"You are invited to {workspace.name} on Funnelwerk"
    assert "http://testserver/invitations/" in outbox_mail.text_body
    assert "http://testserver/invitations/" in outbox_mail.html_body
    assert outbox_mail.headers["Subject"] == outbox_mail.subject
    assert outbox_mail.headers["To"] == "new@example.com"
    assert mail.outbox == []


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_admins_of_the_workspace_see_the_mail_in_the_outbox(
    workspace, outbox_mail, member_of, logged_in, role
):
    # given
    client = logged_in(member_of(workspace, role))

    # when
    response = client.get("/outbox/")

    # then
    assert response.status_code == 200
    assert list(response.context["page"]) == [outbox_mail]
    content = response.content.decode()
    assert f'<a href="/outbox/{outbox_mail.pk}/">{outbox_mail.subject}</a>' in content


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR])
def test_members_below_admin_see_no_mail_in_the_outbox(
    workspace, outbox_mail, member_of, logged_in, role
):
    # given
    client = logged_in(member_of(workspace, role))

    # when
    listing = client.get("/outbox/")
    detail = client.get(f"/outbox/{outbox_mail.pk}/")
    html = client.get(f"/outbox/{outbox_mail.pk}/html/")

    # then
    assert listing.status_code == 200
    assert list(listing.context["page"]) == []
    assert outbox_mail.subject not in listing.content.decode()
    assert detail.status_code == 404
    assert html.status_code == 404


def test_a_member_of_another_workspace_cannot_see_the_mail(
    other_workspace, outbox_mail, member_of, logged_in
):
    # given
    client = logged_in(member_of(other_workspace, Role.OWNER))

    # when
    listing = client.get("/outbox/")
    detail = client.get(f"/outbox/{outbox_mail.pk}/")
    html = client.get(f"/outbox/{outbox_mail.pk}/html/")

    # then
    assert list(listing.context["page"]) == []
    assert outbox_mail.subject not in listing.content.decode()
    assert detail.status_code == 404
    assert html.status_code == 404


def test_the_outbox_detail_page_shows_subject_text_and_headers(
    workspace, owner, outbox_mail, client
):
    # when: the owner's client from the fixture
    response = client.get(f"/outbox/{outbox_mail.pk}/")

    # then
    assert response.status_code == 200
    content = response.content.decode()
    assert f"<h1>{outbox_mail.subject}</h1>" in content
    accept_url = re.search(r"http://testserver/invitations/[^/\s]+/", outbox_mail.text_body)
    assert f'<a href="{accept_url.group(0)}"' in content
    assert "Accept the invitation here:" in content
    assert f"<tr><th>Subject</th><td><code>{outbox_mail.subject}</code></td></tr>" in content
    assert "<tr><th>To</th><td><code>new@example.com</code></td></tr>" in content
    assert f'src="/outbox/{outbox_mail.pk}/html/"' in content


def test_the_outbox_html_part_is_served_in_a_sandbox(workspace, owner, outbox_mail, client):
    # when
    response = client.get(f"/outbox/{outbox_mail.pk}/html/")

    # then
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Security-Policy"] == (
        "sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
        "img-src * data:; style-src 'unsafe-inline'; font-src *"
    )
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert response.content.decode() == '<base target="_blank">' + outbox_mail.html_body


def test_outbox_mail_older_than_a_day_is_still_listed_with_its_age(
    workspace, owner, outbox_mail, client
):
    # when
    with time_machine.travel(outbox_mail.created_at + timedelta(days=1, hours=2), tick=False):
        response = client.get("/outbox/")

    # then
    assert "1\xa0day, 2\xa0hours ago" in response.content.decode()
