"""A known history built through the real services: a welcome sequence on an AIDA funnel,
mails sent by the engine (locmem mail backend), ESP-like milestones, human and machine opens,
human and bot clicks, a bounce, a complaint, an unsubscribe, stage moves forward and back, and
two purchases with values. The expected figures of every report follow from this history by
hand (see the comments)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from campaigns import engine
from campaigns.milestones import milestones_set
from campaigns.models import Message, Sequence, SequenceStatus
from campaigns.services import enrollment_create, sequence_create, sequence_set_status
from contacts.models import Contact, ContactStatus
from contacts.subscriptions import contact_unsubscribe_all
from core.models import Workspace
from funnel.models import Funnel, Stage, TransitionCause
from funnel.services import EventInput, contact_move, events_record, funnel_create
from tests.factories import ContactFactory

T0 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)  # a Monday
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


@dataclass
class History:
    workspace: Workspace
    funnel: Funnel
    sequence: Sequence
    stages: dict[str, Stage]
    contacts: dict[str, Contact]

    def message(self, name: str, step: str) -> Message:
        return Message.objects.get(contact=self.contacts[name], step_key=step)


def _run(capture: Any) -> None:
    with capture(execute=True):
        engine.tick()


@pytest.fixture
def history(
    workspace: Workspace, django_capture_on_commit_callbacks: Callable[..., Any]
) -> History:
    capture = django_capture_on_commit_callbacks
    Workspace.objects.filter(pk=workspace.pk).update(
        frequency_cap_per_day=10, frequency_cap_per_week=30, send_rate_per_second=1000
    )
    workspace.refresh_from_db()
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida", goal_event="purchase")
    stages = {stage.key: stage for stage in funnel.stages.all()}
    steps = [
        {"key": "welcome", "type": "email", "stage": str(stages["attention"].pk),
         "subject": "Welcome", "html": '<a href="https://shop.example/">Shop</a>', "next": "pause"},
        {"key": "pause", "type": "wait", "duration": "P2D", "next": "offer"},
        {"key": "offer", "type": "email", "stage": str(stages["desire"].pk),
         "subject": "An offer", "html": "<p>Offer</p>", "next": None},
    ]  # fmt: skip
    sequence = sequence_create(
        workspace=workspace,
        funnel=funnel,
        name="Welcome",
        steps=steps,
        exit_on=[{"type": "event", "name": "purchase"}],
    )
    sequence = sequence_set_status(sequence=sequence, status=SequenceStatus.ACTIVE)
    contacts = {
        name: ContactFactory(
            workspace=workspace,
            email=f"{name}@example.org",
            status=ContactStatus.SUBSCRIBED,
            timezone="UTC",
        )
        for name in ("ada", "bo", "cy", "di", "eve")
    }
    result = History(workspace, funnel, sequence, stages, contacts)

    def move(name: str, stage: str, at: dt.datetime) -> None:
        contact_move(
            funnel=funnel,
            contact=contacts[name],
            stage=stages[stage],
            cause=TransitionCause.MANUAL,
            occurred_at=at,
        )

    def purchase(name: str, value: str, at: dt.datetime) -> None:
        with time_machine.travel(at, tick=False), capture(execute=True):
            events_record(
                workspace=workspace,
                inputs=[
                    EventInput(
                        name="purchase",
                        contact_id=contacts[name].pk,
                        value=Decimal(value),
                        currency="EUR",
                        occurred_at=at,
                    )
                ],
            )

    # Day 0: the welcome mail goes to all five; four enter the funnel at attention.
    with time_machine.travel(T0, tick=False):
        for contact in contacts.values():
            enrollment_create(sequence=sequence, contact=contact)
        _run(capture)
        for name in ("ada", "bo", "cy", "di"):
            move(name, "attention", T0)
    welcome = {name: result.message(name, "welcome") for name in contacts}
    milestones_set("delivered", {welcome["ada"].pk: T0 + HOUR, welcome["bo"].pk: T0 + HOUR})
    with capture(execute=True):
        # ada opens and clicks (a person), bo's proxy opens at once and bo opens a day later
        engine.message_opened(welcome["ada"].pk, T0 + HOUR)
        engine.message_clicked(welcome["ada"].pk, "https://shop.example/", T0 + 2 * HOUR)
        milestones_set("machine_opened", {welcome["bo"].pk: T0 + dt.timedelta(seconds=5)})
        engine.message_opened(welcome["bo"].pk, T0 + DAY)
    # cy's mail bounces, di's scanner clicks it and di complains, eve unsubscribes
    milestones_set("bounced", {welcome["cy"].pk: T0 + dt.timedelta(minutes=1)})
    milestones_set("bot_clicked", {welcome["di"].pk: T0 + dt.timedelta(seconds=3)})
    milestones_set("complained", {welcome["di"].pk: T0 + 5 * HOUR})
    with time_machine.travel(T0 + 6 * HOUR, tick=False):
        contact_unsubscribe_all(contact=contacts["eve"], source="test")
    milestones_set("unsubscribed", {welcome["eve"].pk: T0 + 6 * HOUR})

    # Moves: ada attention -> interest (3 h) -> desire (day 1); bo attention -> interest
    # (day 1) -> back to attention an hour later.
    move("ada", "interest", T0 + 3 * HOUR)
    move("ada", "desire", T0 + DAY)
    move("bo", "interest", T0 + DAY)
    move("bo", "attention", T0 + DAY + HOUR)
    # Purchases: ada in desire (100 EUR, a day after her click), cy in attention (50 EUR).
    purchase("ada", "100.00", T0 + DAY + 2 * HOUR)
    purchase("cy", "50.00", T0 + DAY + 3 * HOUR)

    # Day 2: the offer goes to those still running (ada and cy converted, eve left).
    with time_machine.travel(T0 + 2 * DAY, tick=False):
        _run(capture)
    return result
