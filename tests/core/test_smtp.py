"""core.smtp: pipelined SMTP against a real server on loopback (aiosmtpd announcing
PIPELINING), with the refusals smtplib would report, and the connection usable after each."""

from __future__ import annotations

import smtplib
import socket
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.core.mail import EmailMultiAlternatives

from core.smtp import SmtpEmailBackend

BODY = "Hello\n.a line that starts with a dot\n..and one with two\n.\nend"


class Server:
    """Counts what arrives; refuses what the test says; announces PIPELINING or not."""

    def __init__(self, *, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.received: list[tuple[str, list[str], bytes]] = []
        self.refuse_sender: set[str] = set()
        self.refuse_recipient: set[str] = set()
        self.refuse_data = ""
        self.ehlo_lines: list[str] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        self.ehlo_lines = list(responses)
        return responses

    async def handle_MAIL(self, server, session, envelope, address, options):
        if address in self.refuse_sender:
            return "550 5.7.1 sender refused"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address in self.refuse_recipient:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refuse_data:
            return self.refuse_data
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 queued"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server() -> Any:
    handler = Server()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


def _mail(to: list[str], body: str = BODY) -> EmailMultiAlternatives:
    mail = EmailMultiAlternatives(
        subject="Hi", body=body, from_email="Shop <shop@example.com>", to=to
    )
    mail.attach_alternative("<p>Hi</p>", "text/html")
    return mail


def _backend(server: Server) -> SmtpEmailBackend:
    backend = SmtpEmailBackend(host="127.0.0.1", port=server.port, fail_silently=False)
    backend.open()
    return backend


def test_mails_go_out_pipelined_with_their_dots_intact(server: Server) -> None:
    backend = _backend(server)
    try:
        sent = backend.send_messages(
            [_mail(["ann@example.org", "bob@example.org"]), _mail(["cy@example.org"])]
        )
        assert backend.connection.has_extn("pipelining")
    finally:
        backend.close()
    assert sent == 2
    assert [(sender, recipients) for sender, recipients, _ in server.received] == [
        ("shop@example.com", ["ann@example.org", "bob@example.org"]),
        ("shop@example.com", ["cy@example.org"]),
    ]
    content = server.received[0][2]
    assert b"\r\n.a line that starts with a dot\r\n..and one with two\r\n.\r\nend" in content


@pytest.mark.parametrize("pipelining", [True, False])
def test_refusals_raise_what_smtplib_raises_and_the_connection_goes_on(
    server: Server, pipelining: bool
) -> None:
    server.pipelining = pipelining
    server.refuse_recipient = {"gone@example.org"}
    backend = _backend(server)
    try:
        # one of two recipients refused: sent to the other, as smtplib does
        assert backend.send_messages([_mail(["gone@example.org", "ann@example.org"])]) == 1
        # every recipient refused
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            backend.send_messages([_mail(["gone@example.org"])])
        assert refused.value.recipients["gone@example.org"][0] == 550
        # the sender refused
        server.refuse_sender = {"shop@example.com"}
        with pytest.raises(smtplib.SMTPSenderRefused) as sender:
            backend.send_messages([_mail(["ann@example.org"])])
        assert sender.value.smtp_code == 550
        server.refuse_sender = set()
        # the content refused at the end of DATA
        server.refuse_data = "554 5.7.1 looks like spam"
        with pytest.raises(smtplib.SMTPDataError) as data:
            backend.send_messages([_mail(["ann@example.org"])])
        assert data.value.smtp_code == 554
        server.refuse_data = ""
        # and after all that the same connection still delivers
        assert backend.send_messages([_mail(["bob@example.org"])]) == 1
    finally:
        backend.close()
    assert [recipients for _, recipients, _ in server.received] == [
        ["ann@example.org"],
        ["bob@example.org"],
    ]


def test_a_421_closes_the_connection(server: Server) -> None:
    server.refuse_data = "421 4.3.2 shutting down"
    backend = _backend(server)
    try:
        with pytest.raises(smtplib.SMTPDataError) as data:
            backend.send_messages([_mail(["ann@example.org"])])
        assert data.value.smtp_code == 421
        assert backend.connection.sock is None
    finally:
        backend.close()
