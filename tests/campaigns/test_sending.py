"""Sending: claim, re-check, send over a real SMTP server on loopback, record, retry, fail.

Messages are built directly as rows (Sequence + Enrollment + Message), so these tests do not
depend on the engine. Time is controlled with time-machine; only the SMTP test server and the
worker subprocess that gets killed ever sleep.
"""

from __future__ import annotations

import email
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import Message as MimeMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import time_machine
from aiosmtpd.controller import Controller
from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
from django.db import connection
from django.test import override_settings

from campaigns.models import Enrollment, Message, MessageStatus, Sequence, SequenceStatus
from campaigns.sending import (
    classify_send_error,
    message_claim,
    messages_recover_stuck,
    messages_retry_due,
    messages_send,
    rate_limit_take,
    retry_delay,
)
from config.env import parse_email_url
from contacts.models import Contact, ContactStatus, SuppressionReason
from contacts.services import suppression_add
from contacts.subscriptions import contact_unsubscribe_all
from core.models import Workspace
from tests.factories import ContactFactory

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 10, 0, 0, 500_000, tzinfo=UTC)
STEP = {
    "key": "welcome",
    "type": "email",
    "subject": "Welcome, {{ contact.first_name }}",
    "html": "<p>Hello {{ contact.first_name }}</p>",
    "next": None,
}


# --- a scriptable SMTP server on loopback --------------------------------------------------


class ScriptedSMTP:
    """aiosmtpd handler: answers RCPT and DATA from scripts (then 250), keeps what it got.

    `delay` slows every accepted DATA down (it blocks the server's loop, as a slow server
    would); `received_event` is set when `received_target` mails have been received.
    """

    def __init__(
        self,
        *,
        rcpt_replies: tuple[str, ...] = (),
        data_replies: tuple[str, ...] = (),
        delay: float = 0.0,
        received_target: int = 0,
    ) -> None:
        self.rcpt_replies = deque(rcpt_replies)
        self.data_replies = deque(data_replies)
        self.delay = delay
        self.received: list[MimeMessage] = []
        self.rcpt_commands = 0
        self.received_target = received_target
        self.received_event = threading.Event()
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        with self.lock:
            self.rcpt_commands += 1
            if self.rcpt_replies:
                return self.rcpt_replies.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.data_replies:
                return self.data_replies.popleft()
            self.received.append(email.message_from_bytes(envelope.content))
            if self.received_target and len(self.received) >= self.received_target:
                self.received_event.set()
        if self.delay:
            time.sleep(self.delay)  # a slow server: the mail is in, the 250 not yet out
        return "250 2.0.0 Message accepted for delivery"

    def recipients(self) -> list[str]:
        with self.lock:
            return [str(mail["To"]) for mail in self.received]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_server(handler: ScriptedSMTP) -> Iterator[str]:
    """Run `handler` on loopback and point Django's mail settings at it; yields EMAIL_URL."""
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    url = f"smtp://127.0.0.1:{port}?timeout=10"
    transport = parse_email_url(url, environ={})
    try:
        with override_settings(EMAIL_BACKEND=transport.backend, **transport.settings):
            yield url
    finally:
        controller.stop()


# --- state --------------------------------------------------------------------------------


def make_messages(workspace: Workspace, count: int = 1) -> list[Message]:
    """`count` queued messages of one sequence's email step, each to its own subscriber."""
    sequence = Sequence.objects.create(
        workspace=workspace, name="Welcome", status=SequenceStatus.ACTIVE, steps=[STEP]
    )
    messages = []
    for number in range(count):
        contact = ContactFactory(
            workspace=workspace,
            email=f"reader{number}@example.org",
            first_name=f"Reader{number}",
            status=ContactStatus.SUBSCRIBED,
        )
        enrollment = Enrollment.objects.create(
            workspace=workspace, sequence=sequence, contact=contact, current_step="welcome"
        )
        messages.append(
            Message.objects.create(
                workspace=workspace,
                contact=contact,
                enrollment=enrollment,
                step_key="welcome",
                subject="Welcome",
            )
        )
    return messages


