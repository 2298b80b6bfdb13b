"""End to end in headless Chromium: a visitor signs up on the hosted form, the confirmation mail
reaches a real SMTP server on loopback, the link confirms in the browser, and the person can
unsubscribe on the preference page and with an RFC 8058 one-click POST."""

from __future__ import annotations

import re
import socket
from datetime import timedelta

import pytest
import time_machine
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler
from django.test import override_settings
from django.utils import timezone

from config.env import parse_email_url
from contacts.models import (
    ConsentKind,
    Contact,
    ContactStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from contacts.signup_forms import signup_form_create
from contacts.subscriptions import mailing_list_create, unsubscribe_url
from tests.factories import WorkspaceFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CONSENT = "Yes, send me the Acme newsletter. I can unsubscribe at any time."


class Inbox(MessageHandler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list = []

    def handle_message(self, message) -> None:
        self.messages.append(message)

    def confirm_link(self, index: int) -> str:
        message = self.messages[index]
        text = next(
            part.get_payload(decode=True).decode()
            for part in message.walk()
            if part.get_content_type() == "text/plain"
        )
        return re.search(r"https?://\S+/confirm/\S+/", text).group(0)


@pytest.fixture
def smtp_inbox():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    transport = parse_email_url(f"smtp://127.0.0.1:{port}", environ={})
    with override_settings(EMAIL_BACKEND=transport.backend, **transport.settings):
        yield inbox
    controller.stop()


def sign_up(page, url: str, email: str) -> None:
    page.goto(url)
    page.fill("input[name=email]", email)
    page.fill("input[name=first_name]", "Ada")
    page.check("input[name=consent]")
    page.click("button[type=submit]")
    page.wait_for_selector("h1")


def test_sign_up_confirm_and_unsubscribe_twice(live_server, page, screenshot, smtp_inbox, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    # given a workspace with a double opt-in list and a hosted form
    workspace = WorkspaceFactory(name="Acme Shop", sender_email="news@acme.example")
    newsletter = mailing_list_create(workspace=workspace, name="Acme Newsletter")
    form = signup_form_create(
        workspace=workspace,
        name="Footer form",
        mailing_list=newsletter,
        consent_text=CONSENT,
        privacy_policy_url="https://acme.example/privacy",
        fields=[{"name": "first_name", "label": "First name", "required": False}],
    )
    form_url = f"{live_server.url}/f/{form.pk}/?utm_source=footer&utm_campaign=launch"

    # when a visitor signs up on the hosted form
    page.goto(form_url)
    screenshot("form")
    sign_up(page, form_url, "ada@example.org")
    screenshot("thanks")
    assert "check your inbox" in page.inner_text("h1").lower()

    # then the confirmation mail reached the SMTP server
    assert len(smtp_inbox.messages) == 1
    assert smtp_inbox.messages[0]["To"] == "ada@example.org"
    contact = Contact.objects.get(workspace=workspace, email="ada@example.org")
    assert contact.status == ContactStatus.PENDING

    # when the person opens the link: the page asks for one click, and only the click confirms
    page.goto(smtp_inbox.confirm_link(0))
    screenshot("confirm")
    contact.refresh_from_db()
    assert contact.status == ContactStatus.PENDING
    page.click("button[type=submit]")
    page.wait_for_selector("text=confirmed")
    screenshot("confirmed")

    # then the contact is subscribed and the proof is complete
    contact.refresh_from_db()
    assert contact.status == ContactStatus.SUBSCRIBED
    signup = contact.consent_records.get(kind=ConsentKind.SIGNUP)
    confirmation = contact.consent_records.get(kind=ConsentKind.CONFIRMATION)
    for record in (signup, confirmation):
        assert record.ip_address == "127.0.0.1"
        assert "Chrome" in record.user_agent
        assert record.signup_form_id == form.pk
        assert record.mailing_list_id == newsletter.pk
        assert record.consent_text.text == CONSENT
    assert signup.utm == {"utm_source": "footer", "utm_campaign": "launch"}
    assert signup.privacy_policy_url == "https://acme.example/privacy"

    # when they unsubscribe on the preference page
    page.goto(unsubscribe_url(contact))
    screenshot("preferences")
    page.click("button:has-text('Unsubscribe from everything')")
    page.wait_for_selector("text=You are unsubscribed")
    screenshot("unsubscribed")

    # then they are unsubscribed and suppressed
    contact.refresh_from_db()
    assert contact.status == ContactStatus.UNSUBSCRIBED
    assert Suppression.objects.filter(
        workspace=workspace, email_hash=Suppression.hash_email("ada@example.org")
    ).exists()

    # when they come back through a new double opt-in (a confirmation mail goes out at most
    # every 10 minutes per address) and then use the one-click header
    with time_machine.travel(timezone.now() + timedelta(minutes=11), tick=True):
        sign_up(page, form_url, "ada@example.org")
        assert len(smtp_inbox.messages) == 2
        page.goto(smtp_inbox.confirm_link(1))
        page.click("button[type=submit]")
        page.wait_for_selector("text=confirmed")
    contact.refresh_from_db()
    assert contact.status == ContactStatus.SUBSCRIBED
    assert not Suppression.objects.filter(workspace=workspace).exists()
    response = page.request.post(
        unsubscribe_url(contact), form={"List-Unsubscribe": "One-Click"}, max_redirects=0
    )

    # then the RFC 8058 POST unsubscribed them at once, without a redirect
    assert response.status == 200
    contact.refresh_from_db()
    assert contact.status == ContactStatus.UNSUBSCRIBED
    assert Subscription.objects.get(contact=contact).status == SubscriptionStatus.UNSUBSCRIBED
    assert Suppression.objects.filter(
        workspace=workspace, email_hash=Suppression.hash_email("ada@example.org")
    ).exists()
