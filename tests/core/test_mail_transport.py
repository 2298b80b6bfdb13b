"""EMAIL_URL picks the transport; the outbox stores mail; SMTP really talks to a server."""

from __future__ import annotations

import socket
from email import message_from_bytes
from email.errors import HeaderParseError
from email.policy import compat32
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler
from django.core.mail import EmailMultiAlternatives, get_connection
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from config.env import ConfigurationError, parse_email_url
from core.mail import QUICK_FOLD, MultipartEmail, tag_workspace
from core.models import OutboxMessage


def test_outbox_url_selects_the_outbox_backend():
    transport = parse_email_url("outbox://", environ={})

    assert transport.backend == "core.mail.OutboxEmailBackend"
    assert transport.settings == {}


def test_smtp_urls_carry_host_port_credentials_and_tls_mode():
    plain = parse_email_url("smtp://user%40x:p%3Ass@mail.example.com:2525", environ={})
    starttls = parse_email_url("smtp+tls://u:p@mail.example.com", environ={})
    implicit_tls = parse_email_url("smtps://mail.example.com?timeout=5", environ={})

    assert plain.backend == "core.smtp.SmtpEmailBackend"
    assert plain.settings == {
        "EMAIL_HOST": "mail.example.com",
        "EMAIL_PORT": 2525,
        "EMAIL_HOST_USER": "user@x",
        "EMAIL_HOST_PASSWORD": "p:ss",
        "EMAIL_USE_TLS": False,
        "EMAIL_USE_SSL": False,
        "EMAIL_TIMEOUT": 30,
    }
    assert (starttls.settings["EMAIL_PORT"], starttls.settings["EMAIL_USE_TLS"]) == (587, True)
    assert implicit_tls.settings["EMAIL_PORT"] == 465
    assert implicit_tls.settings["EMAIL_USE_SSL"] is True
    assert implicit_tls.settings["EMAIL_TIMEOUT"] == 5


def test_anymail_url_names_the_esp_backend_and_collects_its_credentials():
    transport = parse_email_url(
        "anymail://sendgrid",
        environ={"ANYMAIL_SENDGRID_API_KEY": "SG.key", "UNRELATED": "x"},
    )

    assert transport.backend == "anymail.backends.sendgrid.EmailBackend"
    assert transport.anymail == {"SENDGRID_API_KEY": "SG.key"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com", "scheme 'http' is not supported"),
        ("smtp://", "needs a host"),
        ("anymail://", "names the ESP"),
        ("anymail://../evil", "names the ESP"),
    ],
)
def test_unusable_email_urls_are_refused_with_a_clear_reason(url, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_email_url(url, environ={})


@pytest.mark.django_db
def test_the_outbox_backend_stores_every_part_and_the_workspace(workspace):
    # given a mail with a text and an HTML part, tagged with its workspace
    mail = EmailMultiAlternatives(
        subject="Hello",
        body="Plain body",
        from_email="Shop <shop@example.com>",
        to=["Ada <ada@example.org>"],
        headers={"List-Unsubscribe": "<https://example.com/u/x/>"},
    )
    mail.attach_alternative("<p>HTML body</p>", "text/html")
    tag_workspace(mail, workspace.pk)

    # when it is sent through the outbox backend
    sent = get_connection("core.mail.OutboxEmailBackend").send_messages([mail])

    # then one row holds all of it
    assert sent == 1
    stored = OutboxMessage.objects.get()
    assert stored.workspace == workspace
    assert stored.to == ["ada@example.org"]
    assert stored.subject == "Hello"
    assert stored.text_body == "Plain body"
    assert stored.html_body == "<p>HTML body</p>"
    assert stored.headers["List-Unsubscribe"] == "<https://example.com/u/x/>"
    assert "Subject: Hello" in stored.raw


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Collector(MessageHandler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list = []

    def handle_message(self, message) -> None:
        self.messages.append(message)


@pytest.mark.django_db
def test_invitations_go_out_through_a_real_smtp_server_on_loopback(
    owner, django_capture_on_commit_callbacks
):
    # given an SMTP server on loopback and EMAIL_URL pointing at it
    collector = _Collector()
    port = _free_port()
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    settings_for = parse_email_url(f"smtp://127.0.0.1:{port}", environ={})
    try:
        with override_settings(EMAIL_BACKEND=settings_for.backend, **settings_for.settings):
            from core.services import invitation_create

            # when an admin invites someone (the mail goes out from a task after commit)
            with django_capture_on_commit_callbacks(execute=True):
                invitation_create(actor=owner, email="New.Person@Example.org", role="editor")
    finally:
        controller.stop()

    # then the server received exactly that mail, with both parts
    assert len(collector.messages) == 1
    received = collector.messages[0]
    assert received["To"] == "new.person@example.org"
    assert owner.workspace.name in received["Subject"]
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in received.walk()
        if not part.is_multipart()
    }
    assert set(parts) == {"text/plain", "text/html"}
    assert "/invitations/" in parts["text/plain"]


def test_a_multipart_mail_gets_a_random_boundary_and_parses_back():
    def mail() -> MultipartEmail:
        built = MultipartEmail(
            subject="Grüße", body="Hallo ✓\n--plain", to=["ann@example.org"], from_email="a@b.c"
        )
        built.attach_alternative("<p>Hallo ✓</p>", "text/html")
        return built

    first, second = mail().message(), mail().message()
    assert first.get_boundary().startswith("=_fw_")
    assert first.get_boundary() != second.get_boundary()
    parsed = message_from_bytes(first.as_bytes())
    assert parsed.get_content_type() == "multipart/alternative"
    parts = [
        (part.get_content_type(), part.get_payload(decode=True).decode())
        for part in parsed.get_payload()
    ]
    assert parts == [("text/plain", "Hallo ✓\n--plain"), ("text/html", "<p>Hallo ✓</p>")]


@given(
    name=st.sampled_from(["Subject", "From", "To", "List-Unsubscribe", "X-Funnelwerk-Message"]),
    value=st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=90) | st.text(max_size=40),
    linesep=st.sampled_from(["\n", "\r\n"]),
)
def test_quick_folding_writes_every_header_as_compat32_does(name, value, linesep):
    def folded(policy: Any) -> Any:
        try:
            return policy.clone(linesep=linesep).fold_binary(name, value)
        except HeaderParseError as error:  # a value with an embedded header, in both
            return type(error)

    assert folded(QUICK_FOLD) == folded(compat32)