def ids_of(messages: list[Message]) -> list[str]:
    return [str(message.pk) for message in messages]


# --- pure parts: classification, backoff, the rate limiter ---------------------------------


@pytest.mark.parametrize(
    ("error", "transient", "reason"),
    [
        (
            smtplib.SMTPRecipientsRefused({"a@example.org": (550, b"5.1.1 User unknown")}),
            False,
            "Rejected by the receiving server: 550 5.1.1 User unknown",
        ),
        (
            smtplib.SMTPRecipientsRefused({"a@example.org": (452, b"4.2.2 Mailbox full")}),
            True,
            "Temporary failure at the receiving server: 452 4.2.2 Mailbox full",
        ),
        (
            smtplib.SMTPDataError(421, b"4.7.0 Try again\n later"),
            True,
            "Temporary failure at the receiving server: 421 4.7.0 Try again later",
        ),
        (
            smtplib.SMTPSenderRefused(553, b"5.7.1 Sender not allowed", "shop@example.com"),
            False,
            "Rejected by the receiving server: 553 5.7.1 Sender not allowed",
        ),
        (
            smtplib.SMTPDataError(554, b"5.7.1 Message rejected as spam"),
            False,
            "Rejected by the receiving server: 554 5.7.1 Message rejected as spam",
        ),
        (
            smtplib.SMTPAuthenticationError(535, b"5.7.8 Bad credentials"),
            True,
            "The mail server refused our login (check EMAIL_URL): 535 5.7.8 Bad credentials",
        ),
        (
            smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
            True,
            "The mail server closed the connection: Connection unexpectedly closed",
        ),
        (TimeoutError("timed out"), True, "The mail server did not answer in time."),
        (
            ConnectionRefusedError(111, "Connection refused"),
            True,
            "Could not reach the mail server: 111 Connection refused",
        ),
        (
            AnymailRecipientsRefused(),
            False,
            "Rejected by the mail service: All message recipients were rejected or invalid",
        ),
        (
            AnymailAPIError("Too many requests", status_code=429, esp_name="Postmark"),
            True,
            "Postmark is busy or failing (HTTP 429); will retry.",
        ),
        (
            AnymailAPIError("Bad gateway", status_code=502, esp_name="Postmark"),
            True,
            "Postmark is busy or failing (HTTP 502); will retry.",
        ),
        (
            AnymailAPIError("Invalid 'To' address", status_code=422, esp_name="Postmark"),
            False,
            "Rejected by Postmark (HTTP 422): Invalid 'To' address",
        ),
        (
            AnymailAPIError("Connection reset", esp_name="Postmark"),
            True,
            "Could not reach Postmark: Connection reset",
        ),
        (
            RuntimeError("something odd"),
            True,
            "Unexpected error while sending (RuntimeError): something odd",
        ),
    ],
)
def test_errors_are_classified_with_a_readable_reason(error, transient, reason):
    failure = classify_send_error(error)

    assert (failure.transient, failure.reason) == (transient, reason)


def test_retries_back_off_1_5_15_60_minutes_then_every_2_hours():
    delays = [retry_delay(attempts) for attempts in range(1, 8)]

    assert [delay.total_seconds() / 60 for delay in delays] == [1, 5, 15, 60, 120, 120, 120]


def test_the_rate_limiter_allows_the_budget_per_second_and_then_says_how_long_to_wait():
    # given a workspace allowed 2 mails per second, at 0.25 s into a second
    now = 1_700_000_000.25

    # when three sends ask for a slot in that second, and one in the next
    waits = [rate_limit_take("ws-a", 2, now) for _ in range(3)]
    next_second = rate_limit_take("ws-a", 2, now + 0.75)

    # then the third waits for the rest of the second; the next second has a fresh budget
    assert waits == [0.0, 0.0, 0.75]
    assert next_second == 0.0
    # and another workspace has its own budget
    assert rate_limit_take("ws-b", 2, now) == 0.0


