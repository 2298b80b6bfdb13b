"""Issue 5's acceptance, end to end through the engine, the renderer and a real SMTP server on
loopback, with controlled time: an AIDA sequence with waits, a click branch and its timeout, a
goal that converts, and an unsubscribe that stops everything."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import pytest
import time_machine
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler
from django.test import override_settings

from campaigns import engine
from campaigns.models import Enrollment, EnrollmentStatus, Message, SequenceStatus
from campaigns.services import enrollment_create, sequence_create, sequence_set_status
from config.env import parse_email_url
from contacts.models import ContactStatus
from contacts.subscriptions import contact_unsubscribe_all
from core.models import Workspace
from funnel.services import EventInput, events_record, funnel_create
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)  # a Monday


class Inbox(MessageHandler):
    def __init__(self) -> None:
        super().__init__()
        self.subjects: list[str] = []

    def handle_message(self, message: Any) -> None:
        self.subjects.append(str(message["Subject"]))


@pytest.fixture
def inbox():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    transport = parse_email_url(f"smtp://127.0.0.1:{port}", environ={})
    with override_settings(EMAIL_BACKEND=transport.backend, **transport.settings):
        yield handler
    controller.stop()


@pytest.fixture
def aida(workspace: Workspace):
    Workspace.objects.filter(pk=workspace.pk).update(
        frequency_cap_per_day=10, frequency_cap_per_week=30
    )
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida", goal_event="purchase")
    stage = {s.key: str(s.pk) for s in funnel.stages.all()}
    steps = [
        {"key": "attention", "type": "email", "stage": stage["attention"],
         "subject": "Hi {{ contact.first_name }}", "html": '<a href="https://shop.example/">Shop</a>',
         "next": "clicked"},
        {"key": "clicked", "type": "wait_for", "event": {"clicked": "attention"},
         "timeout": "P3D", "yes": "desire", "no": "interest"},
        {"key": "interest", "type": "email", "stage": stage["interest"],
         "subject": "Still curious?", "html": "<p>Interest</p>", "next": "pause"},
        {"key": "pause", "type": "wait", "duration": "P2D", "next": "desire"},
        {"key": "desire", "type": "email", "stage": stage["desire"],
         "subject": "You will love it", "html": "<p>Desire</p>", "next": None},
    ]  # fmt: skip
    sequence = sequence_create(
        workspace=workspace,
        funnel=funnel,
        name="AIDA",
        steps=steps,
        exit_on=[{"type": "event", "name": "purchase"}],
    )
    return sequence_set_status(sequence=sequence, status=SequenceStatus.ACTIVE)


def run(capture) -> None:
    """One beat tick, with the sending task it schedules run at commit (eager Celery)."""
    with capture(execute=True):
        engine.tick()


def test_click_takes_the_yes_branch_within_one_tick(
    aida, workspace, inbox, django_capture_on_commit_callbacks
):
    contact = ContactFactory(workspace=workspace, first_name="Ada", status=ContactStatus.SUBSCRIBED)
    with time_machine.travel(T0, tick=False):
        enrollment_create(sequence=aida, contact=contact)
        run(django_capture_on_commit_callbacks)
    assert inbox.subjects == ["Hi Ada"]

    # when the person clicks two hours later
    with time_machine.travel(T0 + dt.timedelta(hours=2), tick=False):
        message = Message.objects.get(contact=contact, step_key="attention")
        with django_capture_on_commit_callbacks(execute=True):
            engine.message_clicked(message.pk, "https://shop.example/")
        run(django_capture_on_commit_callbacks)

    # then the yes-mail left at once, and the run is complete
    assert inbox.subjects == ["Hi Ada", "You will love it"]
    enrollment = Enrollment.objects.get(contact=contact)
    assert enrollment.status == EnrollmentStatus.COMPLETED


def test_without_a_click_the_timeout_takes_the_no_branch_and_the_waits_hold(
    aida, workspace, inbox, django_capture_on_commit_callbacks
):
    contact = ContactFactory(workspace=workspace, first_name="Bo", status=ContactStatus.SUBSCRIBED)
    with time_machine.travel(T0, tick=False):
        enrollment_create(sequence=aida, contact=contact)
        run(django_capture_on_commit_callbacks)
    # nothing before the timeout
    with time_machine.travel(T0 + dt.timedelta(days=2, hours=23), tick=False):
        run(django_capture_on_commit_callbacks)
    assert inbox.subjects == ["Hi Bo"]
    # the no-branch at the timeout, then the desire mail two days later
    with time_machine.travel(T0 + dt.timedelta(days=3), tick=False):
        run(django_capture_on_commit_callbacks)
    assert inbox.subjects == ["Hi Bo", "Still curious?"]
    with time_machine.travel(T0 + dt.timedelta(days=5), tick=False):
        run(django_capture_on_commit_callbacks)
    assert inbox.subjects == ["Hi Bo", "Still curious?", "You will love it"]


def test_the_goal_converts_and_an_unsubscribe_stops_everything(
    aida, workspace, inbox, django_capture_on_commit_callbacks
):
    buyer = ContactFactory(workspace=workspace, first_name="Cy", status=ContactStatus.SUBSCRIBED)
    leaver = ContactFactory(workspace=workspace, first_name="Di", status=ContactStatus.SUBSCRIBED)
    with time_machine.travel(T0, tick=False):
        enrollment_create(sequence=aida, contact=buyer)
        enrollment_create(sequence=aida, contact=leaver)
        run(django_capture_on_commit_callbacks)
    assert sorted(inbox.subjects) == ["Hi Cy", "Hi Di"]

    with time_machine.travel(T0 + dt.timedelta(days=1), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            events_record(
                workspace=workspace,
                inputs=[EventInput(name="purchase", contact_id=buyer.pk, value=None)],
            )
        contact_unsubscribe_all(contact=leaver, source="test")

    # then nothing more goes to either, at any later time
    with time_machine.travel(T0 + dt.timedelta(days=10), tick=False):
        run(django_capture_on_commit_callbacks)
    assert sorted(inbox.subjects) == ["Hi Cy", "Hi Di"]
    assert Enrollment.objects.get(contact=buyer).status == EnrollmentStatus.CONVERTED
    assert Enrollment.objects.get(contact=leaver).status == EnrollmentStatus.EXITED
