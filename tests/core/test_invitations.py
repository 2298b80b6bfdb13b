"""Inviting people into a workspace, accepting invitations, and the owner rules of members."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
import time_machine
from django.contrib.auth import SESSION_KEY
from django.core import mail, signing
from django.test import Client

from core.middleware import SESSION_WORKSPACE_KEY
from core.models import Invitation, Membership, Role, User
from tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

INVITATION_LINK = re.compile(r"http://testserver(/invitations/[^/\s\"]+/)")
NEW_PASSWORD = "purple elephants dance at noon"


@pytest.fixture
def admin(workspace, owner, member_of):
    return member_of(workspace, Role.ADMIN)


@pytest.fixture
def invite(django_capture_on_commit_callbacks):
    """invite(client, email, role) -> the response; the mail task runs when the request commits."""

    def post(client: Client, email: str, role: str = Role.EDITOR):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post("/settings/members/", {"email": email, "role": role})

    return post


def link_in(message: mail.EmailMessage) -> str:
    found = INVITATION_LINK.search(message.body)
    assert found is not None, message.body
    return found.group(1)


def invitation_state() -> list[tuple]:
    return list(
        Invitation.objects.order_by("created_at").values_list(
            "email", "role", "accepted_at", "revoked_at", "expires_at"
        )
    )


def membership_state() -> list[tuple]:
    return list(
        Membership.objects.order_by("pk").values_list("user__email", "workspace_id", "role")
    )


def assert_shows_the_invalid_invitation_page(response) -> None:
    assert response.status_code == 404
    assert response.templates[0].name == "core/invitation_invalid.html"
    assert "This invitation does not work" in response.content.decode()


# Inviting


def test_an_admin_invites_an_email_with_a_role_and_the_mail_carries_the_link(
    workspace, admin, logged_in, invite
):
    # given
    client = logged_in(admin)

    # when
    with time_machine.travel("2025-03-01 12:00:00+00:00", tick=False):
        response = invite(client, "New.Person@Example.com", Role.EDITOR)

    # then
    assert response.status_code == 302
    assert response["Location"] == "/settings/members/"
    invitation = Invitation.objects.get()
    assert invitation.workspace == workspace
    assert invitation.email == "new.person@example.com"
    assert invitation.role == Role.EDITOR
    assert invitation.invited_by == admin.user
    assert invitation.accepted_at is None
    assert invitation.revoked_at is None
    assert invitation.created_at.isoformat() == "2025-03-01T12:00:00+00:00"
    assert invitation.expires_at.isoformat() == "2025-03-08T12:00:00+00:00"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["new.person@example.com"]
    assert message.subject == f"You are invited to {workspace.name} on Funnelwerk"
    link = link_in(message)
    html_body, mimetype = message.alternatives[0]
    assert mimetype == "text/html"
    assert f'href="http://testserver{link}"' in html_body
    with time_machine.travel("2025-03-01 12:00:05+00:00", tick=False):
        page = client.get("/settings/members/")
    assert "new.person@example.com · Editor" in page.content.decode()


def test_the_invitation_mail_is_sent_only_when_the_request_commits(
    workspace, admin, logged_in, django_capture_on_commit_callbacks
):
    # given
    client = logged_in(admin)

    # when: the request's transaction has not committed yet
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post("/settings/members/", {"email": "new@example.com", "role": Role.EDITOR})

    # then
    assert Invitation.objects.count() == 1
    assert len(callbacks) == 1
    assert mail.outbox == []

    # when: it commits
    callbacks[0]()

    # then
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["new@example.com"]


def test_inviting_someone_already_a_member_is_refused(
    workspace, admin, member_of, logged_in, invite
):
    # given
    editor = member_of(workspace, Role.EDITOR)
    client = logged_in(admin)
    before = membership_state()

    # when: the member's address in another spelling
    response = invite(client, editor.user.email.upper(), Role.ADMIN)

    # then
    assert response.status_code == 200
    assert "This person is already a member." in response.content.decode()
    assert Invitation.objects.count() == 0
    assert mail.outbox == []
    assert membership_state() == before


def test_an_editor_cannot_invite(workspace, owner, member_of, logged_in, invite):
    # given
    editor = member_of(workspace, Role.EDITOR)
    client = logged_in(editor)

    # when
    response = invite(client, "new@example.com", Role.VIEWER)

    # then
    assert response.status_code == 403
    assert Invitation.objects.count() == 0
    assert mail.outbox == []


def test_an_admin_cannot_invite_an_owner(workspace, admin, logged_in, invite):
    # given
    client = logged_in(admin)

    # when
    response = invite(client, "new@example.com", Role.OWNER)

    # then
    assert response.status_code == 200
    assert "Only an owner can invite another owner." in response.content.decode()
    assert Invitation.objects.count() == 0
    assert mail.outbox == []


def test_an_owner_can_invite_an_owner(workspace, owner, logged_in, invite):
    # given
    client = logged_in(owner)

    # when
    response = invite(client, "new@example.com", Role.OWNER)

    # then
    assert response.status_code == 302
    invitation = Invitation.objects.get()
    assert (invitation.email, invitation.role) == ("new@example.com", Role.OWNER)
    assert len(mail.outbox) == 1


def test_inviting_the_same_address_again_replaces_the_open_invitation(
    workspace, admin, logged_in, invite
):
    # given
    client = logged_in(admin)
    invite(client, "new@example.com", Role.VIEWER)
    first_link = link_in(mail.outbox[0])

    # when
    invite(client, "new@example.com", Role.EDITOR)

    # then
    assert Invitation.objects.count() == 2
    assert Invitation.objects.filter(revoked_at__isnull=True).get().role == Role.EDITOR
    second_link = link_in(mail.outbox[1])
    assert_shows_the_invalid_invitation_page(Client().get(first_link))
    assert Client().get(second_link).status_code == 200


# Accepting


def test_opening_the_link_changes_nothing(workspace, admin, logged_in, invite):
    # given
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    link = link_in(mail.outbox[0])
    users_before, invitations_before, members_before = (
        User.objects.count(),
        invitation_state(),
        membership_state(),
    )

    # when: a link scanner fetches it
    page = Client().get(link)
    head = Client().head(link)

    # then
    assert page.status_code == 200
    assert head.status_code == 200
    content = page.content.decode()
    assert f"Join {workspace.name}" in content
    assert "This invitation is for <strong>new@example.com</strong>, as Editor." in content
    assert User.objects.count() == users_before
    assert invitation_state() == invitations_before
    assert membership_state() == members_before


def test_a_new_person_accepts_with_name_and_password_and_becomes_a_member(
    workspace, admin, logged_in, invite
):
    # given
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    link = link_in(mail.outbox[0])
    newcomer = Client()

    # when
    response = newcomer.post(link, {"name": "Grace Hopper", "password": NEW_PASSWORD})

    # then
    assert response.status_code == 302
    assert response["Location"] == "/"
    user = User.objects.get(email="new@example.com")
    assert user.name == "Grace Hopper"
    assert user.check_password(NEW_PASSWORD)
    membership = Membership.objects.get(user=user)
    assert (membership.workspace, membership.role) == (workspace, Role.EDITOR)
    assert Invitation.objects.get().accepted_at is not None
    assert newcomer.session[SESSION_KEY] == str(user.pk)
    assert newcomer.session[SESSION_WORKSPACE_KEY] == str(workspace.pk)
    assert newcomer.get("/").wsgi_request.membership == membership


def test_a_new_person_with_a_weak_password_is_shown_the_error_and_nothing_is_made(
    workspace, admin, logged_in, invite
):
    # given
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    link = link_in(mail.outbox[0])
    users_before, invitations_before = User.objects.count(), invitation_state()

    # when
    response = Client().post(link, {"name": "Grace Hopper", "password": "123"})

    # then
    assert response.status_code == 400
    assert "This password is too short." in response.content.decode()
    assert User.objects.count() == users_before
    assert invitation_state() == invitations_before


def test_an_existing_user_logged_in_as_the_invited_address_accepts(
    workspace, admin, logged_in, invite
):
    # given
    invitee = UserFactory(email="known@example.com")
    invite(logged_in(admin), "known@example.com", Role.VIEWER)
    link = link_in(mail.outbox[0])
    browser = Client()
    browser.force_login(invitee)

    # when
    response = browser.post(link)

    # then
    assert response.status_code == 302
    membership = Membership.objects.get(user=invitee)
    assert (membership.workspace, membership.role) == (workspace, Role.VIEWER)
    invitee.refresh_from_db()
    assert invitee.check_password(TEST_PASSWORD)


def test_an_existing_user_not_logged_in_is_sent_to_log_in_and_nothing_happens(
    workspace, admin, logged_in, invite
):
    # given
    invitee = UserFactory(email="known@example.com")
    invite(logged_in(admin), "known@example.com", Role.VIEWER)
    link = link_in(mail.outbox[0])
    invitations_before = invitation_state()

    # when: someone posts a password for the existing account
    response = Client().post(link, {"name": "Mallory", "password": NEW_PASSWORD})

    # then
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={quote(link)}"
    assert not Membership.objects.filter(user=invitee).exists()
    assert invitation_state() == invitations_before
    invitee.refresh_from_db()
    assert invitee.check_password(TEST_PASSWORD)


def test_someone_else_logged_in_gets_an_error_and_no_membership(
    workspace, admin, logged_in, invite
):
    # given
    UserFactory(email="known@example.com")
    stranger = UserFactory(email="stranger@example.com")
    invite(logged_in(admin), "known@example.com", Role.ADMIN)
    link = link_in(mail.outbox[0])
    browser = Client()
    browser.force_login(stranger)
    members_before, invitations_before = membership_state(), invitation_state()

    # when
    response = browser.post(link)

    # then
    assert response.status_code == 400
    assert (
        "This invitation is for known@example.com. Log in with that address to accept it."
        in response.content.decode()
    )
    assert membership_state() == members_before
    assert invitation_state() == invitations_before


def test_someone_logged_in_cannot_take_an_invitation_for_a_new_address(
    workspace, admin, logged_in, invite
):
    # given
    stranger = UserFactory(email="stranger@example.com")
    invite(logged_in(admin), "new@example.com", Role.ADMIN)
    link = link_in(mail.outbox[0])
    browser = Client()
    browser.force_login(stranger)
    members_before, invitations_before = membership_state(), invitation_state()
    users_before = User.objects.count()

    # when
    response = browser.post(link, {"name": "Stranger", "password": NEW_PASSWORD})

    # then
    assert response.status_code == 400
    assert membership_state() == members_before
    assert invitation_state() == invitations_before
    assert User.objects.count() == users_before


# Links that do not work


def test_a_tampered_token_shows_the_invalid_page(workspace, admin, logged_in, invite):
    # given
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    link = link_in(mail.outbox[0])
    token = link.split("/")[2]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    members_before, invitations_before = membership_state(), invitation_state()

    # when
    page = Client().get(f"/invitations/{tampered}/")
    post = Client().post(f"/invitations/{tampered}/", {"name": "X", "password": NEW_PASSWORD})

    # then
    assert_shows_the_invalid_invitation_page(page)
    assert_shows_the_invalid_invitation_page(post)
    assert membership_state() == members_before
    assert invitation_state() == invitations_before
    assert not User.objects.filter(email="new@example.com").exists()


def test_a_token_signed_for_another_purpose_shows_the_invalid_page(
    workspace, admin, logged_in, invite
):
    # given: the invitation's id signed with another salt
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    invitation = Invitation.objects.get()
    foreign = signing.dumps(str(invitation.id), salt="funnelwerk.contacts.unsubscribe")

    # when
    response = Client().get(f"/invitations/{foreign}/")

    # then
    assert_shows_the_invalid_invitation_page(response)


def test_a_revoked_invitation_shows_the_invalid_page(workspace, admin, logged_in, invite):
    # given
    client = logged_in(admin)
    invite(client, "new@example.com", Role.EDITOR)
    link = link_in(mail.outbox[0])
    invitation = Invitation.objects.get()

    # when
    revoke = client.post(f"/settings/invitations/{invitation.pk}/revoke/")
    page = Client().get(link)
    post = Client().post(link, {"name": "Grace Hopper", "password": NEW_PASSWORD})

    # then
    assert revoke.status_code == 302
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    assert_shows_the_invalid_invitation_page(page)
    assert_shows_the_invalid_invitation_page(post)
    assert not User.objects.filter(email="new@example.com").exists()
    assert not Membership.objects.filter(user__email="new@example.com").exists()


def test_an_expired_invitation_shows_the_invalid_page(workspace, admin, logged_in, invite):
    # given
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    link = link_in(mail.outbox[0])
    invitation = Invitation.objects.get()

    # when: a second after it expired
    with time_machine.travel(invitation.expires_at + timedelta(seconds=1), tick=False):
        page = Client().get(link)
        post = Client().post(link, {"name": "Grace Hopper", "password": NEW_PASSWORD})

    # then
    assert_shows_the_invalid_invitation_page(page)
    assert_shows_the_invalid_invitation_page(post)
    assert not User.objects.filter(email="new@example.com").exists()
    invitation.refresh_from_db()
    assert invitation.accepted_at is None


def test_an_invitation_works_until_just_before_it_expires(workspace, admin, logged_in, invite):
    # given
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    link = link_in(mail.outbox[0])
    invitation = Invitation.objects.get()

    # when
    with time_machine.travel(invitation.expires_at - timedelta(seconds=1), tick=False):
        response = Client().post(link, {"name": "Grace Hopper", "password": NEW_PASSWORD})

    # then
    assert response.status_code == 302
    assert Membership.objects.get(user__email="new@example.com").role == Role.EDITOR


def test_a_used_invitation_shows_the_invalid_page(workspace, admin, logged_in, invite):
    # given: the invitation was accepted
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    link = link_in(mail.outbox[0])
    Client().post(link, {"name": "Grace Hopper", "password": NEW_PASSWORD})
    members_before, invitations_before = membership_state(), invitation_state()

    # when
    page = Client().get(link)
    post = Client().post(link, {"name": "Other", "password": NEW_PASSWORD})

    # then
    assert_shows_the_invalid_invitation_page(page)
    assert_shows_the_invalid_invitation_page(post)
    assert membership_state() == members_before
    assert invitation_state() == invitations_before


def test_a_revoked_invitation_sends_no_mail_when_its_task_runs_late(
    workspace, admin, logged_in, django_capture_on_commit_callbacks
):
    # given: the mail task is still waiting for the commit
    client = logged_in(admin)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post("/settings/members/", {"email": "new@example.com", "role": Role.EDITOR})
    invitation = Invitation.objects.get()
    client.post(f"/settings/invitations/{invitation.pk}/revoke/")

    # when
    callbacks[0]()

    # then
    assert mail.outbox == []


def test_an_editor_cannot_revoke_an_invitation(workspace, admin, member_of, logged_in, invite):
    # given
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    editor = member_of(workspace, Role.EDITOR)
    invitation = Invitation.objects.get()
    invitations_before = invitation_state()

    # when
    response = logged_in(editor).post(f"/settings/invitations/{invitation.pk}/revoke/")

    # then
    assert response.status_code == 403
    assert invitation_state() == invitations_before


def test_an_admin_of_another_workspace_cannot_revoke_an_invitation(
    workspace, other_workspace, admin, member_of, logged_in, invite
):
    # given
    invite(logged_in(admin), "new@example.com", Role.EDITOR)
    invitation = Invitation.objects.get()
    foreign_admin = member_of(other_workspace, Role.OWNER)
    invitations_before = invitation_state()

    # when
    response = logged_in(foreign_admin).post(f"/settings/invitations/{invitation.pk}/revoke/")

    # then
    assert response.status_code == 404
    assert invitation_state() == invitations_before


# Owners


def test_the_last_owner_cannot_leave(workspace, owner, logged_in):
    # given
    client = logged_in(owner)

    # when
    response = client.post(f"/settings/members/{owner.pk}/remove/", follow=True)

    # then
    assert response.redirect_chain == [("/settings/members/", 302)]
    assert "A workspace needs at least one owner." in response.content.decode()
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_the_last_owner_cannot_be_demoted(workspace, owner, logged_in):
    # given
    client = logged_in(owner)

    # when
    response = client.post(f"/settings/members/{owner.pk}/role/", {"role": Role.ADMIN}, follow=True)

    # then
    assert response.redirect_chain == [("/settings/members/", 302)]
    assert "A workspace needs at least one owner." in response.content.decode()
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_an_owner_can_leave_when_another_owner_stays(workspace, owner, member_of, logged_in):
    # given
    second_owner = member_of(workspace, Role.OWNER)
    client = logged_in(owner)

    # when
    response = client.post(f"/settings/members/{owner.pk}/remove/", follow=True)

    # then: sent home (and, with no workspace left, on to create one) with a goodbye
    assert response.redirect_chain == [("/", 302), ("/workspaces/new/", 302)]
    assert f"You left {workspace.name}." in response.content.decode()
    assert list(Membership.objects.filter(workspace=workspace)) == [second_owner]


def test_an_admin_cannot_demote_an_owner(workspace, owner, admin, logged_in):
    # given
    client = logged_in(admin)

    # when
    response = client.post(
        f"/settings/members/{owner.pk}/role/", {"role": Role.VIEWER}, follow=True
    )

    # then
    assert "Only an owner can grant or take the owner role." in response.content.decode()
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_an_admin_cannot_remove_an_owner(workspace, owner, admin, logged_in):
    # given
    client = logged_in(admin)

    # when
    response = client.post(f"/settings/members/{owner.pk}/remove/", follow=True)

    # then
    assert "Only an owner can remove an owner." in response.content.decode()
    assert Membership.objects.filter(pk=owner.pk).exists()