# --- sending over a real SMTP server --------------------------------------------------------


@pytest.mark.django_db
def test_a_mail_goes_out_once_and_its_acceptance_is_recorded(workspace):
    # given a queued message and an SMTP server that accepts it
    (message,) = make_messages(workspace)
    server = ScriptedSMTP()

    # when it is sent, and the same batch runs again (a redelivered task)
    with smtp_server(server), time_machine.travel(T0, tick=False):
        first = messages_send(message_ids=[str(message.pk)])
        second = messages_send(message_ids=[str(message.pk)])

    # then the server got it once, with the rendered subject, and the row says so
    assert server.recipients() == ["reader0@example.org"]
    assert (first.sent, second.sent, second.skipped) == (1, 0, 1)
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert message.attempts == 1
    assert message.esp_accepted_at == T0
    assert message.sent_at == T0
    assert message.error == ""
    assert message.esp_message_id == server.received[0]["Message-ID"]
    assert message.esp_message_id.strip("<>").startswith(str(message.pk))
    # and it is the mail campaigns.rendering.message_email builds: personalised, with the
    # footer and the one-click unsubscribe headers
    received = server.received[0]
    html = next(
        part.get_payload(decode=True).decode()
        for part in received.walk()
        if part.get_content_type() == "text/html"
    )
    assert received["Subject"] == "Welcome, Reader0"
    assert "<p>Hello Reader0</p>" in html
    assert workspace.postal_address.splitlines()[0] in html
    assert received["List-Unsubscribe"].strip().startswith("<http://testserver/u/")
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.django_db
def test_421_then_250_delivers_the_mail_exactly_once(workspace):
    # given a server that answers the first DATA with 421 and the next with 250
    (message,) = make_messages(workspace)
    server = ScriptedSMTP(data_replies=("421 4.7.0 Try again later",))

    with smtp_server(server):
        # when the message is sent
        with time_machine.travel(T0, tick=False):
            first = messages_send(message_ids=[str(message.pk)])
            too_early = messages_send(message_ids=[str(message.pk)])
        message.refresh_from_db()

        # then it waits for a retry in a minute, and a send before that does nothing
        assert (first.retrying, too_early.skipped) == (1, 1)
        assert message.status == MessageStatus.RETRYING
        assert message.attempts == 1
        assert message.next_attempt_at == T0 + timedelta(minutes=1)
        assert (
            message.error == "Temporary failure at the receiving server: 421 4.7.0 Try again later"
        )
        assert server.received == []

        # when the retry is due and the retry tick sends it
        with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
            due = messages_retry_due(limit=100)
            retried = messages_send(message_ids=due)
            again = messages_send(message_ids=[str(message.pk)])

    # then the server has it exactly once
    assert due == [str(message.pk)]
    assert (retried.sent, again.sent) == (1, 0)
    assert server.recipients() == ["reader0@example.org"]
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert message.attempts == 2
    assert message.esp_accepted_at == T0 + timedelta(minutes=1)
    assert message.next_attempt_at is None
    assert message.error == ""


@pytest.mark.django_db
def test_550_fails_the_message_at_once_with_the_reason_and_never_retries(workspace):
    # given a server that refuses the recipient permanently
    (message,) = make_messages(workspace)
    server = ScriptedSMTP(rcpt_replies=("550 5.1.1 User unknown",))

    with smtp_server(server):
        with time_machine.travel(T0, tick=False):
            result = messages_send(message_ids=[str(message.pk)])
        # when a day passes and the retry machinery runs
        with time_machine.travel(T0 + timedelta(days=1), tick=False):
            due = messages_retry_due(limit=100)
            again = messages_send(message_ids=[str(message.pk)])

    # then it failed once, shows why, and was never tried again
    assert (result.failed, result.retrying) == (1, 0)
    assert due == []
    assert again.skipped == 1
    assert server.rcpt_commands == 1
    assert server.received == []
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.attempts == 1
    assert message.next_attempt_at is None
    assert message.esp_accepted_at is None
    assert message.error == "Rejected by the receiving server: 550 5.1.1 User unknown"


