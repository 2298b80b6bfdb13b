"""The sequence engine: tick, waits, email steps, window and cap, reactions, triggers, races."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
import time_machine
from django.db import connection

from campaigns import engine
from campaigns.models import (
    Enrollment,
    Message,
    MessageStatus,
    SegmentMembership,
    Sequence,
    SequenceStatus,
)
from campaigns.services import (
    enrollment_create,
    sequence_create,
    sequence_set_status,
    sequence_update,
)
from contacts.models import Contact, ContactStatus
from contacts.segments import segment_create
from contacts.services import contact_update
from contacts.subscriptions import (
    SignupContext,
    contact_confirm,
    contact_unsubscribe_all,
    list_subscribe,
    mailing_list_create,
)
from core.models import Workspace
from funnel.models import Funnel, StageTransition
from funnel.services import EventInput, contact_move, events_record, funnel_create
from tests.factories import ContactFactory, WorkspaceFactory

T0 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)  # a Monday
HTML = "<p>Hello {{ contact.first_name }}</p>"


def email(key: str, next_key: str | None, **extra: Any) -> dict[str, Any]:
    return {"key": key, "type": "email", "subject": f"Mail {key}", "html": HTML, "next": next_key}


def wait(key: str, duration: str, next_key: str | None) -> dict[str, Any]:
    return {"key": key, "type": "wait", "duration": duration, "next": next_key}


@pytest.fixture
def make_sequence(workspace: Workspace) -> Callable[..., Sequence]:
    def make(steps: list[dict[str, Any]], **data: Any) -> Sequence:
        sequence = sequence_create(
            workspace=workspace, name=data.pop("name", "Seq"), steps=steps, **data
        )
        return sequence_set_status(sequence=sequence, status=SequenceStatus.ACTIVE)

    return make


@pytest.fixture
def subscriber(workspace: Workspace) -> Contact:
    contact: Contact = ContactFactory(
        workspace=workspace, status=ContactStatus.SUBSCRIBED, timezone="UTC"
    )
    return contact


def loose_caps(workspace: Workspace, per_day: int = 20, per_week: int = 50) -> None:
    Workspace.objects.filter(pk=workspace.pk).update(
        frequency_cap_per_day=per_day, frequency_cap_per_week=per_week
    )


def state(enrollment: Enrollment) -> tuple[str, str, dt.datetime | None]:
    enrollment.refresh_from_db()
    return enrollment.status, enrollment.current_step, enrollment.next_run_at


def sent_steps(enrollment: Enrollment) -> list[tuple[str, dt.datetime]]:
    return list(
        Message.objects.filter(enrollment=enrollment)
        .order_by("created_at")
        .values_list("step_key", "created_at")
    )


# --- the AIDA sequence with waits


def test_three_email_aida_sequence_sends_each_mail_at_its_time(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    # given an AIDA funnel and attention -> 2 days -> interest -> 3 days -> desire
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida")
    attention, interest, desire = [str(s.pk) for s in funnel.stages.order_by("position")][:3]
    steps = [
        {**email("attention", "w1"), "stage": attention},
        wait("w1", "P2D", "interest"),
        {**email("interest", "w2"), "stage": interest},
        wait("w2", "P3D", "desire"),
        {**email("desire", None), "stage": desire},
    ]
    sequence = make_sequence(steps, funnel=funnel)
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None

        # when the tick runs at enrollment, two days later and five days later
        first = engine.tick()
        assert first.claimed == 1 and first.messages == 1
        assert state(enrollment) == ("active", "w1", T0 + dt.timedelta(days=2))

        clock.move_to(T0 + dt.timedelta(days=2) - dt.timedelta(seconds=1))
        assert engine.tick().claimed == 0  # not due a second early

        clock.move_to(T0 + dt.timedelta(days=2))
        assert engine.tick().messages == 1
        assert state(enrollment) == ("active", "w2", T0 + dt.timedelta(days=5))

        clock.move_to(T0 + dt.timedelta(days=5))
        assert engine.tick().messages == 1

    # then three messages at exactly those times, each with its stage, and the run completed
    assert sent_steps(enrollment) == [
        ("attention", T0),
        ("interest", T0 + dt.timedelta(days=2)),
        ("desire", T0 + dt.timedelta(days=5)),
    ]
    assert [
        str(m.stage_id)
        for m in Message.objects.filter(enrollment=enrollment).order_by("created_at")
    ] == [
        attention,
        interest,
        desire,
    ]
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.QUEUED}
    assert state(enrollment) == ("completed", "desire", None)


def test_a_repeated_tick_never_makes_a_second_message(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    sequence = make_sequence([email("a", "w"), wait("w", "P1D", None)])
    with time_machine.travel(T0, tick=False):
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None
        engine.tick()
        # a crashed tick would leave the enrollment due at the email step again
        Enrollment.objects.filter(pk=enrollment.pk).update(current_step="a", next_run_at=T0)
        second = engine.tick()
    assert second.messages == 1  # the existing message is handed on again, not duplicated
    assert Message.objects.filter(enrollment=enrollment).count() == 1


def test_wait_until_a_local_time_uses_the_contacts_zone(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    contact = ContactFactory(
        workspace=workspace, status=ContactStatus.SUBSCRIBED, timezone="Europe/Berlin"
    )
    sequence = make_sequence(
        [{"key": "w", "type": "wait", "until": "09:00", "next": "a"}, email("a", None)]
    )
    with time_machine.travel(T0, tick=False):  # 11:00 in Berlin
        enrollment = enrollment_create(sequence=sequence, contact=contact)
        assert enrollment is not None
        engine.tick()
    # the next 09:00 in Berlin is Tuesday 08:00 UTC
    assert state(enrollment) == ("active", "w", dt.datetime(2025, 1, 7, 8, 0, tzinfo=dt.UTC))


# --- wait_for reactions


@pytest.fixture
def click_sequence(workspace: Workspace, make_sequence: Callable[..., Sequence]) -> Sequence:
    loose_caps(workspace)
    return make_sequence(
        [
            email("pitch", "wf"),
            {
                "key": "wf",
                "type": "wait_for",
                "event": {"clicked": "pitch"},
                "timeout": "P3D",
                "yes": "offer",
                "no": "reminder",
            },
            email("offer", None),
            email("reminder", None),
        ]
    )


def test_a_click_wakes_the_enrollment_and_the_yes_mail_is_made_within_one_tick(
    subscriber: Contact, click_sequence: Sequence
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=click_sequence, contact=subscriber)
        assert enrollment is not None
        engine.tick()
        assert state(enrollment) == ("active", "wf", T0 + dt.timedelta(days=3))
        pitch = Message.objects.get(enrollment=enrollment, step_key="pitch")

        # when the person clicks an hour later
        clicked_at = T0 + dt.timedelta(hours=1)
        clock.move_to(clicked_at)
        assert engine.message_clicked(pitch.pk, "https://example.org/offer") is True
        assert engine.message_clicked(pitch.pk, "https://example.org/offer") is False

        # then the enrollment is due now at the yes-branch and the next tick makes its mail
        assert state(enrollment) == ("active", "offer", clicked_at)
        assert engine.tick().messages == 1
    pitch.refresh_from_db()
    assert (pitch.opened_at, pitch.clicked_at) == (clicked_at, clicked_at)
    assert sent_steps(enrollment) == [("pitch", T0), ("offer", clicked_at)]
    assert state(enrollment)[0] == "completed"


def test_a_batch_of_clicks_on_two_mails_of_one_run_wakes_the_wait_for_either(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    # given a run that got two mails and waits for a click on the first one
    loose_caps(workspace)
    sequence = make_sequence(
        [
            email("hello", "pitch"),
            email("pitch", "wf"),
            {
                "key": "wf",
                "type": "wait_for",
                "event": {"clicked": "hello"},
                "timeout": "P3D",
                "yes": "offer",
                "no": None,
            },
            email("offer", None),
        ]
    )
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None
        engine.tick()
        assert state(enrollment) == ("active", "wf", T0 + dt.timedelta(days=3))
        hello = Message.objects.get(enrollment=enrollment, step_key="hello")
        pitch = Message.objects.get(enrollment=enrollment, step_key="pitch")

        # when one ingest batch holds clicks on both mails
        clicked_at = T0 + dt.timedelta(hours=1)
        clock.move_to(clicked_at)
        first = engine.messages_clicked(
            [
                (pitch.pk, "https://example.org/pitch", clicked_at),
                (hello.pk, "https://example.org/hello", clicked_at),
            ]
        )

    # then both are first clicks and the run woke for the click on "hello"
    assert sorted(first) == sorted([str(hello.pk), str(pitch.pk)])
    assert state(enrollment) == ("active", "offer", clicked_at)


def test_no_click_before_the_timeout_takes_the_no_branch(
    subscriber: Contact, click_sequence: Sequence
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=click_sequence, contact=subscriber)
        assert enrollment is not None
        engine.tick()
        clock.move_to(T0 + dt.timedelta(days=3))
        engine.tick()
        pitch = Message.objects.get(enrollment=enrollment, step_key="pitch")
        # a late click after the timeout changes nothing any more
        clock.move_to(T0 + dt.timedelta(days=4))
        engine.message_clicked(pitch.pk, "https://example.org/offer")
    assert sent_steps(enrollment) == [("pitch", T0), ("reminder", T0 + dt.timedelta(days=3))]
    assert state(enrollment) == ("completed", "reminder", None)


def test_an_event_wakes_a_run_waiting_for_it(
    workspace: Workspace,
    subscriber: Contact,
    make_sequence: Callable[..., Sequence],
    django_capture_on_commit_callbacks: Any,
) -> None:
    loose_caps(workspace)
    sequence = make_sequence(
        [
            {
                "key": "wf",
                "type": "wait_for",
                "event": {"event": "demo_booked"},
                "timeout": "P7D",
                "yes": "thanks",
                "no": None,
            },
            email("thanks", None),
        ]
    )
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None
        engine.tick()
        clock.move_to(T0 + dt.timedelta(hours=5))
        with django_capture_on_commit_callbacks(execute=True):
            events_record(
                workspace=workspace,
                inputs=[EventInput(name="demo_booked", contact_id=subscriber.pk)],
            )
    # the reaction scheduled a tick at once (eager in tests): the yes-mail exists already
    assert sent_steps(enrollment) == [("thanks", T0 + dt.timedelta(hours=5))]


# --- goals


def test_a_goal_event_ends_the_run_as_converted_and_cancels_its_unsent_mail(
    workspace: Workspace,
    subscriber: Contact,
    make_sequence: Callable[..., Sequence],
    django_capture_on_commit_callbacks: Any,
) -> None:
    sequence = make_sequence(
        [email("a", "w"), wait("w", "P2D", "b"), email("b", None)],
        exit_on=[{"type": "event", "name": "purchase"}],
    )
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None
        engine.tick()
        clock.move_to(T0 + dt.timedelta(hours=1))
        with django_capture_on_commit_callbacks(execute=True):
            events_record(
                workspace=workspace, inputs=[EventInput(name="purchase", contact_id=subscriber.pk)]
            )
        clock.move_to(T0 + dt.timedelta(days=2))
        assert engine.tick().claimed == 0
    enrollment.refresh_from_db()
    assert (enrollment.status, enrollment.exit_reason, enrollment.next_run_at) == (
        "converted",
        "goal: purchase",
        None,
    )
    assert list(
        Message.objects.filter(enrollment=enrollment).values_list("step_key", "status")
    ) == [("a", MessageStatus.CANCELLED)]


# --- send window and frequency cap


@pytest.mark.parametrize(
    ("zone", "opens_at"),
    [
        # Monday 20:00 UTC is 21:00 in Berlin: the window opens Tuesday 09:00 Berlin = 08:00 UTC
        ("Europe/Berlin", dt.datetime(2025, 1, 7, 8, 0, tzinfo=dt.UTC)),
        ("UTC", dt.datetime(2025, 1, 7, 9, 0, tzinfo=dt.UTC)),
    ],
)
def test_the_send_window_defers_to_its_next_opening_in_the_contacts_zone(
    workspace: Workspace,
    make_sequence: Callable[..., Sequence],
    zone: str,
    opens_at: dt.datetime,
) -> None:
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED, timezone=zone)
    sequence = make_sequence(
        [email("a", None)], send_window={"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "18:00"}
    )
    late = dt.datetime(2025, 1, 6, 20, 0, tzinfo=dt.UTC)
    with time_machine.travel(late, tick=False) as clock:
        enrollment = enrollment_create(sequence=sequence, contact=contact)
        assert enrollment is not None
        result = engine.tick()
        assert (result.deferred, result.messages) == (1, 0)
        assert state(enrollment) == ("active", "a", opens_at)
        assert not Message.objects.exists()

        clock.move_to(opens_at)
        assert engine.tick().messages == 1
    assert sent_steps(enrollment) == [("a", opens_at)]


def test_the_window_skips_days_not_listed(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    sequence = make_sequence(
        [email("a", None)], send_window={"days": [0], "start": "09:00", "end": "18:00"}
    )
    saturday = dt.datetime(2025, 1, 11, 12, 0, tzinfo=dt.UTC)
    with time_machine.travel(saturday, tick=False):
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None
        engine.tick()
    assert state(enrollment)[2] == dt.datetime(2025, 1, 13, 9, 0, tzinfo=dt.UTC)


def test_the_daily_cap_defers_the_second_mail_by_24_hours_and_never_drops_it(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    # given two sequences that want to mail the same contact at the same moment (cap 1/day)
    first = make_sequence([email("a", None)], name="First")
    second = make_sequence([email("b", None)], name="Second")
    with time_machine.travel(T0, tick=False) as clock:
        one = enrollment_create(sequence=first, contact=subscriber)
        two = enrollment_create(sequence=second, contact=subscriber)
        assert one is not None and two is not None
        result = engine.tick()
        assert (result.messages, result.deferred) == (1, 1)
        deferred = two if Message.objects.filter(enrollment=one).exists() else one
        assert state(deferred)[2] == T0 + dt.timedelta(days=1)

        clock.move_to(T0 + dt.timedelta(days=1))
        assert engine.tick().messages == 1
    assert Message.objects.filter(contact=subscriber).count() == 2
    assert sorted(Message.objects.values_list("created_at", flat=True)) == [
        T0,
        T0 + dt.timedelta(days=1),
    ]


def test_the_weekly_cap_defers_to_when_the_oldest_mail_ages_out() -> None:
    sent = [T0 - dt.timedelta(days=6), T0 - dt.timedelta(days=4), T0 - dt.timedelta(days=2)]
    assert engine.cap_free_at(T0, sent, per_day=1, per_week=3) == T0 + dt.timedelta(days=1)
    assert engine.cap_free_at(T0, sent[1:], per_day=1, per_week=3) == T0
    assert engine.cap_free_at(T0, [T0 - dt.timedelta(hours=1)], per_day=1, per_week=3) == (
        T0 + dt.timedelta(hours=23)
    )


def test_a_capped_mail_outside_the_window_waits_for_both(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    # the cap frees Tuesday 17:30 UTC (window closed from 17:00): the mail goes Wednesday 09:00
    first = make_sequence([email("a", None)], name="First")
    second = make_sequence(
        [email("b", None)],
        name="Second",
        send_window={"days": [0, 1, 2], "start": "09:00", "end": "17:00"},
    )
    monday_late = dt.datetime(2025, 1, 6, 17, 30, tzinfo=dt.UTC)
    with time_machine.travel(monday_late, tick=False):
        enrollment_create(sequence=first, contact=subscriber)
        engine.tick()
        run = enrollment_create(sequence=second, contact=subscriber)
        assert run is not None
        engine.tick()
    assert state(run)[2] == dt.datetime(2025, 1, 8, 9, 0, tzinfo=dt.UTC)


# --- unsubscribe and unmailable contacts


def test_an_unsubscribe_mid_sequence_ends_the_run_and_cancels_queued_mail(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    sequence = make_sequence([email("a", "w"), wait("w", "P1D", "b"), email("b", None)])
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None
        engine.tick()
        contact_unsubscribe_all(contact=subscriber, source="test")
        clock.move_to(T0 + dt.timedelta(days=2))
        assert engine.tick().claimed == 0
    enrollment.refresh_from_db()
    assert (enrollment.status, enrollment.exit_reason, enrollment.next_run_at) == (
        "exited",
        "unsubscribed",
        None,
    )
    assert list(Message.objects.values_list("step_key", "status")) == [("a", "cancelled")]


def test_an_unmailable_contact_exits_at_the_email_step_with_a_reason(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    contact = ContactFactory(workspace=workspace, status=ContactStatus.NOT_SUBSCRIBED)
    sequence = make_sequence([email("a", None)])
    enrollment = enrollment_create(sequence=sequence, contact=contact)
    assert enrollment is not None
    engine.tick()
    enrollment.refresh_from_db()
    assert enrollment.status == "exited"
    assert enrollment.exit_reason == "contact not mailable (not_subscribed) at a"
    assert not Message.objects.exists()


# --- instant steps


def test_instant_steps_run_in_one_tick_until_a_wait(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida")
    interest = funnel.stages.order_by("position")[1]
    sequence = make_sequence(
        [
            {"key": "tag", "type": "add_tag", "tag": "vip", "next": "cond"},
            {
                "key": "cond",
                "type": "condition",
                "if": {"all": [{"tag": "vip"}]},
                "yes": "attr",
                "no": "bye",
            },
            {
                "key": "attr",
                "type": "set_attribute",
                "name": "plan",
                "value": "gold",
                "next": "move",
            },
            {"key": "move", "type": "move_stage", "stage": str(interest.pk), "next": "split"},
            {
                "key": "split",
                "type": "split",
                "paths": [{"weight": 1, "next": "w"}, {"weight": 1, "next": "w"}],
            },
            wait("w", "P1D", "bye"),
            {"key": "bye", "type": "exit"},
        ],
        funnel=funnel,
    )
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None
        assert engine.tick().steps == 5
        assert state(enrollment) == ("active", "w", T0 + dt.timedelta(days=1))
        clock.move_to(T0 + dt.timedelta(days=1))
        engine.tick()
    subscriber.refresh_from_db()
    assert list(subscriber.tags.values_list("name", flat=True)) == ["vip"]
    assert subscriber.attributes["plan"] == "gold"
    transition = StageTransition.objects.get(contact=subscriber)
    assert (transition.to_stage_id, transition.cause) == (interest.pk, "sequence_step")
    assert state(enrollment)[0] == "exited"


# --- two workers racing


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_make_exactly_one_message_per_enrollment_step() -> None:
    workspace = WorkspaceFactory()
    sequence = sequence_create(
        workspace=workspace, name="Race", steps=[email("a", "w"), wait("w", "P1D", None)]
    )
    sequence_set_status(sequence=sequence, status=SequenceStatus.ACTIVE)
    for number in range(200):
        contact = ContactFactory(
            workspace=workspace, status=ContactStatus.SUBSCRIBED, email=f"race{number}@example.org"
        )
        enrollment_create(sequence=sequence, contact=contact)
    Enrollment.objects.update(next_run_at=T0)  # all due at once
    claimed: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker() -> None:
        try:
            start.wait()
            while True:
                result = engine.tick(limit=25)
                if not result.claimed:
                    break
                claimed.append(result.claimed)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sum(claimed) == 200
    assert Message.objects.count() == 200
    assert Message.objects.values("enrollment_id", "step_key").distinct().count() == 200
    assert not Enrollment.objects.filter(current_step="a").exists()


# --- triggers


def test_confirming_a_list_through_double_opt_in_starts_its_sequence(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    newsletter = mailing_list_create(workspace=workspace, name="Newsletter")
    other = mailing_list_create(workspace=workspace, name="Other")
    sequence = make_sequence(
        [email("welcome", None)], trigger={"type": "list_confirmed", "list": str(newsletter.pk)}
    )
    unrelated = make_sequence(
        [email("x", None)], name="Other", trigger={"type": "list_confirmed", "list": str(other.pk)}
    )
    result = list_subscribe(
        mailing_list=newsletter,
        email="new@example.org",
        context=SignupContext(ip="192.0.2.1", consent_text="Yes, send me news.", source="api"),
    )
    assert not Enrollment.objects.exists()  # pending: not before the confirmation
    contact_confirm(contact=result.contact, ip="192.0.2.1", user_agent="test")
    assert list(Enrollment.objects.values_list("sequence_id", "contact_id", "status")) == [
        (sequence.pk, result.contact.pk, "active")
    ]
    assert not Enrollment.objects.filter(sequence=unrelated).exists()


def test_an_event_starts_its_sequence(
    workspace: Workspace,
    subscriber: Contact,
    make_sequence: Callable[..., Sequence],
    django_capture_on_commit_callbacks: Any,
) -> None:
    sequence = make_sequence([email("a", None)], trigger={"type": "event", "name": "signed_up"})
    with django_capture_on_commit_callbacks(execute=True):
        events_record(
            workspace=workspace, inputs=[EventInput(name="page_view", contact_id=subscriber.pk)]
        )
    assert not Enrollment.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        events_record(
            workspace=workspace, inputs=[EventInput(name="signed_up", contact_id=subscriber.pk)]
        )
    assert list(Enrollment.objects.values_list("sequence_id", "contact_id")) == [
        (sequence.pk, subscriber.pk)
    ]


def test_entering_a_stage_starts_its_sequence(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    funnel: Funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida")
    attention, interest = list(funnel.stages.order_by("position"))[:2]
    sequence = make_sequence(
        [email("a", None)],
        funnel=funnel,
        trigger={"type": "stage_entered", "stage": str(interest.pk)},
    )
    contact_move(funnel=funnel, contact=subscriber, stage=attention, cause="manual")
    assert not Enrollment.objects.exists()
    contact_move(funnel=funnel, contact=subscriber, stage=interest, cause="manual")
    assert list(Enrollment.objects.values_list("sequence_id", "contact_id")) == [
        (sequence.pk, subscriber.pk)
    ]


def test_stalled_contacts_are_enrolled_once_per_stay(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    funnel: Funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida")
    interest = funnel.stages.order_by("position")[1]
    make_sequence(
        [email("a", None)],
        funnel=funnel,
        reentry="after_exit",
        trigger={"type": "stalled", "stage": str(interest.pk), "after": "P7D"},
    )
    with time_machine.travel(T0, tick=False) as clock:
        contact_move(funnel=funnel, contact=subscriber, stage=interest, cause="manual")
        clock.move_to(T0 + dt.timedelta(days=6))
        assert engine.stalled_scan() == 0
        clock.move_to(T0 + dt.timedelta(days=7))
        assert engine.stalled_scan() == 1
        engine.tick()  # the one-mail run completes
        clock.move_to(T0 + dt.timedelta(days=30))
        assert engine.stalled_scan() == 0  # same stay: not again
    assert Enrollment.objects.filter(contact=subscriber).count() == 1


@pytest.mark.parametrize(("reentry", "runs"), [("always", 2), ("after_exit", 1), ("never", 1)])
def test_reentry_always_restarts_a_run_still_going_and_cancels_its_unsent_mail(
    workspace: Workspace,
    subscriber: Contact,
    make_sequence: Callable[..., Sequence],
    reentry: str,
    runs: int,
) -> None:
    # given a run that has queued its first mail and waits a day before the second
    sequence = make_sequence(
        [email("a", "w"), wait("w", "P1D", "b"), email("b", None)], reentry=reentry
    )
    with time_machine.travel(T0, tick=False):
        first = enrollment_create(sequence=sequence, contact=subscriber)
        assert first is not None
        engine.tick()

        # when the contact enters the sequence again an hour later
        with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
            second = enrollment_create(sequence=sequence, contact=subscriber, reason="event")

    # then with "always" the first run ended as restarted, its unsent mail cancelled, and a
    # new run starts at the first step; the other policies keep the run going and start none
    first.refresh_from_db()
    assert Enrollment.objects.filter(sequence=sequence, contact=subscriber).count() == runs
    first_mail = Message.objects.get(enrollment=first)
    if reentry == "always":
        assert second is not None
        assert (second.status, second.current_step) == ("active", "a")
        assert (first.status, first.exit_reason, first.next_run_at) == ("exited", "restarted", None)
        assert (first_mail.status, first_mail.error) == (
            MessageStatus.CANCELLED,
            "cancelled: the run restarted",
        )
    else:
        assert second is None
        assert (first.status, first.current_step) == ("active", "w")
        assert first_mail.status == MessageStatus.QUEUED


def tagged(contact: Contact, *tags: str) -> None:
    contact_update(contact=contact, changes={"tags": list(tags)})


@pytest.mark.parametrize(
    ("reentry", "runs_after_rejoining"), [("after_exit", 2), ("always", 2), ("never", 1)]
)
def test_leaving_and_joining_the_segment_again_is_a_new_entry_that_the_reentry_policy_judges(
    workspace: Workspace,
    subscriber: Contact,
    make_sequence: Callable[..., Sequence],
    reentry: str,
    runs_after_rejoining: int,
) -> None:
    # given a one-mail sequence started by entering the segment of VIP-tagged contacts
    vips = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    sequence = make_sequence(
        [email("a", None)], reentry=reentry, trigger={"type": "segment", "segment": str(vips.pk)}
    )
    with time_machine.travel(T0, tick=False) as clock:
        # when the contact joins, its run starts; it completes while the contact stays
        tagged(subscriber, "vip")
        assert engine.segment_scan() == 1
        engine.tick()
        clock.move_to(T0 + dt.timedelta(minutes=5))
        assert engine.segment_scan() == 0  # staying is no new entry
        # and it leaves, then comes back
        tagged(subscriber)
        assert engine.segment_scan() == 0
        membership = SegmentMembership.objects.get(sequence=sequence, contact=subscriber)
        assert membership.left_at == T0 + dt.timedelta(minutes=5)
        clock.move_to(T0 + dt.timedelta(minutes=10))
        tagged(subscriber, "vip")
        rejoined = engine.segment_scan()

    # then coming back is an entry: a second run unless the policy says once per contact
    assert rejoined == runs_after_rejoining - 1
    assert Enrollment.objects.filter(sequence=sequence, contact=subscriber).count() == (
        runs_after_rejoining
    )
    membership.refresh_from_db()
    assert (membership.joined_at, membership.left_at) == (T0 + dt.timedelta(minutes=10), None)


def test_a_member_with_a_run_from_before_the_scan_kept_track_gets_no_second_run(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    # given a member that was enrolled by hand and finished its run, never seen by a scan
    vips = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    sequence = make_sequence(
        [email("a", None)],
        reentry="after_exit",
        trigger={"type": "segment", "segment": str(vips.pk)},
    )
    tagged(subscriber, "vip")
    with time_machine.travel(T0, tick=False):
        assert enrollment_create(sequence=sequence, contact=subscriber) is not None
        engine.tick()

    # when the scan sees it for the first time, it is recorded as present, without a new run
    assert engine.segment_scan() == 0
    assert Enrollment.objects.filter(contact=subscriber).count() == 1
    assert SegmentMembership.objects.filter(
        sequence=sequence, contact=subscriber, left_at__isnull=True
    ).exists()


def test_the_segment_scan_leaves_other_sequences_and_non_members_alone(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    vips = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    paused = make_sequence(
        [email("a", None)], name="Paused", trigger={"type": "segment", "segment": str(vips.pk)}
    )
    sequence_set_status(sequence=paused, status=SequenceStatus.PAUSED)
    make_sequence(
        [email("a", None)], name="Active", trigger={"type": "segment", "segment": str(vips.pk)}
    )
    bystander = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED)
    tagged(subscriber, "vip")

    assert engine.segment_scan() == 1

    assert list(Enrollment.objects.values_list("sequence__name", "contact_id")) == [
        ("Active", subscriber.pk)
    ]
    assert not SegmentMembership.objects.filter(contact=bystander).exists()
    assert not SegmentMembership.objects.filter(sequence=paused).exists()


@pytest.mark.parametrize(
    ("reentry", "after_completion", "while_active"),
    [("never", False, False), ("after_exit", True, False), ("always", True, True)],
)
def test_reentry_policy(
    workspace: Workspace,
    subscriber: Contact,
    make_sequence: Callable[..., Sequence],
    reentry: str,
    after_completion: bool,
    while_active: bool,
) -> None:
    sequence = make_sequence([wait("w", "P1D", None)], reentry=reentry)
    with time_machine.travel(T0, tick=False) as clock:
        assert enrollment_create(sequence=sequence, contact=subscriber) is not None
        engine.tick()
        assert (
            enrollment_create(sequence=sequence, contact=subscriber) is not None
        ) is while_active
        clock.move_to(T0 + dt.timedelta(days=1))
        engine.tick()
        # one run completed ("always" also left the run it restarted, exited)
        assert list(Enrollment.objects.exclude(status="exited").values_list("status")) == [
            ("completed",)
        ]
        again = enrollment_create(sequence=sequence, contact=subscriber)
    assert (again is not None) is after_completion


# --- editing an active sequence


def test_editing_an_active_sequence_relocates_runs_at_a_removed_step(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    loose_caps(workspace)
    sequence = make_sequence([email("a", "w"), wait("w", "P5D", "b"), email("b", None)])
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None
        engine.tick()
        clock.move_to(T0 + dt.timedelta(hours=2))
        # the wait is removed: the run continues at the first kept step after it, due now
        sequence_update(sequence=sequence, steps=[email("a", "b"), email("b", None)])
        assert state(enrollment) == ("active", "b", T0 + dt.timedelta(hours=2))
        engine.tick()
    assert sent_steps(enrollment) == [("a", T0), ("b", T0 + dt.timedelta(hours=2))]


def test_a_paused_sequence_is_not_advanced(
    workspace: Workspace, subscriber: Contact, make_sequence: Callable[..., Sequence]
) -> None:
    sequence = make_sequence([email("a", None)])
    enrollment = enrollment_create(sequence=sequence, contact=subscriber)
    sequence_set_status(sequence=sequence, status=SequenceStatus.PAUSED)
    assert engine.tick().claimed == 0
    assert enrollment is not None and state(enrollment)[1] == "a"
    assert not Message.objects.exists()


# --- cost of a tick


def test_one_tick_of_100_enrollments_takes_a_bounded_number_of_queries(
    workspace: Workspace, make_sequence: Callable[..., Sequence], django_assert_max_num_queries: Any
) -> None:
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida")
    stage = str(funnel.stages.order_by("position")[0].pk)
    sequence = make_sequence(
        [{**email("a", "w"), "stage": stage}, wait("w", "P2D", None)], funnel=funnel
    )
    for number in range(100):
        contact = ContactFactory(
            workspace=workspace, status=ContactStatus.SUBSCRIBED, email=f"q{number}@example.org"
        )
        enrollment_create(sequence=sequence, contact=contact)
    # savepoint, claim (ids), enrollments, sequences, suppressions, cap history, stage check,
    # bulk insert, ids, bulk update, release: the same for 10 or 1,000 enrollments
    with django_assert_max_num_queries(12):
        result = engine.tick()
    assert (result.claimed, result.messages) == (100, 100)
