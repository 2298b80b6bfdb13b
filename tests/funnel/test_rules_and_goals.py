"""Stage rules (API and effect), conversions at the funnel goal, the signals that announce them,
and the contact's timeline, export and erasure with funnel data."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.dispatch import Signal
from rest_framework.test import APIClient

from contacts.models import Contact
from core.models import ApiKey, Workspace
from funnel import services, signals
from funnel.models import (
    ContactStage,
    Conversion,
    Event,
    Funnel,
    Stage,
    StageRule,
    StageTransition,
    TransitionCause,
)
from funnel.services import EventInput
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

EVENTS_URL = "/api/v1/events/"
T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)

Capture = Callable[..., Any]


# --- helpers ---------------------------------------------------------------------------------


def rules_url(funnel: Funnel) -> str:
    return f"/api/v1/funnels/{funnel.pk}/rules/"


def rule_url(funnel: Funnel, rule: StageRule | str) -> str:
    return f"{rules_url(funnel)}{getattr(rule, 'pk', rule)}/"


def stage_of(funnel: Funnel, key: str) -> Stage:
    return Stage.objects.get(funnel=funnel, key=key)


def current_stage(contact: Contact, funnel: Funnel) -> str | None:
    membership = ContactStage.objects.filter(contact=contact, funnel=funnel).first()
    return membership.stage.key if membership else None


def send_event(api: APIClient, capture: Capture, **fields: Any) -> Event:
    """POST one event and run what its commit schedules (the eager processing task)."""
    with capture(execute=True):
        response = api.post(EVENTS_URL, fields, format="json")
    assert response.status_code == 201, response.json()
    return Event.objects.get(pk=response.json()["id"])


def enter(funnel: Funnel, contact: Contact, key: str, at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        services.contact_move(
            funnel=funnel, contact=contact, stage=stage_of(funnel, key), cause="manual"
        )


@pytest.fixture
def aida(workspace: Workspace) -> Funnel:
    return services.funnel_create(
        workspace=workspace, name="Sales", preset="aida", goal_event="purchase"
    )


@pytest.fixture
def contact(workspace: Workspace) -> Contact:
    return ContactFactory(workspace=workspace, email="ada@example.com")


@pytest.fixture
def received() -> Iterator[Callable[[Signal], list[dict[str, Any]]]]:
    """received(signal) -> the list of every send of that signal from now on."""
    connected: list[tuple[Signal, str]] = []

    def listen(signal: Signal) -> list[dict[str, Any]]:
        sends: list[dict[str, Any]] = []

        def receiver(sender: Any, **kwargs: Any) -> None:
            kwargs.pop("signal")
            sends.append({"sender": sender, **kwargs})

        uid = f"test-{uuid.uuid4()}"
        signal.connect(receiver, dispatch_uid=uid, weak=False)
        connected.append((signal, uid))
        return sends

    yield listen
    for signal, uid in connected:
        signal.disconnect(dispatch_uid=uid)


# --- the rules API -------------------------------------------------------------------------------


def test_rules_are_created_listed_changed_and_deleted_through_the_api(
    api: APIClient, aida: Funnel
) -> None:
    # given: the AIDA funnel without rules
    desire, action = stage_of(aida, "desire"), stage_of(aida, "action")
    # when: two rules are created
    with time_machine.travel(T0, tick=False):
        demo = api.post(
            rules_url(aida),
            {"when": {"event": "demo_booked", "where": {"plan": "pro"}}, "move_to": str(desire.pk)},
            format="json",
        )
        click = api.post(
            rules_url(aida),
            {"when": {"clicked_step": "step-7"}, "move_to": str(action.pk)},
            format="json",
        )
    # then
    assert (demo.status_code, click.status_code) == (201, 201)
    demo_rule = StageRule.objects.get(pk=demo.json()["id"])
    click_rule = StageRule.objects.get(pk=click.json()["id"])
    assert demo.json() == {
        "id": str(demo_rule.pk),
        "when": {"event": "demo_booked", "where": {"plan": "pro"}},
        "move_to": str(desire.pk),
        "position": 0,
        "created_at": "2025-05-01T09:00:00Z",
    }
    assert click.json()["when"] == {"clicked_step": "step-7"}
    assert click.json()["position"] == 1
    listed = api.get(rules_url(aida))
    assert listed.status_code == 200
    assert listed.json()["count"] == 2
    assert [rule["id"] for rule in listed.json()["results"]] == [
        str(demo_rule.pk),
        str(click_rule.pk),
    ]
    # when: the first rule is changed and the second deleted
    changed = api.patch(
        rule_url(aida, demo_rule),
        {"when": {"event": "trial_started"}, "move_to": str(action.pk)},
        format="json",
    )
    deleted = api.delete(rule_url(aida, click_rule))
    # then
    assert changed.status_code == 200
    assert (changed.json()["when"], changed.json()["move_to"]) == (
        {"event": "trial_started", "where": {}},
        str(action.pk),
    )
    assert deleted.status_code == 204
    assert list(StageRule.objects.values_list("pk", "when", "move_to_id")) == [
        (demo_rule.pk, {"event": "trial_started", "where": {}}, action.pk)
    ]


@pytest.mark.parametrize(
    "when",
    [
        {"plan": "pro"},  # neither event nor clicked_step
        {"event": "demo_booked", "clicked_step": "step-7"},  # both
        {"event": "   "},
        "demo_booked",
        ["demo_booked"],
        {"event": "demo_booked", "where": ["plan", "pro"]},  # where not an object
        {"event": "demo_booked", "where": "plan=pro"},
        {"event": "demo_booked", "where": {"total": {"between": [1, 9]}}},  # unknown operator
        {"event": "demo_booked", "where": {"total": {"gte": 1, "lte": 9}}},  # two operators
        {"event": "demo_booked", "where": {"plan": {"in": "pro"}}},  # in without a list
    ],
)
def test_an_invalid_when_is_refused_naming_when_and_nothing_changes(
    api: APIClient, aida: Funnel, when: Any
) -> None:
    # given: one valid rule
    rule = services.rule_create(
        funnel=aida, when={"event": "demo_booked"}, move_to=stage_of(aida, "desire")
    )
    # when
    created = api.post(
        rules_url(aida), {"when": when, "move_to": str(stage_of(aida, "desire").pk)}, format="json"
    )
    changed = api.patch(rule_url(aida, rule), {"when": when}, format="json")
    # then
    assert (created.status_code, changed.status_code) == (400, 400)
    assert list(created.json()) == ["when"]
    assert list(changed.json()) == ["when"]
    assert list(StageRule.objects.values_list("pk", "when")) == [
        (rule.pk, {"event": "demo_booked", "where": {}})
    ]


def test_move_to_a_stage_of_another_funnel_is_refused_naming_move_to(
    api: APIClient, workspace: Workspace, other_workspace: Workspace, aida: Funnel
) -> None:
    # given: a second funnel here and one in another workspace, and one rule
    journey = services.funnel_create(workspace=workspace, name="Journey", preset="journey")
    foreign = services.funnel_create(workspace=other_workspace, name="Theirs", preset="aida")
    rule = services.rule_create(
        funnel=aida, when={"event": "demo_booked"}, move_to=stage_of(aida, "desire")
    )
    # when
    answers = [
        api.post(
            rules_url(aida),
            {"when": {"event": "x"}, "move_to": str(stage.pk)},
            format="json",
        )
        for stage in (stage_of(journey, "purchase"), stage_of(foreign, "action"))
    ] + [api.patch(rule_url(aida, rule), {"move_to": str(stage_of(journey, "purchase").pk)})]
    # then
    assert [answer.status_code for answer in answers] == [400, 400, 400]
    assert [answer.json() for answer in answers] == [
        {"move_to": ["No such stage in this funnel."]}
    ] * 3
    assert list(StageRule.objects.values_list("pk", "move_to_id")) == [
        (rule.pk, stage_of(aida, "desire").pk)
    ]


def test_a_rule_of_another_funnel_is_404_through_this_funnel(
    api: APIClient, workspace: Workspace, aida: Funnel
) -> None:
    # given: a rule of the journey funnel
    journey = services.funnel_create(workspace=workspace, name="Journey", preset="journey")
    rule = services.rule_create(
        funnel=journey, when={"event": "x"}, move_to=stage_of(journey, "purchase")
    )
    # when
    changed = api.patch(rule_url(aida, rule), {"when": {"event": "y"}}, format="json")
    deleted = api.delete(rule_url(aida, rule))
    # then
    assert (changed.status_code, deleted.status_code) == (404, 404)
    assert list(StageRule.objects.values_list("pk", "when")) == [
        (rule.pk, {"event": "x", "where": {}})
    ]


# --- rules moving contacts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "matching", "not_matching"),
    [
        ({"plan": "pro"}, {"plan": "pro"}, {"plan": "free"}),
        ({"plan": {"eq": "pro"}}, {"plan": "pro", "seats": 3}, {"seats": 3}),
        ({"total": {"gte": 100}}, {"total": 100}, {"total": 99.99}),
        ({"total": {"gte": "100.00"}}, {"total": "250.5"}, {"total": "not a number"}),
        ({"country": {"in": ["DE", "AT"]}}, {"country": "AT"}, {"country": "CH"}),
        ({"page": {"contains": "pricing"}}, {"page": "/en/Pricing/teams"}, {"page": "/blog"}),
        ({"coupon": {"exists": True}}, {"coupon": "SPRING"}, {"plan": "pro"}),
        ({"coupon": {"exists": False}}, {"plan": "pro"}, {"coupon": "SPRING"}),
        (
            {"address.country": "DE"},
            {"address": {"country": "DE", "city": "Köln"}},
            {"address": {"country": "FR"}},
        ),
        ({"plan": "pro", "total": {"gt": 10}}, {"plan": "pro", "total": 11}, {"plan": "pro"}),
    ],
)
def test_a_rule_moves_the_contact_on_a_matching_event_only(
    api: APIClient,
    django_capture_on_commit_callbacks: Capture,
    aida: Funnel,
    contact: Contact,
    where: dict[str, Any],
    matching: dict[str, Any],
    not_matching: dict[str, Any],
) -> None:
    # given: the contact is in interest; demo_booked with conditions moves to desire
    enter(aida, contact, "interest", T0)
    rule = services.rule_create(
        funnel=aida, when={"event": "demo_booked", "where": where}, move_to=stage_of(aida, "desire")
    )
    # when: the right properties on the wrong event, then the wrong properties on the right one
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="trial_started",
            properties=matching,
        )
        send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="demo_booked",
            properties=not_matching,
        )
    # then: nothing moved
    assert current_stage(contact, aida) == "interest"
    assert StageTransition.objects.count() == 1
    assert Event.objects.filter(processed_at__isnull=True).count() == 0
    # when: the matching event
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        event = send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="demo_booked",
            properties=matching,
        )
    # then
    assert current_stage(contact, aida) == "desire"
    transition = StageTransition.objects.get(to_stage=stage_of(aida, "desire"))
    assert (
        transition.from_stage_id,
        transition.cause,
        transition.cause_detail,
        transition.occurred_at,
    ) == (
        stage_of(aida, "interest").pk,
        TransitionCause.RULE,
        f"rule:{rule.pk} event:{event.pk}",
        T0 + timedelta(hours=2),
    )
    assert StageTransition.objects.count() == 2


def test_the_first_matching_rule_of_a_funnel_wins(
    api: APIClient, django_capture_on_commit_callbacks: Capture, aida: Funnel, contact: Contact
) -> None:
    # given: two matching rules, the first to desire, the second to action
    enter(aida, contact, "attention", T0)
    first = services.rule_create(
        funnel=aida, when={"event": "demo_booked"}, move_to=stage_of(aida, "desire")
    )
    services.rule_create(
        funnel=aida,
        when={"event": "demo_booked", "where": {"plan": "pro"}},
        move_to=stage_of(aida, "action"),
    )
    # when
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        event = send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="demo_booked",
            properties={"plan": "pro"},
        )
    # then
    assert current_stage(contact, aida) == "desire"
    assert list(
        StageTransition.objects.order_by("occurred_at").values_list("to_stage__key", "cause_detail")
    ) == [("attention", ""), ("desire", f"rule:{first.pk} event:{event.pk}")]


def test_the_rules_of_two_funnels_both_apply(
    api: APIClient,
    django_capture_on_commit_callbacks: Capture,
    workspace: Workspace,
    aida: Funnel,
    contact: Contact,
) -> None:
    # given: a demo_booked rule in each of two funnels
    journey = services.funnel_create(workspace=workspace, name="Journey", preset="journey")
    services.rule_create(
        funnel=aida, when={"event": "demo_booked"}, move_to=stage_of(aida, "desire")
    )
    services.rule_create(
        funnel=journey, when={"event": "demo_booked"}, move_to=stage_of(journey, "consideration")
    )
    # when
    send_event(api, django_capture_on_commit_callbacks, contact=str(contact.pk), name="demo_booked")
    # then: the contact enters both
    assert (current_stage(contact, aida), current_stage(contact, journey)) == (
        "desire",
        "consideration",
    )
    assert sorted(
        StageTransition.objects.values_list("funnel__name", "from_stage", "to_stage__key", "cause")
    ) == [("Journey", None, "consideration", "rule"), ("Sales", None, "desire", "rule")]


def test_a_late_event_does_not_move_the_contact_back_in_time(
    api: APIClient, django_capture_on_commit_callbacks: Capture, aida: Funnel, contact: Contact
) -> None:
    # given: the contact reached action on day 5; a rule moves demo_booked to desire
    enter(aida, contact, "action", T0 + timedelta(days=5))
    services.rule_create(
        funnel=aida, when={"event": "demo_booked"}, move_to=stage_of(aida, "desire")
    )
    # when: a demo booked on day 2 arrives on day 6
    with time_machine.travel(T0 + timedelta(days=6), tick=False):
        event = send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="demo_booked",
            occurred_at=(T0 + timedelta(days=2)).isoformat(),
        )
    # then: recorded and processed, but the contact stays where it is
    event.refresh_from_db()
    assert event.processed_at == T0 + timedelta(days=6)
    assert list(ContactStage.objects.values_list("stage__key", "entered_at")) == [
        ("action", T0 + timedelta(days=5))
    ]
    assert StageTransition.objects.count() == 1


def test_the_first_clicks_of_a_batch_find_their_rules_in_one_query(
    workspace: Workspace,
    other_workspace: Workspace,
    aida: Funnel,
    django_assert_num_queries: Any,
) -> None:
    # given: a rule for step-7 in this workspace; clicks on step-7 and step-8 here, and on
    # step-7 by a contact of another workspace
    services.rule_create(
        funnel=aida, when={"clicked_step": "step-7"}, move_to=stage_of(aida, "interest")
    )
    clickers = [ContactFactory(workspace=workspace) for _ in range(3)]
    outsider = ContactFactory(workspace=other_workspace)
    at = T0 + timedelta(hours=1)
    clicks = [(clicker, "step-7", at) for clicker in clickers[:2]]
    clicks += [(clickers[2], "step-8", at), (outsider, "step-7", at)]
    # when: nothing matches but one query finds it out
    with django_assert_num_queries(1):
        assert (
            services.rules_apply_clicks([(clickers[2], "step-8", at), (outsider, "step-7", at)])
            == 0
        )
    # and the whole batch is applied
    moved = services.rules_apply_clicks(clicks)
    # then: the two clickers of step-7 in this workspace moved, nobody else
    assert moved == 2
    assert [current_stage(clicker, aida) for clicker in clickers] == ["interest", "interest", None]
    assert ContactStage.objects.filter(contact=outsider).count() == 0


def test_a_human_click_on_a_sequence_step_applies_the_clicked_step_rule(
    workspace: Workspace, other_workspace: Workspace, aida: Funnel, contact: Contact
) -> None:
    # given: a rule for clicks on step-7; a contact of another workspace
    enter(aida, contact, "attention", T0)
    rule = services.rule_create(
        funnel=aida, when={"clicked_step": "step-7"}, move_to=stage_of(aida, "interest")
    )
    outsider = ContactFactory(workspace=other_workspace, email="outsider@example.com")
    # when: clicks on another step, by the outsider, then the right one
    at = T0 + timedelta(hours=3)
    other_step = services.rules_apply_click(contact=contact, step_id="step-8", occurred_at=at)
    by_outsider = services.rules_apply_click(contact=outsider, step_id="step-7", occurred_at=at)
    moved = services.rules_apply_click(contact=contact, step_id="step-7", occurred_at=at)
    # then
    assert (other_step, by_outsider, moved) == (0, 0, 1)
    assert current_stage(contact, aida) == "interest"
    assert list(
        StageTransition.objects.order_by("occurred_at").values_list(
            "from_stage__key", "to_stage__key", "cause", "cause_detail", "occurred_at"
        )
    ) == [
        (None, "attention", "manual", "", T0),
        ("attention", "interest", "rule", f"rule:{rule.pk}", at),
    ]
    assert ContactStage.objects.filter(contact=outsider).count() == 0


# --- goals and conversions ---------------------------------------------------------------------


def test_the_goal_event_records_one_conversion_with_value_currency_and_stage(
    api: APIClient,
    django_capture_on_commit_callbacks: Capture,
    workspace: Workspace,
    aida: Funnel,
    contact: Contact,
    received: Callable[[Signal], list[dict[str, Any]]],
) -> None:
    # given: the contact is in desire; a second funnel has another goal
    services.funnel_create(
        workspace=workspace, name="Journey", preset="journey", goal_event="review_written"
    )
    enter(aida, contact, "desire", T0)
    conversions = received(signals.contact_converted)
    recorded = received(signals.event_recorded)
    # when
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        event = send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="purchase",
            value="49.90",
            currency="EUR",
            external_id="o-1",
        )
    # then
    conversion = Conversion.objects.get()
    assert (
        conversion.funnel_id,
        conversion.contact_id,
        conversion.event_id,
        conversion.stage_id,
        conversion.value,
        conversion.currency,
        conversion.occurred_at,
    ) == (
        aida.pk,
        contact.pk,
        event.pk,
        stage_of(aida, "desire").pk,
        Decimal("49.90"),
        "EUR",
        T0 + timedelta(days=1),
    )
    assert conversions == [
        {
            "sender": Conversion,
            "workspace_id": str(workspace.pk),
            "funnel_id": str(aida.pk),
            "contact_id": str(contact.pk),
            "conversion_id": str(conversion.pk),
            "event_id": str(event.pk),
        }
    ]
    assert recorded == [
        {
            "sender": Event,
            "workspace_id": str(workspace.pk),
            "event_id": str(event.pk),
            "contact_id": str(contact.pk),
            "name": "purchase",
        }
    ]


def test_a_late_goal_event_is_credited_to_the_stage_the_contact_was_in_at_that_time(
    api: APIClient, django_capture_on_commit_callbacks: Capture, aida: Funnel, contact: Contact
) -> None:
    # given: interest from day 0, action from day 5
    enter(aida, contact, "interest", T0)
    enter(aida, contact, "action", T0 + timedelta(days=5))
    # when: a purchase made on day 2 arrives on day 6
    with time_machine.travel(T0 + timedelta(days=6), tick=False):
        event = send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="purchase",
            value="30.00",
            currency="EUR",
            occurred_at=(T0 + timedelta(days=2)).isoformat(),
        )
    # then: the conversion keeps the event's own time and the stage of that time
    assert list(
        Conversion.objects.values_list("event_id", "occurred_at", "stage__key", "value")
    ) == [(event.pk, T0 + timedelta(days=2), "interest", Decimal("30.00"))]


def test_an_event_that_is_not_the_goal_records_no_conversion(
    api: APIClient, django_capture_on_commit_callbacks: Capture, aida: Funnel, contact: Contact
) -> None:
    # given: the goal is purchase
    # when
    send_event(
        api,
        django_capture_on_commit_callbacks,
        contact=str(contact.pk),
        name="purchase_started",
        value="10.00",
        currency="EUR",
    )
    # then
    assert Conversion.objects.count() == 0


def test_processing_the_same_events_again_changes_nothing(
    api: APIClient,
    django_capture_on_commit_callbacks: Capture,
    aida: Funnel,
    contact: Contact,
    received: Callable[[Signal], list[dict[str, Any]]],
) -> None:
    # given: a rule and the goal, a demo and a purchase processed once
    services.rule_create(
        funnel=aida, when={"event": "demo_booked"}, move_to=stage_of(aida, "desire")
    )
    with time_machine.travel(T0, tick=False):
        demo = send_event(
            api, django_capture_on_commit_callbacks, contact=str(contact.pk), name="demo_booked"
        )
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        purchase = send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="purchase",
            value="20.00",
            currency="EUR",
        )
    transitions = list(StageTransition.objects.values_list("pk", "to_stage_id", "occurred_at"))
    conversions = list(Conversion.objects.values_list("pk", "event_id", "value"))
    processed_at = dict(Event.objects.values_list("pk", "processed_at"))
    sends = [
        received(signals.event_recorded),
        received(signals.stage_changed),
        received(signals.contact_converted),
    ]
    # when: the same ids are processed again, later
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        count = services.events_process(event_ids=[str(demo.pk), str(purchase.pk)])
    # then
    assert count == 0
    assert len(transitions) == 1
    assert len(conversions) == 1
    assert list(StageTransition.objects.values_list("pk", "to_stage_id", "occurred_at")) == (
        transitions
    )
    assert list(Conversion.objects.values_list("pk", "event_id", "value")) == conversions
    assert dict(Event.objects.values_list("pk", "processed_at")) == processed_at
    assert sends == [[], [], []]


def test_event_recorded_fires_once_per_event_of_a_batch(
    workspace: Workspace,
    contact: Contact,
    django_capture_on_commit_callbacks: Capture,
    received: Callable[[Signal], list[dict[str, Any]]],
) -> None:
    # given
    recorded = received(signals.event_recorded)
    # when: a batch of two is stored and processed
    with django_capture_on_commit_callbacks(execute=True):
        result = services.events_record(
            workspace=workspace,
            inputs=[
                EventInput(name="page_view", contact_id=contact.pk, occurred_at=T0),
                EventInput(name="signup", email="new@example.com", occurred_at=T0),
            ],
        )
    # then
    assert (result.created, result.duplicates, result.errors) == (2, 0, [])
    assert sorted((send["name"], send["contact_id"]) for send in recorded) == sorted(
        [
            ("page_view", str(contact.pk)),
            ("signup", str(Contact.objects.get(email="new@example.com").pk)),
        ]
    )


# --- timeline, export, erasure -----------------------------------------------------------------


def test_the_timeline_lists_the_event_and_the_stage_change_newest_first(
    api: APIClient,
    django_capture_on_commit_callbacks: Capture,
    workspace: Workspace,
    aida: Funnel,
    contact: Contact,
) -> None:
    # given: moved into interest through the API at T0, a demo booked an hour later
    interest = stage_of(aida, "interest")
    with time_machine.travel(T0, tick=False):
        api.post(
            f"/api/v1/funnels/{aida.pk}/contacts/{contact.pk}/move/",
            {"stage": str(interest.pk), "reason": "met at the fair"},
            format="json",
        )
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        event = send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="demo_booked",
            properties={"plan": "pro"},
            source="crm",
        )
    prefix = ApiKey.objects.get(workspace=workspace).prefix
    # when
    response = api.get(f"/api/v1/contacts/{contact.pk}/timeline/")
    # then
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {
                "at": "2025-05-01T10:00:00+00:00",
                "kind": "event",
                "title": "demo_booked",
                "event": str(event.pk),
                "value": None,
                "currency": "",
                "source": "crm",
                "properties": {"plan": "pro"},
            },
            {
                "at": "2025-05-01T09:00:00+00:00",
                "kind": "stage_change",
                "title": "Sales: (entered) → Interest",
                "funnel": str(aida.pk),
                "from_stage": None,
                "to_stage": str(interest.pk),
                "cause": "api",
                "cause_detail": f"api_key:{prefix}",
                "reason": "met at the fair",
            },
        ]
    }


def test_the_export_includes_events_and_stage_history(
    api: APIClient, django_capture_on_commit_callbacks: Capture, aida: Funnel, contact: Contact
) -> None:
    # given: entered at interest, then a purchase moved the contact to action by rule
    enter(aida, contact, "interest", T0)
    services.rule_create(funnel=aida, when={"event": "purchase"}, move_to=stage_of(aida, "action"))
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(contact.pk),
            name="purchase",
            value="20.00",
            currency="EUR",
            source="shop",
            channel="web",
            properties={"order": "A-1"},
        )
    # when
    response = api.get(f"/api/v1/contacts/{contact.pk}/export/")
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["events"] == [
        {
            "name": "purchase",
            "occurred_at": "2025-05-02T09:00:00+00:00",
            "properties": {"order": "A-1"},
            "value": "20.00",
            "currency": "EUR",
            "source": "shop",
            "channel": "web",
        }
    ]
    assert body["stage_history"] == [
        {
            "funnel": "Sales",
            "from": None,
            "to": "Interest",
            "at": "2025-05-01T09:00:00+00:00",
            "cause": "manual",
        },
        {
            "funnel": "Sales",
            "from": "Interest",
            "to": "Action",
            "at": "2025-05-02T09:00:00+00:00",
            "cause": "rule",
        },
    ]


def test_erasing_the_contact_removes_its_events_transitions_conversions_and_stages(
    api: APIClient,
    django_capture_on_commit_callbacks: Capture,
    workspace: Workspace,
    aida: Funnel,
    contact: Contact,
) -> None:
    # given: ada and grace each with a stage, a purchase and a conversion
    grace = ContactFactory(workspace=workspace, email="grace@example.com")
    for person in (contact, grace):
        enter(aida, person, "desire", T0)
        send_event(
            api,
            django_capture_on_commit_callbacks,
            contact=str(person.pk),
            name="purchase",
            value="5.00",
            currency="EUR",
        )
    # when
    response = api.delete(f"/api/v1/contacts/{contact.pk}/")
    # then: ada's funnel data is gone, grace's is all there
    assert response.status_code == 204
    assert not Contact.objects.filter(pk=contact.pk).exists()
    for model in (Event, StageTransition, Conversion, ContactStage):
        assert model.objects.filter(contact_id=contact.pk).count() == 0, model.__name__
        assert model.objects.filter(contact=grace).count() == 1, model.__name__
    assert Stage.objects.filter(funnel=aida).count() == 4