@pytest.mark.django_db
def test_one_failure_does_not_sink_the_rest_of_the_batch(workspace):
    # given three messages; the server refuses the first recipient and drops the second DATA
    messages = make_messages(workspace, count=3)
    server = ScriptedSMTP(
        rcpt_replies=("550 5.1.1 User unknown",),
        data_replies=("421 4.3.2 Shutting down",),
    )

    with smtp_server(server), time_machine.travel(T0, tick=False):
        result = messages_send(message_ids=ids_of(messages))

    # then the third still went out over a fresh connection
    assert (result.failed, result.retrying, result.sent) == (1, 1, 1)
    assert server.recipients() == ["reader2@example.org"]
    statuses = [Message.objects.get(pk=message.pk).status for message in messages]
    assert statuses == [MessageStatus.FAILED, MessageStatus.RETRYING, MessageStatus.SENT]


@pytest.mark.django_db
def test_a_temporary_failure_gives_up_24_hours_after_queueing(workspace):
    # given a message queued at T0 whose server keeps answering 451
    with time_machine.travel(T0, tick=False):
        (message,) = make_messages(workspace)
    server = ScriptedSMTP(data_replies=("451 4.3.0 Local error",) * 2)

    with smtp_server(server):
        with time_machine.travel(T0, tick=False):
            messages_send(message_ids=[str(message.pk)])
        # when the next retry runs more than 24 hours later
        Message.objects.filter(pk=message.pk).update(next_attempt_at=T0)
        with time_machine.travel(T0 + timedelta(hours=24, seconds=1), tick=False):
            result = messages_send(message_ids=[str(message.pk)])

    # then it fails for good, saying why
    assert result.failed == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.attempts == 2
    assert message.error == (
        "Gave up after 2 attempts over 24 hours. "
        "Temporary failure at the receiving server: 451 4.3.0 Local error"
    )
    assert server.received == []


@pytest.mark.django_db
def test_a_contact_who_unsubscribed_after_queueing_is_not_mailed(workspace):
    # given a queued message whose contact then unsubscribes everywhere
    (message,) = make_messages(workspace)
    contact_unsubscribe_all(contact=message.contact, source="test")
    server = ScriptedSMTP()

    # when the batch runs
    with smtp_server(server):
        messages_send(message_ids=[str(message.pk)])

    # then nothing went out and the message is cancelled, saying why
    assert server.rcpt_commands == 0
    message.refresh_from_db()
    assert message.status == MessageStatus.CANCELLED
    assert "unsubscribed" in message.error
    assert message.esp_accepted_at is None


@pytest.mark.django_db
def test_mailability_is_checked_again_at_the_moment_of_sending(workspace):
    # given two queued messages: one contact's status changed behind the engine's back (no
    # signal ran), the other's address was suppressed afterwards
    unsubscribed, suppressed = make_messages(workspace, count=2)
    Contact.objects.filter(pk=unsubscribed.contact_id).update(status=ContactStatus.UNSUBSCRIBED)
    suppression_add(
        workspace=workspace, email=suppressed.contact.email, reason=SuppressionReason.BOUNCED
    )
    server = ScriptedSMTP()

    # when the batch runs
    with smtp_server(server):
        result = messages_send(message_ids=ids_of([unsubscribed, suppressed]))

    # then neither is mailed and each is cancelled with the reason
    assert result.cancelled == 2
    assert server.rcpt_commands == 0
    unsubscribed.refresh_from_db()
    suppressed.refresh_from_db()
    assert (unsubscribed.status, unsubscribed.error) == (MessageStatus.CANCELLED, "unsubscribed")
    assert (suppressed.status, suppressed.error) == (MessageStatus.CANCELLED, "suppressed")


