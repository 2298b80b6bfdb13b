"""Funnels and stages through the API, and contacts moving through them in every direction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from contacts.models import Contact
from contacts.segments import segment_queryset
from core.exceptions import ApplicationError
from core.models import ApiKey, Workspace
from funnel import services, signals
from funnel.models import (
    ContactStage,
    Funnel,
    Stage,
    StageRule,
    StageTransition,
    TransitionCause,
)
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

FUNNELS_URL = "/api/v1/funnels/"
T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)

AIDA = [
    ("attention", "Attention"),
    ("interest", "Interest"),
    ("desire", "Desire"),
    ("action", "Action"),
]
JOURNEY = [
    ("awareness", "Awareness"),
    ("consideration", "Consideration"),
    ("purchase", "Purchase"),
    ("retention", "Retention"),
    ("advocacy", "Advocacy"),
]


# --- helpers ---------------------------------------------------------------------------------


def funnel_url(funnel: Funnel | str) -> str:
    return f"{FUNNELS_URL}{getattr(funnel, 'pk', funnel)}/"


def move_url(funnel: Funnel, contact: Contact) -> str:
    return f"{funnel_url(funnel)}contacts/{contact.pk}/move/"


def stage_of(funnel: Funnel, key: str) -> Stage:
    return Stage.objects.get(funnel=funnel, key=key)


def stages_json(funnel: Funnel) -> list[dict[str, Any]]:
    return [
        {"id": str(stage.pk), "name": stage.name, "position": stage.position, "key": stage.key}
        for stage in Stage.objects.filter(funnel=funnel).order_by("position")
    ]


def stage_rows(funnel: Funnel) -> list[tuple[str, str, str, int]]:
    return list(
        Stage.objects.filter(funnel=funnel)
        .order_by("position")
        .values_list("id", "key", "name", "position")
    )


def transitions_of(contact: Contact) -> list[tuple[str | None, str, str, str, str]]:
    """(from key, to key, cause, cause_detail, reason) in the order they happened."""
    return [
        (
            transition.from_stage.key if transition.from_stage else None,
            transition.to_stage.key,
            transition.cause,
            transition.cause_detail,
            transition.reason,
        )
        for transition in StageTransition.objects.filter(contact=contact)
        .select_related("from_stage", "to_stage")
        .order_by("occurred_at")
    ]


def api_key_prefix(workspace: Workspace) -> str:
    return ApiKey.objects.get(workspace=workspace).prefix


@pytest.fixture
def aida(workspace: Workspace) -> Funnel:
    return services.funnel_create(
        workspace=workspace, name="Sales", preset="aida", goal_event="purchase"
    )


@pytest.fixture
def contact(workspace: Workspace) -> Contact:
    return ContactFactory(workspace=workspace, email="ada@example.com")


@pytest.fixture
def stage_changes() -> Iterator[list[dict[str, Any]]]:
    """Every stage_changed signal sent while the test runs (a real receiver, connected)."""
    received: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal")
        received.append({"sender": sender, **kwargs})

    signals.stage_changed.connect(receiver, dispatch_uid="test-stage-changes")
    yield received
    signals.stage_changed.disconnect(dispatch_uid="test-stage-changes")


# --- creating funnels ----------------------------------------------------------------------------


def test_post_with_the_aida_preset_creates_its_four_stages_in_order(
    api: APIClient, workspace: Workspace
) -> None:
    # given: a workspace with no funnel
    # when
    with time_machine.travel(T0, tick=False):
        response = api.post(
            FUNNELS_URL,
            {"name": "Sales", "preset": "aida", "goal_event": "purchase"},
            format="json",
        )
    # then
    assert response.status_code == 201
    funnel = Funnel.objects.get(workspace=workspace)
    assert [(key, name, position) for _id, key, name, position in stage_rows(funnel)] == [
        (key, name, position) for position, (key, name) in enumerate(AIDA)
    ]
    assert response.json() == {
        "id": str(funnel.pk),
        "name": "Sales",
        "preset": "aida",
        "goal_event": "purchase",
        "stages": stages_json(funnel),
        "created_at": "2025-05-01T09:00:00Z",
    }


def test_post_with_the_journey_preset_creates_awareness_to_advocacy(
    api: APIClient, workspace: Workspace
) -> None:
    # given: a workspace with no funnel
    # when
    response = api.post(FUNNELS_URL, {"name": "Journey", "preset": "journey"}, format="json")
    # then
    assert response.status_code == 201
    funnel = Funnel.objects.get(workspace=workspace)
    assert funnel.preset == "journey"
    assert funnel.goal_event == ""
    assert [stage["key"] for stage in response.json()["stages"]] == [key for key, _ in JOURNEY]
    assert [(key, name, position) for _id, key, name, position in stage_rows(funnel)] == [
        (key, name, position) for position, (key, name) in enumerate(JOURNEY)
    ]


def test_post_with_custom_stages_keeps_their_order_and_makes_unique_keys(
    api: APIClient, workspace: Workspace
) -> None:
    # given: a workspace with no funnel
    # when
    response = api.post(
        FUNNELS_URL,
        {
            "name": "B2B",
            "goal_event": "contract_signed",
            "stages": [{"name": "Lead"}, {"name": "Qualified lead"}, {"name": "Lead"}],
        },
        format="json",
    )
    # then
    assert response.status_code == 201
    funnel = Funnel.objects.get(workspace=workspace)
    assert funnel.preset is None
    body = response.json()
    assert body["preset"] is None
    assert body["goal_event"] == "contract_signed"
    assert [(key, name, position) for _id, key, name, position in stage_rows(funnel)] == [
        ("lead", "Lead", 0),
        ("qualified_lead", "Qualified lead", 1),
        ("lead_2", "Lead", 2),
    ]
    assert body["stages"] == stages_json(funnel)


def test_post_with_custom_stages_keeps_the_keys_it_gives(
    api: APIClient, workspace: Workspace
) -> None:
    # given: stages with keys chosen by an integration (as PATCH accepts them too)
    # when
    response = api.post(
        FUNNELS_URL,
        {
            "name": "B2B",
            "stages": [{"name": "Marketing qualified", "key": "mql"}, {"name": "Won"}],
        },
        format="json",
    )
    # then
    assert response.status_code == 201
    funnel = Funnel.objects.get(workspace=workspace)
    assert [(key, name, position) for _id, key, name, position in stage_rows(funnel)] == [
        ("mql", "Marketing qualified", 0),
        ("won", "Won", 1),
    ]


def test_post_with_a_preset_and_stages_is_refused_and_creates_nothing(api: APIClient) -> None:
    # given: a workspace with no funnel
    # when
    response = api.post(
        FUNNELS_URL,
        {"name": "Both", "preset": "aida", "stages": [{"name": "Lead"}]},
        format="json",
    )
    # then
    assert response.status_code == 400
    assert response.json() == {"stages": ["Give a preset or stages, not both."]}
    assert Funnel.objects.count() == 0
    assert Stage.objects.count() == 0


def test_post_with_an_unknown_preset_is_refused_naming_preset(api: APIClient) -> None:
    # given: a workspace with no funnel
    # when
    response = api.post(FUNNELS_URL, {"name": "Odd", "preset": "pirate"}, format="json")
    # then
    assert response.status_code == 400
    assert list(response.json()) == ["preset"]
    assert Funnel.objects.count() == 0


# --- reading funnels -----------------------------------------------------------------------------


def test_get_lists_the_workspaces_funnels_with_their_stages_in_order(
    api: APIClient, workspace: Workspace, other_workspace: Workspace
) -> None:
    # given: two funnels here, one in another workspace
    with time_machine.travel(T0, tick=False):
        journey = services.funnel_create(workspace=workspace, name="Journey", preset="journey")
        custom = services.funnel_create(
            workspace=workspace, name="Custom", stages=[{"name": "Zeta"}, {"name": "Alpha"}]
        )
        services.funnel_create(workspace=other_workspace, name="Another", preset="aida")
    # when
    response = api.get(FUNNELS_URL)
    # then: ordered by name, stages by position (Zeta before Alpha)
    assert response.status_code == 200
    assert response.json() == {
        "count": 2,
        "next": None,
        "previous": None,
        "results": [
            {
                "id": str(custom.pk),
                "name": "Custom",
                "preset": None,
                "goal_event": "",
                "stages": stages_json(custom),
                "created_at": "2025-05-01T09:00:00Z",
            },
            {
                "id": str(journey.pk),
                "name": "Journey",
                "preset": "journey",
                "goal_event": "",
                "stages": stages_json(journey),
                "created_at": "2025-05-01T09:00:00Z",
            },
        ],
    }
    assert [stage["key"] for stage in response.json()["results"][0]["stages"]] == [
        "zeta",
        "alpha",
    ]


def test_get_detail_shows_one_funnel(api: APIClient, aida: Funnel) -> None:
    # given: the AIDA funnel
    # when
    response = api.get(funnel_url(aida))
    # then
    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("id", "name", "preset", "goal_event", "stages")} == {
        "id": str(aida.pk),
        "name": "Sales",
        "preset": "aida",
        "goal_event": "purchase",
        "stages": stages_json(aida),
    }
    assert [stage["key"] for stage in body["stages"]] == [key for key, _ in AIDA]


def test_get_detail_of_an_unknown_funnel_is_404(api: APIClient) -> None:
    # when
    response = api.get(funnel_url(str(uuid.uuid4())))
    # then
    assert response.status_code == 404


# --- editing stages --------------------------------------------------------------------------


def test_patch_stages_renames_reorders_and_adds_keeping_ids_and_history(
    api: APIClient, aida: Funnel, contact: Contact
) -> None:
    # given: a contact who entered at attention and moved to interest
    attention, interest = stage_of(aida, "attention"), stage_of(aida, "interest")
    desire, action = stage_of(aida, "desire"), stage_of(aida, "action")
    with time_machine.travel(T0, tick=False):
        services.contact_move(
            funnel=aida, contact=contact, stage=attention, cause=TransitionCause.MANUAL
        )
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        services.contact_move(
            funnel=aida, contact=contact, stage=interest, cause=TransitionCause.MANUAL
        )
    # when: every stage is renamed into German, the order reversed, and one stage added
    response = api.patch(
        funnel_url(aida),
        {
            "stages": [
                {"id": str(action.pk), "name": "Handlung"},
                {"id": str(desire.pk), "name": "Verlangen"},
                {"id": str(interest.pk), "name": "Interesse"},
                {"id": str(attention.pk), "name": "Aufmerksamkeit"},
                {"name": "Loyalty"},
            ]
        },
        format="json",
    )
    # then: same ids and keys, new names and positions, the new stage at the end
    assert response.status_code == 200
    loyalty = stage_of(aida, "loyalty")
    assert stage_rows(aida) == [
        (action.pk, "action", "Handlung", 0),
        (desire.pk, "desire", "Verlangen", 1),
        (interest.pk, "interest", "Interesse", 2),
        (attention.pk, "attention", "Aufmerksamkeit", 3),
        (loyalty.pk, "loyalty", "Loyalty", 4),
    ]
    assert response.json()["stages"] == stages_json(aida)
    # and: the contact is still in the same stage, its history still points to the same stages
    assert list(ContactStage.objects.values_list("contact_id", "stage_id", "entered_at")) == [
        (contact.pk, interest.pk, T0 + timedelta(days=1))
    ]
    assert list(
        StageTransition.objects.order_by("occurred_at").values_list("from_stage_id", "to_stage_id")
    ) == [(None, attention.pk), (attention.pk, interest.pk)]


def test_patch_stages_may_delete_a_stage_nobody_was_ever_in(
    api: APIClient, aida: Funnel, contact: Contact
) -> None:
    # given: the contact is in interest; attention was never used
    interest, desire, action = (stage_of(aida, key) for key in ("interest", "desire", "action"))
    services.contact_move(funnel=aida, contact=contact, stage=interest, cause="manual")
    # when: attention is left out
    response = api.patch(
        funnel_url(aida),
        {
            "stages": [
                {"id": str(interest.pk), "name": "Interest"},
                {"id": str(desire.pk), "name": "Desire"},
                {"id": str(action.pk), "name": "Action"},
            ]
        },
        format="json",
    )
    # then
    assert response.status_code == 200
    assert stage_rows(aida) == [
        (interest.pk, "interest", "Interest", 0),
        (desire.pk, "desire", "Desire", 1),
        (action.pk, "action", "Action", 2),
    ]
    assert list(ContactStage.objects.values_list("stage_id", flat=True)) == [interest.pk]


def test_patch_deleting_a_stage_with_contacts_in_it_is_409_and_changes_nothing(
    api: APIClient, aida: Funnel, contact: Contact
) -> None:
    # given: the contact is in desire
    desire = stage_of(aida, "desire")
    services.contact_move(funnel=aida, contact=contact, stage=desire, cause="manual")
    before = stage_rows(aida)
    # when: desire is left out while the others are renamed and one is added
    response = api.patch(
        funnel_url(aida),
        {
            "stages": [
                {"id": str(stage_of(aida, "action").pk), "name": "Kauf"},
                {"id": str(stage_of(aida, "interest").pk), "name": "Interesse"},
                {"id": str(stage_of(aida, "attention").pk), "name": "Aufmerksamkeit"},
                {"name": "Loyalty"},
            ]
        },
        format="json",
    )
    # then
    assert response.status_code == 409
    assert response.json() == {"stages": ["Contacts are in this stage; move them first."]}
    assert stage_rows(aida) == before
    assert list(ContactStage.objects.values_list("stage_id", flat=True)) == [desire.pk]
    assert StageTransition.objects.count() == 1


def test_patch_with_a_refused_stage_deletion_changes_neither_name_nor_goal(
    api: APIClient, aida: Funnel, contact: Contact
) -> None:
    # given: the contact is in desire
    desire = stage_of(aida, "desire")
    services.contact_move(funnel=aida, contact=contact, stage=desire, cause="manual")
    before = stage_rows(aida)
    # when: one PATCH renames the funnel, changes its goal, and leaves out desire
    response = api.patch(
        funnel_url(aida),
        {
            "name": "Renamed",
            "goal_event": "order",
            "stages": [
                {"id": str(stage_of(aida, key).pk), "name": name}
                for key, name in AIDA
                if key != "desire"
            ],
        },
        format="json",
    )
    # then: the request is refused as a whole
    assert response.status_code == 409
    assert stage_rows(aida) == before
    aida.refresh_from_db()
    assert (aida.name, aida.goal_event) == ("Sales", "purchase")


def test_patch_deleting_a_stage_that_only_has_history_is_409_and_changes_nothing(
    api: APIClient, aida: Funnel, contact: Contact
) -> None:
    # given: the contact passed through desire and is now in action
    desire, action = stage_of(aida, "desire"), stage_of(aida, "action")
    with time_machine.travel(T0, tick=False):
        services.contact_move(funnel=aida, contact=contact, stage=desire, cause="manual")
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        services.contact_move(funnel=aida, contact=contact, stage=action, cause="manual")
    before = stage_rows(aida)
    # when: desire is left out
    response = api.patch(
        funnel_url(aida),
        {
            "stages": [
                {"id": str(stage_of(aida, key).pk), "name": name}
                for key, name in AIDA
                if key != "desire"
            ]
        },
        format="json",
    )
    # then
    assert response.status_code == 409
    assert response.json() == {
        "stages": ["This stage has history; rename it instead of deleting it."]
    }
    assert stage_rows(aida) == before
    assert list(ContactStage.objects.values_list("stage_id", flat=True)) == [action.pk]
    assert list(
        StageTransition.objects.order_by("occurred_at").values_list("from_stage_id", "to_stage_id")
    ) == [(None, desire.pk), (desire.pk, action.pk)]


def test_delete_funnel_takes_its_stages_and_history_with_it(
    api: APIClient, aida: Funnel, contact: Contact
) -> None:
    # given: a contact with history in the funnel
    services.contact_move(
        funnel=aida, contact=contact, stage=stage_of(aida, "desire"), cause="manual"
    )
    # when
    response = api.delete(funnel_url(aida))
    # then
    assert response.status_code == 204
    assert Funnel.objects.count() == 0
    assert Stage.objects.count() == 0
    assert ContactStage.objects.count() == 0
    assert StageTransition.objects.count() == 0
    assert Contact.objects.filter(pk=contact.pk).exists()


# --- moving contacts ---------------------------------------------------------------------------


def test_moves_in_every_direction_through_the_api_are_recorded_with_cause_and_reason(
    api: APIClient, workspace: Workspace, aida: Funnel, contact: Contact
) -> None:
    # given: a contact in no stage yet
    moves = [
        ("desire", "met at the fair"),  # entry in the middle of the funnel
        ("action", "signed"),  # forward
        ("interest", "contract cancelled"),  # backward, skipping desire
        ("action", ""),  # forward, skipping desire
        ("attention", "won back later"),  # backward to the start
    ]
    responses = []
    # when
    for hours, (key, reason) in enumerate(moves):
        body = {"stage": str(stage_of(aida, key).pk)}
        if reason:
            body["reason"] = reason
        with time_machine.travel(T0 + timedelta(hours=hours), tick=False):
            responses.append(api.post(move_url(aida, contact), body, format="json"))
    # then
    assert [response.status_code for response in responses] == [200] * 5
    assert [response.json() for response in responses] == [
        {
            "contact": str(contact.pk),
            "funnel": str(aida.pk),
            "stage": str(stage_of(aida, key).pk),
            "moved": True,
        }
        for key, _reason in moves
    ]
    detail = f"api_key:{api_key_prefix(workspace)}"
    assert transitions_of(contact) == [
        (None, "desire", "api", detail, "met at the fair"),
        ("desire", "action", "api", detail, "signed"),
        ("action", "interest", "api", detail, "contract cancelled"),
        ("interest", "action", "api", detail, ""),
        ("action", "attention", "api", detail, "won back later"),
    ]
    assert list(
        StageTransition.objects.order_by("occurred_at").values_list("occurred_at", flat=True)
    ) == [T0 + timedelta(hours=hours) for hours in range(5)]
    assert list(
        ContactStage.objects.values_list("contact_id", "funnel_id", "stage_id", "entered_at")
    ) == [(contact.pk, aida.pk, stage_of(aida, "attention").pk, T0 + timedelta(hours=4))]


@pytest.mark.parametrize(
    ("cause", "cause_detail"),
    [
        (TransitionCause.MANUAL, "user:17"),
        (TransitionCause.RULE, "rule:7f1c"),
        (TransitionCause.EVENT, "event:42"),
        (TransitionCause.SEQUENCE_STEP, "sequence:welcome/step:3"),
    ],
)
def test_moves_through_the_service_record_each_cause(
    aida: Funnel, contact: Contact, cause: str, cause_detail: str
) -> None:
    # given: a contact entering at action, then falling back to interest
    action, interest = stage_of(aida, "action"), stage_of(aida, "interest")
    # when
    with time_machine.travel(T0, tick=False):
        entered = services.contact_move(
            funnel=aida,
            contact=contact,
            stage=action,
            cause=cause,
            cause_detail=cause_detail,
            reason="entry",
        )
    with time_machine.travel(T0 + timedelta(days=2), tick=False):
        fell_back = services.contact_move(
            funnel=aida,
            contact=contact,
            stage=interest,
            cause=cause,
            cause_detail=cause_detail,
            reason="fell back",
        )
    # then
    assert entered is not None
    assert fell_back is not None
    assert (entered.from_stage_id, entered.to_stage_id, entered.occurred_at) == (
        None,
        action.pk,
        T0,
    )
    assert (fell_back.from_stage_id, fell_back.to_stage_id, fell_back.occurred_at) == (
        action.pk,
        interest.pk,
        T0 + timedelta(days=2),
    )
    assert transitions_of(contact) == [
        (None, "action", cause, cause_detail, "entry"),
        ("action", "interest", cause, cause_detail, "fell back"),
    ]
    assert StageTransition.objects.filter(workspace=aida.workspace).count() == 2


def test_moving_to_the_current_stage_records_nothing(
    api: APIClient, aida: Funnel, contact: Contact, stage_changes: list[dict[str, Any]]
) -> None:
    # given: the contact is in interest since T0
    interest = stage_of(aida, "interest")
    with time_machine.travel(T0, tick=False):
        services.contact_move(funnel=aida, contact=contact, stage=interest, cause="manual")
    stage_changes.clear()
    # when: moved to interest again, by the API and by the service
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        response = api.post(move_url(aida, contact), {"stage": str(interest.pk)}, format="json")
        again = services.contact_move(funnel=aida, contact=contact, stage=interest, cause="manual")
    # then
    assert response.status_code == 200
    assert response.json()["moved"] is False
    assert again is None
    assert StageTransition.objects.count() == 1
    assert list(ContactStage.objects.values_list("stage_id", "entered_at")) == [(interest.pk, T0)]
    assert stage_changes == []


def test_time_in_stage_is_derivable_from_entered_at_and_the_transitions(
    aida: Funnel, contact: Contact
) -> None:
    # given: interest at T0, desire 3 days later
    with time_machine.travel(T0, tick=False):
        services.contact_move(
            funnel=aida, contact=contact, stage=stage_of(aida, "interest"), cause="manual"
        )
    with time_machine.travel(T0 + timedelta(days=3), tick=False):
        services.contact_move(
            funnel=aida, contact=contact, stage=stage_of(aida, "desire"), cause="manual"
        )
    # when: 2 days and 6 hours later
    with time_machine.travel(T0 + timedelta(days=5, hours=6), tick=False):
        current = ContactStage.objects.get(contact=contact, funnel=aida)
        in_current = timezone.now() - current.entered_at
    # then
    assert current.stage_id == stage_of(aida, "desire").pk
    assert in_current == timedelta(days=2, hours=6)
    times = list(
        StageTransition.objects.filter(contact=contact)
        .order_by("occurred_at")
        .values_list("occurred_at", flat=True)
    )
    assert times[1] - times[0] == timedelta(days=3)  # time spent in interest


def test_contacts_api_shows_the_stage_per_funnel_and_filters_by_stage(
    api: APIClient, workspace: Workspace, aida: Funnel, contact: Contact
) -> None:
    # given: ada in two funnels, grace in one, linus in none
    journey = services.funnel_create(workspace=workspace, name="Journey", preset="journey")
    grace = ContactFactory(workspace=workspace, email="grace@example.com")
    ContactFactory(workspace=workspace, email="linus@example.com")
    desire = stage_of(aida, "desire")
    services.contact_move(funnel=aida, contact=contact, stage=desire, cause="manual")
    services.contact_move(
        funnel=journey, contact=contact, stage=stage_of(journey, "retention"), cause="manual"
    )
    services.contact_move(
        funnel=aida, contact=grace, stage=stage_of(aida, "interest"), cause="manual"
    )
    # when
    detail = api.get(f"/api/v1/contacts/{contact.pk}/")
    listed = api.get("/api/v1/contacts/", {"ordering": "email"})
    in_desire = api.get("/api/v1/contacts/", {"stage": str(desire.pk)})
    in_action = api.get("/api/v1/contacts/", {"stage": str(stage_of(aida, "action").pk)})
    # then
    assert detail.status_code == 200
    assert detail.json()["stages"] == {
        str(aida.pk): str(desire.pk),
        str(journey.pk): str(stage_of(journey, "retention").pk),
    }
    assert [(item["email"], item["stages"]) for item in listed.json()["results"]] == [
        (
            "ada@example.com",
            {
                str(aida.pk): str(desire.pk),
                str(journey.pk): str(stage_of(journey, "retention").pk),
            },
        ),
        ("grace@example.com", {str(aida.pk): str(stage_of(aida, "interest").pk)}),
        ("linus@example.com", {}),
    ]
    assert [item["id"] for item in in_desire.json()["results"]] == [str(contact.pk)]
    assert in_desire.json()["count"] == 1
    assert in_action.json()["count"] == 0


def test_segment_condition_stage_matches_the_contacts_in_that_stage_now(
    workspace: Workspace, aida: Funnel, contact: Contact
) -> None:
    # given: ada moved from interest to desire, grace in interest
    grace = ContactFactory(workspace=workspace, email="grace@example.com")
    interest, desire = stage_of(aida, "interest"), stage_of(aida, "desire")
    with time_machine.travel(T0, tick=False):
        services.contact_move(funnel=aida, contact=contact, stage=interest, cause="manual")
        services.contact_move(funnel=aida, contact=grace, stage=interest, cause="manual")
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        services.contact_move(funnel=aida, contact=contact, stage=desire, cause="manual")
    # when
    in_desire = segment_queryset(workspace=workspace, filter={"all": [{"stage": str(desire.pk)}]})
    in_interest = segment_queryset(
        workspace=workspace, filter={"all": [{"stage": str(interest.pk)}]}
    )
    either = segment_queryset(
        workspace=workspace,
        filter={"any": [{"stage": str(desire.pk)}, {"stage": str(interest.pk)}]},
    )
    # then
    assert list(in_desire.values_list("email", flat=True)) == ["ada@example.com"]
    assert list(in_interest.values_list("email", flat=True)) == ["grace@example.com"]
    assert sorted(either.values_list("email", flat=True)) == [
        "ada@example.com",
        "grace@example.com",
    ]


def test_segment_api_counts_the_contacts_of_a_stage(
    api: APIClient, workspace: Workspace, aida: Funnel, contact: Contact
) -> None:
    # given: ada in desire, grace in no stage
    ContactFactory(workspace=workspace, email="grace@example.com")
    desire = stage_of(aida, "desire")
    services.contact_move(funnel=aida, contact=contact, stage=desire, cause="manual")
    # when
    response = api.post(
        "/api/v1/segments/",
        {"name": "Desire", "filter": {"all": [{"stage": str(desire.pk)}]}},
        format="json",
    )
    # then
    assert response.status_code == 201
    assert response.json()["count"] == 1
    members = api.get(f"/api/v1/segments/{response.json()['id']}/contacts/")
    assert [item["email"] for item in members.json()["results"]] == ["ada@example.com"]


# --- workspaces and foreign stages -------------------------------------------------------------


def test_another_workspaces_key_gets_404_for_funnel_rules_and_move(
    api_client_for: Callable[..., APIClient],
    other_workspace: Workspace,
    aida: Funnel,
    contact: Contact,
) -> None:
    # given: a rule and a contact in interest in this workspace; a key of another one
    interest = stage_of(aida, "interest")
    services.contact_move(funnel=aida, contact=contact, stage=interest, cause="manual")
    rule = services.rule_create(
        funnel=aida, when={"event": "demo_booked"}, move_to=stage_of(aida, "desire")
    )
    intruder = api_client_for(other_workspace)
    action = {"stage": str(stage_of(aida, "action").pk)}
    # when
    responses = {
        "get": intruder.get(funnel_url(aida)),
        "patch": intruder.patch(funnel_url(aida), {"name": "Mine"}, format="json"),
        "delete": intruder.delete(funnel_url(aida)),
        "rules": intruder.get(f"{funnel_url(aida)}rules/"),
        "add rule": intruder.post(
            f"{funnel_url(aida)}rules/",
            {"when": {"event": "x"}, "move_to": str(interest.pk)},
            format="json",
        ),
        "patch rule": intruder.patch(
            f"{funnel_url(aida)}rules/{rule.pk}/", {"when": {"event": "x"}}, format="json"
        ),
        "delete rule": intruder.delete(f"{funnel_url(aida)}rules/{rule.pk}/"),
        "move": intruder.post(move_url(aida, contact), action, format="json"),
    }
    # then
    assert {name: response.status_code for name, response in responses.items()} == {
        name: 404 for name in responses
    }
    assert all("Sales" not in response.content.decode() for response in responses.values())
    aida.refresh_from_db()
    assert aida.name == "Sales"
    assert list(StageRule.objects.values_list("pk", "when")) == [
        (rule.pk, {"event": "demo_booked", "where": {}})
    ]
    assert list(ContactStage.objects.values_list("stage_id", flat=True)) == [interest.pk]
    assert StageTransition.objects.count() == 1


def test_another_workspace_cannot_move_its_own_contact_into_this_funnel(
    api_client_for: Callable[..., APIClient], other_workspace: Workspace, aida: Funnel
) -> None:
    # given: another workspace with its own contact and funnel, and a key
    outsider = ContactFactory(workspace=other_workspace, email="outsider@example.com")
    own_funnel = services.funnel_create(workspace=other_workspace, name="Own", preset="aida")
    intruder = api_client_for(other_workspace)
    desire = {"stage": str(stage_of(aida, "desire").pk)}
    # when: through this funnel, and through its own funnel with this funnel's stage
    through_ours = intruder.post(move_url(aida, outsider), desire, format="json")
    through_own = intruder.post(move_url(own_funnel, outsider), desire, format="json")
    # then
    assert through_ours.status_code == 404
    assert through_own.status_code == 400
    assert through_own.json() == {"stage": ["No such stage in this funnel."]}
    assert ContactStage.objects.count() == 0
    assert StageTransition.objects.count() == 0
    # and: the service refuses the same
    with pytest.raises(ApplicationError) as refused:
        services.contact_move(
            funnel=aida, contact=outsider, stage=stage_of(aida, "desire"), cause="manual"
        )
    assert refused.value.field == "stage"
    assert ContactStage.objects.count() == 0
    assert StageTransition.objects.count() == 0


def test_this_workspaces_key_cannot_move_another_workspaces_contact(
    api: APIClient, other_workspace: Workspace, aida: Funnel
) -> None:
    # given: a contact of another workspace
    outsider = ContactFactory(workspace=other_workspace, email="outsider@example.com")
    # when
    response = api.post(
        move_url(aida, outsider), {"stage": str(stage_of(aida, "desire").pk)}, format="json"
    )
    # then
    assert response.status_code == 404
    assert ContactStage.objects.count() == 0
    assert StageTransition.objects.count() == 0


def test_a_stage_of_another_funnel_is_refused_naming_stage(
    api: APIClient, workspace: Workspace, aida: Funnel, contact: Contact
) -> None:
    # given: a second funnel of the same workspace
    journey = services.funnel_create(workspace=workspace, name="Journey", preset="journey")
    foreign = stage_of(journey, "purchase")
    # when
    response = api.post(move_url(aida, contact), {"stage": str(foreign.pk)}, format="json")
    unknown = api.post(move_url(aida, contact), {"stage": str(uuid.uuid4())}, format="json")
    # then
    assert response.status_code == 400
    assert response.json() == {"stage": ["No such stage in this funnel."]}
    assert unknown.status_code == 400
    assert unknown.json() == {"stage": ["No such stage in this funnel."]}
    with pytest.raises(ApplicationError) as refused:
        services.contact_move(funnel=aida, contact=contact, stage=foreign, cause="manual")
    assert (refused.value.field, refused.value.message) == (
        "stage",
        "That stage is not in this funnel.",
    )
    assert ContactStage.objects.count() == 0
    assert StageTransition.objects.count() == 0


# --- the stage_changed signal --------------------------------------------------------------------


def test_stage_changed_fires_once_per_move_with_its_arguments(
    api: APIClient,
    workspace: Workspace,
    aida: Funnel,
    contact: Contact,
    stage_changes: list[dict[str, Any]],
) -> None:
    # given: a contact in no stage
    desire, interest = stage_of(aida, "desire"), stage_of(aida, "interest")
    # when: it enters at desire through the API and falls back to interest by hand
    with time_machine.travel(T0, tick=False):
        api.post(move_url(aida, contact), {"stage": str(desire.pk)}, format="json")
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        fell_back = services.contact_move(
            funnel=aida, contact=contact, stage=interest, cause=TransitionCause.MANUAL
        )
    # then
    assert fell_back is not None
    entered = StageTransition.objects.get(to_stage=desire)
    common = {
        "sender": StageTransition,
        "workspace_id": str(workspace.pk),
        "funnel_id": str(aida.pk),
        "contact_id": str(contact.pk),
    }
    assert stage_changes == [
        {
            **common,
            "from_stage_id": None,
            "to_stage_id": str(desire.pk),
            "cause": "api",
            "transition_id": str(entered.pk),
        },
        {
            **common,
            "from_stage_id": str(desire.pk),
            "to_stage_id": str(interest.pk),
            "cause": "manual",
            "transition_id": str(fell_back.pk),
        },
    ]
