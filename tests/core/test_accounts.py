"""Log-in, log-out, sign-up, password reset and change, and the workspace switcher."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import SESSION_KEY
from django.core import mail
from django.test import Client

from core.middleware import SESSION_WORKSPACE_KEY
from core.models import Membership, Role, User, Workspace
from tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "purple elephants dance at noon"
RESET_LINK = re.compile(r"http://testserver(/password/reset/[^/\s]+/[^/\s]+/)")


def signup_data(**overrides: str) -> dict[str, str]:
    data = {
        "name": "Ada Lovelace",
        "email": "Ada@Example.COM",
        "password": NEW_PASSWORD,
        "workspace_name": "Analytical Engines",
    }
    data.update(overrides)
    return data


# Log in and log out


def test_login_with_email_and_password_starts_a_session():
    # given
    user = UserFactory(email="ada@example.com")
    client = Client()

    # when
    response = client.post("/login/", {"username": "ada@example.com", "password": TEST_PASSWORD})

    # then
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session[SESSION_KEY] == str(user.pk)


@pytest.mark.parametrize("typed", ["Ada@Example.COM", "ADA@EXAMPLE.COM", " ada@example.com "])
def test_login_matches_the_lower_cased_stored_address_in_any_case(typed):
    # given: the manager stores addresses lower-cased
    user = User.objects.create_user(email="Ada@Example.COM", password=TEST_PASSWORD)
    assert user.email == "ada@example.com"
    client = Client()

    # when: ModelBackend looks the login up through User.objects.get_by_natural_key
    response = client.post("/login/", {"username": typed, "password": TEST_PASSWORD})

    # then
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session[SESSION_KEY] == str(user.pk)


def test_login_in_another_case_with_a_wrong_password_is_refused():
    # given
    User.objects.create_user(email="ada@example.com", password=TEST_PASSWORD)
    client = Client()

    # when
    response = client.post("/login/", {"username": "ADA@example.com", "password": "wrong"})

    # then
    assert response.status_code == 200
    assert SESSION_KEY not in client.session


def test_login_with_a_wrong_password_shows_the_error_and_starts_no_session():
    # given
    UserFactory(email="ada@example.com")
    client = Client()

    # when
    response = client.post("/login/", {"username": "ada@example.com", "password": "wrong"})

    # then
    assert response.status_code == 200
    content = response.content.decode()
    assert "Your email address and password didn't match. Please try again." in content
    assert SESSION_KEY not in client.session


def test_logout_by_get_is_refused_and_keeps_the_session(workspace, owner, logged_in):
    # given
    client = logged_in(owner)

    # when
    response = client.get("/logout/")

    # then
    assert response.status_code == 405
    assert client.session[SESSION_KEY] == str(owner.user.pk)
    assert client.get("/").status_code == 200


def test_logout_by_post_ends_the_session(workspace, owner, logged_in):
    # given
    client = logged_in(owner)

    # when
    response = client.post("/logout/")

    # then
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert SESSION_KEY not in client.session
    assert client.get("/")["Location"] == "/login/?next=/"


# Sign-up


def test_signup_creates_the_user_and_their_workspace_and_logs_in():
    # given
    client = Client()

    # when
    response = client.post("/signup/", signup_data())

    # then
    assert response.status_code == 302
    assert response["Location"] == "/"
    user = User.objects.get()
    assert user.email == "ada@example.com"
    assert user.name == "Ada Lovelace"
    assert user.check_password(NEW_PASSWORD)
    workspace = Workspace.objects.get()
    assert workspace.name == "Analytical Engines"
    assert workspace.slug == "analytical-engines"
    membership = Membership.objects.get()
    assert (membership.user, membership.workspace, membership.role) == (user, workspace, Role.OWNER)
    assert client.session[SESSION_KEY] == str(user.pk)
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert dashboard.wsgi_request.membership == membership


def test_signup_is_not_found_when_signup_is_closed(settings):
    # given
    settings.SIGNUP_OPEN = False
    client = Client()

    # when
    page = client.get("/signup/")
    response = client.post("/signup/", signup_data())

    # then
    assert page.status_code == 404
    assert response.status_code == 404
    assert User.objects.count() == 0
    assert Workspace.objects.count() == 0
    assert SESSION_KEY not in client.session


def test_signup_with_an_existing_email_shows_the_error_and_creates_nothing():
    # given
    UserFactory(email="ada@example.com")
    client = Client()

    # when: the same address in another spelling
    response = client.post("/signup/", signup_data(email="ADA@example.com"))

    # then
    assert response.status_code == 200
    assert "An account with this address exists; log in instead." in response.content.decode()
    assert User.objects.count() == 1
    assert Workspace.objects.count() == 0
    assert Membership.objects.count() == 0
    assert SESSION_KEY not in client.session


# Password reset


def test_password_reset_mails_one_working_link_to_a_known_address():
    # given
    user = UserFactory(email="ada@example.com")
    client = Client()

    # when
    response = client.post("/password/reset/", {"email": "ada@example.com"})

    # then
    assert response.status_code == 302
    assert response["Location"] == "/password/reset/sent/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ada@example.com"]
    assert message.subject == "Reset your Funnelwerk password"
    link = RESET_LINK.search(message.body)
    assert link is not None
    html_body, mimetype = message.alternatives[0]
    assert mimetype == "text/html"
    assert link.group(1) in html_body

    # and the link leads to the form that sets a new password
    form_page = client.get(link.group(1), follow=True)
    assert form_page.status_code == 200
    assert form_page.context["validlink"] is True
    set_password_url = form_page.redirect_chain[-1][0]
    response = client.post(
        set_password_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/password/reset/done/"
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert not user.check_password(TEST_PASSWORD)


def test_a_used_password_reset_link_does_not_work_again():
    # given: a reset that was completed
    user = UserFactory(email="ada@example.com")
    client = Client()
    client.post("/password/reset/", {"email": "ada@example.com"})
    link = RESET_LINK.search(mail.outbox[0].body).group(1)
    set_password_url = client.get(link, follow=True).redirect_chain[-1][0]
    client.post(set_password_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    # when
    response = Client().get(link, follow=True)

    # then
    assert response.status_code == 200
    assert response.context["validlink"] is False
    assert "This link does not work" in response.content.decode()
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)


def test_password_reset_answers_alike_for_an_unknown_address_and_sends_nothing():
    # given
    UserFactory(email="ada@example.com")
    known = Client().post("/password/reset/", {"email": "ada@example.com"}, follow=True)
    mail.outbox.clear()

    # when
    unknown = Client().post("/password/reset/", {"email": "nobody@example.com"}, follow=True)

    # then
    assert unknown.status_code == known.status_code == 200
    assert unknown.redirect_chain == known.redirect_chain == [("/password/reset/sent/", 302)]
    assert [t.name for t in unknown.templates] == [t.name for t in known.templates]
    assert mail.outbox == []


# Password change


def test_password_change_ends_the_users_other_sessions_but_keeps_this_one(
    workspace, owner, logged_in
):
    # given: the same user logged in twice
    this_browser = logged_in(owner)
    other_browser = Client()
    other_browser.force_login(owner.user)
    assert other_browser.get("/").status_code == 200

    # when
    response = this_browser.post(
        "/password/change/",
        {
            "old_password": TEST_PASSWORD,
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )

    # then
    assert response.status_code == 302
    assert response["Location"] == "/password/change/done/"
    owner.user.refresh_from_db()
    assert owner.user.check_password(NEW_PASSWORD)
    assert this_browser.get("/").status_code == 200
    other_response = other_browser.get("/")
    assert other_response.status_code == 302
    assert other_response["Location"] == "/login/?next=/"
    assert SESSION_KEY not in other_browser.session


def test_password_change_with_a_wrong_old_password_changes_nothing(workspace, owner, logged_in):
    # given
    client = logged_in(owner)
    other_browser = Client()
    other_browser.force_login(owner.user)

    # when
    response = client.post(
        "/password/change/",
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    # then
    assert response.status_code == 200
    owner.user.refresh_from_db()
    assert owner.user.check_password(TEST_PASSWORD)
    assert other_browser.get("/").status_code == 200


# Workspaces: switch and create


def test_switching_to_a_workspace_of_the_user_changes_the_current_membership(
    workspace, other_workspace, owner, member_of, logged_in
):
    # given: the owner of one workspace is a viewer in another
    viewer_membership = Membership.objects.create(
        user=owner.user, workspace=other_workspace, role=Role.VIEWER
    )
    client = logged_in(owner)
    assert client.get("/").wsgi_request.membership == owner

    # when
    response = client.post(
        "/workspaces/switch/", {"workspace": str(other_workspace.pk), "next": "/contacts/"}
    )

    # then
    assert response.status_code == 302
    assert response["Location"] == "/contacts/"
    assert client.session[SESSION_WORKSPACE_KEY] == str(other_workspace.pk)
    dashboard = client.get("/")
    assert dashboard.wsgi_request.membership == viewer_membership
    assert dashboard.wsgi_request.membership.role == Role.VIEWER


def test_switching_ignores_a_next_url_on_another_host(workspace, other_workspace, owner, logged_in):
    # given
    Membership.objects.create(user=owner.user, workspace=other_workspace, role=Role.VIEWER)
    client = logged_in(owner)

    # when
    response = client.post(
        "/workspaces/switch/",
        {"workspace": str(other_workspace.pk), "next": "https://evil.example/phish"},
    )

    # then
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_switching_to_a_foreign_workspace_is_not_found_and_keeps_the_current_one(
    workspace, other_workspace, owner, member_of, logged_in
):
    # given: other_workspace has members, but not this user
    member_of(other_workspace, Role.OWNER)
    client = logged_in(owner)

    # when
    response = client.post("/workspaces/switch/", {"workspace": str(other_workspace.pk)})

    # then
    assert response.status_code == 404
    assert client.session[SESSION_WORKSPACE_KEY] == str(workspace.pk)
    assert client.get("/").wsgi_request.membership == owner


def test_switching_to_a_malformed_workspace_id_is_not_found(workspace, owner, logged_in):
    # given
    client = logged_in(owner)

    # when
    response = client.post("/workspaces/switch/", {"workspace": "not-a-uuid"})

    # then
    assert response.status_code == 404
    assert client.session[SESSION_WORKSPACE_KEY] == str(workspace.pk)


def test_switching_by_get_is_refused(workspace, other_workspace, owner, logged_in):
    # given
    Membership.objects.create(user=owner.user, workspace=other_workspace, role=Role.VIEWER)
    client = logged_in(owner)

    # when
    response = client.get("/workspaces/switch/", {"workspace": str(other_workspace.pk)})

    # then
    assert response.status_code == 405
    assert client.session[SESSION_WORKSPACE_KEY] == str(workspace.pk)


def test_a_user_without_a_workspace_is_sent_to_create_one_and_can():
    # given
    user = UserFactory()
    client = Client()
    client.force_login(user)

    # when
    response = client.get("/")

    # then
    assert response.status_code == 302
    assert response["Location"] == "/workspaces/new/"
    page = client.get("/workspaces/new/")
    assert page.status_code == 200
    assert "You are not a member of any workspace yet." in page.content.decode()

    # when
    response = client.post("/workspaces/new/", {"name": "Fresh Start"})

    # then
    assert response.status_code == 302
    assert response["Location"] == "/"
    workspace = Workspace.objects.get()
    assert (workspace.name, workspace.slug) == ("Fresh Start", "fresh-start")
    membership = Membership.objects.get()
    assert (membership.user, membership.workspace, membership.role) == (
        user,
        workspace,
        Role.OWNER,
    )
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert dashboard.wsgi_request.membership == membership


def test_an_anonymous_visitor_is_sent_to_log_in():
    # when
    response = Client().get("/contacts/")

    # then
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/contacts/"