@pytest.mark.django_db
def test_an_unmailable_message_between_two_sent_ones_keeps_both_acceptances(workspace):
    # given three queued messages; the middle contact unsubscribed behind the engine's back,
    # so the claim that carries the first mail's acceptance matches nothing
    first, middle, last = make_messages(workspace, count=3)
    Contact.objects.filter(pk=middle.contact_id).update(status=ContactStatus.UNSUBSCRIBED)
    server = ScriptedSMTP()

    # when the batch runs
    with smtp_server(server), time_machine.travel(T0, tick=False):
        result = messages_send(message_ids=ids_of([first, middle, last]))

    # then the first and the last are sent and recorded, the middle one cancelled with why
    assert (result.sent, result.cancelled, result.skipped) == (2, 1, 0)
    assert server.recipients() == ["reader0@example.org", "reader2@example.org"]
    for message in (first, last):
        message.refresh_from_db()
        assert (message.status, message.esp_accepted_at, message.attempts) == (
            MessageStatus.SENT,
            T0,
            1,
        )
        assert message.esp_message_id.startswith(f"<{message.pk}@")
    middle.refresh_from_db()
    assert (middle.status, middle.error) == (MessageStatus.CANCELLED, "unsubscribed")
    assert middle.esp_accepted_at is None


@pytest.mark.django_db
def test_the_acceptance_before_a_rate_limit_deferral_is_recorded(workspace):
    # given a workspace allowed 2 mails per second and three queued messages
    Workspace.objects.filter(pk=workspace.pk).update(send_rate_per_second=2)
    messages = make_messages(workspace, count=3)
    server = ScriptedSMTP()

    # when one batch sends them within the same second, with no time to wait
    with smtp_server(server), time_machine.travel(T0, tick=False):
        result = messages_send(message_ids=ids_of(messages), max_wait_seconds=0)

    # then the second mail's acceptance was written although no claim followed it
    assert result.sent == 2
    statuses = [Message.objects.get(pk=message.pk).status for message in messages]
    assert statuses == [MessageStatus.SENT, MessageStatus.SENT, MessageStatus.QUEUED]
    assert Message.objects.filter(status=MessageStatus.SENDING).count() == 0


@pytest.mark.django_db
def test_the_send_rate_defers_the_third_mail_of_a_second_without_dropping_it(workspace):
    # given a workspace allowed 2 mails per second and three queued messages
    Workspace.objects.filter(pk=workspace.pk).update(send_rate_per_second=2)
    messages = make_messages(workspace, count=3)
    server = ScriptedSMTP()

    with smtp_server(server):
        # when one batch sends them within the same second, with no time to wait
        with time_machine.travel(T0, tick=False):
            result = messages_send(message_ids=ids_of(messages), max_wait_seconds=0)
        third = Message.objects.get(pk=messages[2].pk)

        # then two went out; the third stays queued, due at the next second
        assert (result.sent, result.deferred_ids) == (2, (str(messages[2].pk),))
        assert result.deferred_until == T0 + timedelta(seconds=0.5)
        assert server.recipients() == ["reader0@example.org", "reader1@example.org"]
        assert third.status == MessageStatus.QUEUED
        assert third.attempts == 0
        assert third.next_attempt_at == T0 + timedelta(seconds=0.5)

        # when the next second comes
        with time_machine.travel(T0 + timedelta(seconds=0.5), tick=False):
            due = messages_retry_due(limit=10)
            later = messages_send(message_ids=due, max_wait_seconds=0)

    # then it goes out too
    assert due == [str(messages[2].pk)]
    assert later.sent == 1
    assert server.recipients()[-1] == "reader2@example.org"


@pytest.mark.django_db
def test_stuck_messages_are_recovered_only_after_the_grace_period(workspace):
    # given a message claimed at T0 by a worker that then died
    (message,) = make_messages(workspace)
    with time_machine.travel(T0, tick=False):
        assert message_claim(message_id=str(message.pk), now=T0)

    # when recovery runs 5 and 11 minutes later
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        early = messages_recover_stuck(older_than=timedelta(minutes=10))
    with time_machine.travel(T0 + timedelta(minutes=11), tick=False):
        late = messages_recover_stuck(older_than=timedelta(minutes=10))
        due = messages_retry_due(limit=10)

    # then only the second takes it back, as a retry due at once
    assert (early, late) == (0, 1)
    assert due == [str(message.pk)]
    message.refresh_from_db()
    assert message.status == MessageStatus.RETRYING
    assert message.next_attempt_at == T0 + timedelta(minutes=11)
    assert message.attempts == 1


@pytest.mark.django_db
def test_a_claim_takes_only_due_unaccepted_queued_or_retrying_messages(workspace):
    queued, accepted, later, failed = make_messages(workspace, count=4)
    Message.objects.filter(pk=accepted.pk).update(status=MessageStatus.RETRYING, esp_accepted_at=T0)
    Message.objects.filter(pk=later.pk).update(next_attempt_at=T0 + timedelta(seconds=1))
    Message.objects.filter(pk=failed.pk).update(status=MessageStatus.FAILED)

    claims = [
        message_claim(message_id=str(message.pk), now=T0)
        for message in (queued, accepted, later, failed, queued)
    ]

    assert claims == [True, False, False, False, False]
    queued.refresh_from_db()
    assert (queued.status, queued.attempts) == (MessageStatus.SENDING, 1)


# --- concurrency and a killed worker (committed rows: transactional tests) -----------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_over_the_same_ids_send_each_mail_once(workspace):
    # given ten queued messages and two workers handed the same batch
    messages = make_messages(workspace, count=10)
    ids = ids_of(messages)
    server = ScriptedSMTP()
    start = threading.Barrier(2)
    results: list[Any] = []

    def worker() -> None:
        try:
            start.wait()
            results.append(messages_send(message_ids=ids))
        finally:
            connection.close()

    # when both run at the same time
    with smtp_server(server):
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    # then every mail went out exactly once
    assert sorted(Counter(server.recipients()).values()) == [1] * 10
    assert sum(result.sent for result in results) == 10
    assert sum(result.skipped for result in results) == 10
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}
    assert set(Message.objects.values_list("attempts", flat=True)) == {1}


WORKER = """
import json, os, sys
import django
django.setup()
from django.conf import settings
from config.env import parse_email_url
transport = parse_email_url(os.environ["SENDING_TEST_EMAIL_URL"], environ={})
settings.EMAIL_BACKEND = transport.backend
for name, value in transport.settings.items():
    setattr(settings, name, value)
from campaigns.sending import messages_send
messages_send(message_ids=json.loads(sys.argv[1]))
"""


def _database_url() -> str:
    database = connection.settings_dict
    credentials = quote(database["USER"] or "", safe="")
    if database["PASSWORD"]:
        credentials += ":" + quote(database["PASSWORD"], safe="")
    host = f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
    return f"postgres://{credentials}@{host}/{database['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_leaves_every_mail_sent_and_at_most_the_unrecorded_one_twice(
    workspace, settings
):
    # given 20 queued messages, a slow server (the mail is in, the 250 comes 0.2 s later),
    # and a worker process sending them as one batch
    Workspace.objects.filter(pk=workspace.pk).update(send_rate_per_second=1000)
    messages = make_messages(workspace, count=20)
    ids = ids_of(messages)
    server = ScriptedSMTP(delay=0.2, received_target=5)
    with smtp_server(server) as email_url:
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "SENDING_TEST_EMAIL_URL": email_url,
            "PYTHONPATH": str(ROOT),
        }
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(ids)], cwd=ROOT, env=environment
        )
        try:
            # when it is killed (SIGKILL) while the server holds the 5th mail
            assert server.received_event.wait(timeout=60), "the worker never sent 5 mails"
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        assert worker.returncode == -signal.SIGKILL

        statuses = Counter(Message.objects.values_list("status", flat=True))
        in_flight = {
            str(address)
            for address in Message.objects.filter(status=MessageStatus.SENDING).values_list(
                "contact__email", flat=True
            )
        }
        # at most one mail is in flight per worker; the rest were sent or never claimed
        assert len(in_flight) <= 1
        assert statuses[MessageStatus.SENT] >= 4
        assert sum(statuses.values()) == 20

        # and the worker is restarted: stuck messages recovered, the batch delivered again
        server.delay = 0.0
        recovered = messages_recover_stuck(older_than=timedelta(0))
        result = messages_send(message_ids=ids)

    # then every message is sent; only the one whose acceptance was not recorded came twice
    received = Counter(server.recipients())
    duplicates = {address for address, count in received.items() if count > 1}
    print(  # the measured window, for the report (pytest -s)
        f"\nSIGKILL: sent before kill={statuses[MessageStatus.SENT]}, in flight={in_flight}, "
        f"recovered={recovered}, resent now={result.sent}, received={sum(received.values())}, "
        f"duplicates={duplicates}"
    )
    assert recovered == len(in_flight)
    assert set(received) == {f"reader{number}@example.org" for number in range(20)}
    assert max(received.values()) <= 2
    assert len(duplicates) in (0, 1)
    assert duplicates <= in_flight
    assert sum(received.values()) == 20 + len(duplicates)
    assert result.sent == 20 - statuses[MessageStatus.SENT]
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}
    assert Message.objects.filter(esp_accepted_at__isnull=True).count() == 0


@pytest.mark.django_db
def test_a_batch_is_read_in_a_fixed_number_of_queries_and_shares_workspace_and_broadcast(
    workspace, django_assert_num_queries
):
    # given sequence messages and broadcast messages of one workspace
    from campaigns.models import Broadcast, BroadcastStatus
    from campaigns.sending import message_mail, messages_load

    sequence_messages = make_messages(workspace, 3)
    broadcast = Broadcast.objects.create(
        workspace=workspace,
        name="News",
        subject="News for {{ contact.first_name }}",
        html="<p>News</p>",
        status=BroadcastStatus.SENDING,
    )
    broadcast_messages = [
        Message.objects.create(
            workspace=workspace,
            contact=message.contact,
            broadcast=broadcast,
            subject="News",
        )
        for message in sequence_messages
    ]
    ids = ids_of(sequence_messages + broadcast_messages)

    # when the batch is read (messages with contacts and enrollments, workspaces, broadcasts,
    # tags) and every mail built (the batch's one sequence read once)
    with django_assert_num_queries(5):
        batch = messages_load(ids)
        sequences: dict[Any, Any] = {}
        mails = [message_mail(message=message, sequences=sequences) for message in batch.values()]

    # then every mail is built, and the messages share one workspace and one broadcast object
    assert sorted(str(mail.subject) for mail in mails) == sorted(
        [f"Welcome, Reader{n}" for n in range(3)] + [f"News for Reader{n}" for n in range(3)]
    )
    assert len({id(message.workspace) for message in batch.values()}) == 1
    assert len({id(m.broadcast) for m in batch.values() if m.broadcast_id is not None}) == 1


@pytest.mark.django_db
def test_sending_takes_one_query_per_mail_beyond_the_batch(workspace):
    # given two batches of queued messages, of 2 and of 5
    from django.db import connection as db_connection
    from django.test.utils import CaptureQueriesContext

    messages = make_messages(workspace, 8)
    first, small, large = messages[:1], messages[1:3], messages[3:]
    counts = []

    # when each is sent (after a first mail: the statements are prepared once per connection)
    with smtp_server(ScriptedSMTP()), time_machine.travel(T0, tick=False):
        messages_send(message_ids=ids_of(first))
        for batch in (small, large):
            with CaptureQueriesContext(db_connection) as queries:
                result = messages_send(message_ids=ids_of(batch))
            assert result.sent == len(batch)
            counts.append(len(queries))

    # then three more mails cost three more queries: each mail's claim, with the previous
    # mail's acceptance in the same query; reading and rendering cost the same for any size
    assert counts[1] - counts[0] == 3
