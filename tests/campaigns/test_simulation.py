"""The test drive: a contact run through a sequence on a virtual clock, writing nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.urls import URLPattern, URLResolver, include, path
from rest_framework.test import APIClient

from campaigns import engine
from campaigns.api import simulation as simulation_api
from campaigns.engine import _choice, choice_seed
from campaigns.models import Enrollment, Message, Sequence
from campaigns.services import enrollment_create, sequence_create, sequence_set_status
from campaigns.simulation import SimulatedItem, simulate
from campaigns.views.simulation import sequence_test_drive
from config import urls as config_urls
from contacts.models import ConsentRecord, Contact, ContactStatus, Tag
from core.exceptions import ApplicationError
from core.models import Membership, Role, Workspace
from funnel.models import ContactStage, StageTransition
from funnel.services import funnel_create
from tests.factories import ContactFactory

# Until campaigns/api/__init__.py and campaigns/urls.py mount the simulation, the tests mount
# it themselves in front of the project's URLs (harmless once they do).
urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/", include(simulation_api.urlpatterns)),
    path("sequences/<uuid:pk>/test-drive/", sequence_test_drive, name="sequence-test-drive"),
    *config_urls.urlpatterns,
]

T0 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)  # a Monday
SATURDAY = dt.datetime(2025, 1, 11, 10, 0, tzinfo=dt.UTC)
HTML = "<p>Hello {{ contact.first_name }}</p>"
BERLIN_WINDOW = {"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "18:00"}
HYPOTHETICAL = {"timezone": "UTC", "status": "subscribed"}


def email(key: str, next_key: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "type": "email",
        "subject": f"Mail {key}",
        "html": HTML,
        "next": next_key,
        **extra,
    }


def wait(key: str, duration: str, next_key: str | None) -> dict[str, Any]:
    return {"key": key, "type": "wait", "duration": duration, "next": next_key}


def clicked_branch(timeout: str = "P3D") -> list[dict[str, Any]]:
    return [
        email("welcome", "w"),
        {
            "key": "w",
            "type": "wait_for",
            "event": {"clicked": "welcome"},
            "timeout": timeout,
            "yes": "thanks",
            "no": "nudge",
        },
        email("thanks", None),
        email("nudge", None),
    ]


@pytest.fixture
def make_sequence(workspace: Workspace) -> Callable[..., Sequence]:
    def make(steps: list[dict[str, Any]], **data: Any) -> Sequence:
        return sequence_create(
            workspace=workspace, name=data.pop("name", "Seq"), steps=steps, **data
        )

    return make


def loose_caps(workspace: Workspace) -> None:
    Workspace.objects.filter(pk=workspace.pk).update(
        frequency_cap_per_day=20, frequency_cap_per_week=50
    )


def rows(timeline: list[SimulatedItem]) -> list[tuple[dt.datetime, str, str]]:
    return [(item.at, item.step, item.detail) for item in timeline]


def run(sequence: Sequence, **kwargs: Any) -> list[SimulatedItem]:
    sequence.refresh_from_db()
    arguments: dict[str, Any] = {
        "contact": None,
        "profile": HYPOTHETICAL,
        "reactions": [],
        "start": T0,
    }
    arguments.update(kwargs)
    return simulate(sequence=sequence, **arguments)


# --- the timeline


def test_three_email_aida_sequence_gives_each_mail_at_its_virtual_time(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    # given attention -> 2 days -> interest -> 3 days -> desire (default caps 1/day, 3/week)
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida")
    attention, interest, desire = [str(s.pk) for s in funnel.stages.order_by("position")][:3]
    sequence = make_sequence(
        [
            email("attention", "w1", stage=attention),
            wait("w1", "P2D", "interest"),
            email("interest", "w2", stage=interest),
            wait("w2", "P3D", "desire"),
            email("desire", None, stage=desire),
        ],
        funnel=funnel,
    )

    # when a hypothetical contact in UTC drives it
    timeline = run(sequence)

    # then the three mails leave at T0, T0 + 2 days and T0 + 5 days
    day = dt.timedelta(days=1)
    assert rows(timeline) == [
        (T0, "attention", "email 'Mail attention'"),
        (T0, "w1", "wait until Wed 2025-01-08 10:00 UTC"),
        (T0 + 2 * day, "interest", "email 'Mail interest'"),
        (T0 + 2 * day, "w2", "wait until Sat 2025-01-11 10:00 UTC"),
        (T0 + 5 * day, "desire", "email 'Mail desire'"),
        (T0 + 5 * day, "", "completed"),
    ]
    assert timeline[0].local == "Mon 2025-01-06 10:00 UTC"
    assert timeline[0].kind == "email"


def test_send_window_moves_a_saturday_mail_to_monday_nine_in_berlin(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    # given a window Mon-Fri 09:00-18:00 and a contact in Berlin, started on a Saturday
    sequence = make_sequence([email("hello", None)], send_window=BERLIN_WINDOW)

    timeline = run(sequence, profile={"timezone": "Europe/Berlin"}, start=SATURDAY)

    # then the mail waits for Monday 09:00 Berlin (08:00 UTC)
    monday_nine = dt.datetime(2025, 1, 13, 8, 0, tzinfo=dt.UTC)
    assert rows(timeline) == [
        (
            SATURDAY,
            "hello",
            "deferred by the send window to Mon 2025-01-13 09:00 Europe/Berlin",
        ),
        (monday_nine, "hello", "email 'Mail hello'"),
        (monday_nine, "", "completed"),
    ]
    assert timeline[1].local == "Mon 2025-01-13 09:00 Europe/Berlin"


def test_frequency_cap_defers_the_second_of_two_back_to_back_mails_by_a_day(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    # given the default cap of 1 mail per 24 h and two mails in a row
    sequence = make_sequence([email("first", "second"), email("second", None)])

    timeline = run(sequence)

    later = T0 + dt.timedelta(hours=24)
    assert rows(timeline) == [
        (T0, "first", "email 'Mail first'"),
        (T0, "second", "deferred by the frequency cap to Tue 2025-01-07 10:00 UTC"),
        (later, "second", "email 'Mail second'"),
        (later, "", "completed"),
    ]


def test_frequency_cap_counts_a_real_contacts_recent_mails(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    # given a real subscriber who got a mail two hours before the start
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED, timezone="UTC")
    message = Message.objects.create(
        workspace=workspace, contact=contact, subject="Earlier", status="sent"
    )
    Message.objects.filter(pk=message.pk).update(sent_at=T0 - dt.timedelta(hours=2))
    sequence = make_sequence([email("hello", None)])

    timeline = run(sequence, contact=contact, profile=None)

    assert rows(timeline)[:2] == [
        (T0, "hello", "deferred by the frequency cap to Tue 2025-01-07 08:00 UTC"),
        (T0 + dt.timedelta(hours=22), "hello", "email 'Mail hello'"),
    ]


def test_wait_for_click_takes_yes_at_the_reaction(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    loose_caps(workspace)
    sequence = make_sequence(clicked_branch())

    timeline = run(sequence, reactions=[{"step": "welcome", "event": "clicked", "after": "PT2H"}])

    click = T0 + dt.timedelta(hours=2)
    assert rows(timeline) == [
        (T0, "welcome", "email 'Mail welcome'"),
        (click, "w", "waited for clicked(welcome): yes after PT2H"),
        (click, "thanks", "email 'Mail thanks'"),
        (click, "", "completed"),
    ]


def test_wait_for_click_without_reaction_takes_no_at_the_timeout(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    loose_caps(workspace)
    sequence = make_sequence(clicked_branch())

    # an open is not a click: it does not take the yes-branch
    timeline = run(sequence, reactions=[{"step": "welcome", "event": "opened", "after": "PT1H"}])

    timeout = T0 + dt.timedelta(days=3)
    assert rows(timeline) == [
        (T0, "welcome", "email 'Mail welcome'"),
        (timeout, "w", "waited for clicked(welcome): no at timeout"),
        (timeout, "nudge", "email 'Mail nudge'"),
        (timeout, "", "completed"),
    ]


def test_a_reaction_after_the_timeout_takes_no(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    loose_caps(workspace)
    sequence = make_sequence(clicked_branch(timeout="PT1H"))

    timeline = run(sequence, reactions=[{"step": "welcome", "event": "clicked", "after": "PT2H"}])

    assert timeline[1].detail == "waited for clicked(welcome): no at timeout"
    assert timeline[1].at == T0 + dt.timedelta(hours=1)


def test_split_is_deterministic_and_uses_the_engines_choice(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    loose_caps(workspace)
    sequence = make_sequence(
        [
            {
                "key": "ab",
                "type": "split",
                "paths": [{"weight": 1, "next": "a"}, {"weight": 1, "next": "b"}],
            },
            email("a", None),
            email("b", None),
        ]
    )

    first, second = run(sequence), run(sequence)

    assert rows(first) == rows(second)
    seed = choice_seed(sequence_id=sequence.pk, contact_id="profile", step_key="ab")
    expected = _choice(seed, [1, 1])
    assert first[0].detail == f"split: path {expected + 1}"
    assert first[1].step == ("a", "b")[expected]


def test_variants_are_chosen_deterministically(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    variants = [
        {"subject": "Hi A", "html": HTML, "weight": 1},
        {"subject": "Hi B", "html": HTML, "weight": 3},
    ]
    sequence = make_sequence([email("hello", None, variants=variants)])

    timeline = run(sequence)

    chosen = _choice(
        choice_seed(sequence_id=sequence.pk, contact_id="profile", step_key="hello"), [1, 3]
    )
    assert timeline[0].detail == f"email 'Hi {'AB'[chosen]}' (variant {chosen + 1})"
    assert rows(run(sequence)) == rows(timeline)


def test_a_real_run_takes_the_split_path_and_gets_the_variant_the_test_drive_showed(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    # given a sequence that splits three ways, each path a mail with three A/B variants
    loose_caps(workspace)
    variants = [
        {"subject": f"Offer {letter}", "html": HTML, "weight": weight}
        for letter, weight in (("A", 1), ("B", 2), ("C", 1))
    ]
    sequence = make_sequence(
        [
            {
                "key": "ab",
                "type": "split",
                "paths": [
                    {"weight": 1, "next": "left"},
                    {"weight": 1, "next": "middle"},
                    {"weight": 1, "next": "right"},
                ],
            },
            email("left", None, variants=variants),
            email("middle", None, variants=variants),
            email("right", None, variants=variants),
        ]
    )
    sequence_set_status(sequence=sequence, status="active")
    contacts = [
        ContactFactory(
            workspace=workspace,
            status=ContactStatus.SUBSCRIBED,
            timezone="UTC",
            email=f"driver{number}@example.org",
        )
        for number in range(12)
    ]

    # when each contact is test-driven, then really enrolled and the engine runs
    with time_machine.travel(T0, tick=False):
        drives = {}
        for contact in contacts:
            timeline = run(sequence, contact=contact, profile=None)
            split, mail = timeline[0], timeline[1]
            drives[contact.pk] = (split.detail, mail.step, mail.detail)
        for contact in contacts:
            assert enrollment_create(sequence=sequence, contact=contact) is not None
        assert engine.tick().messages == len(contacts)

    # then every real run took the path and got the variant its test drive showed
    for contact in contacts:
        message = Message.objects.get(contact=contact)
        path_number = ("left", "middle", "right").index(message.step_key) + 1
        real = (
            f"split: path {path_number}",
            message.step_key,
            f"email '{message.subject}' (variant {message.variant})",
        )
        assert real == drives[contact.pk]
    # and the contacts did not all go the same way (the comparison means something)
    assert len({steps for _split, steps, _mail in drives.values()}) > 1
    assert len({detail for _split, _step, detail in drives.values()}) > 1


def test_condition_is_judged_on_the_hypothetical_profile_and_simulated_tags(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    loose_caps(workspace)
    sequence = make_sequence(
        [
            {
                "key": "c1",
                "type": "condition",
                "if": {"all": [{"tag": "vip"}]},
                "yes": "t",
                "no": "t",
            },
            {"key": "t", "type": "add_tag", "tag": "warm", "next": "c2"},
            {
                "key": "c2",
                "type": "condition",
                "if": {
                    "all": [{"tag": "warm"}, {"field": "first_name", "op": "eq", "value": "ada"}]
                },
                "yes": "yes_mail",
                "no": "no_mail",
            },
            email("yes_mail", None),
            email("no_mail", None),
        ]
    )

    timeline = run(sequence, profile={"first_name": "Ada", "tags": ["vip"], "timezone": "UTC"})

    assert [item.detail for item in timeline] == [
        "condition: yes",
        "tag added: warm",
        "condition: yes",
        "email 'Mail yes_mail'",
        "completed",
    ]


def test_condition_on_a_real_contact_reads_its_segment_membership(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED, timezone="UTC")
    contact.tags.add(Tag.objects.create(workspace=workspace, name="vip"))
    sequence = make_sequence(
        [
            {
                "key": "c",
                "type": "condition",
                "if": {"all": [{"tag": "vip"}]},
                "yes": "y",
                "no": "n",
            },
            email("y", None),
            email("n", None),
        ]
    )

    timeline = run(sequence, contact=contact, profile=None)

    assert [item.detail for item in timeline][:2] == ["condition: yes", "email 'Mail y'"]


def test_an_unsubscribed_contact_exits_at_the_first_mail(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    sequence = make_sequence([email("hello", None)])

    timeline = run(sequence, profile={"status": "unsubscribed"})

    assert rows(timeline) == [(T0, "hello", "exit: contact not mailable (unsubscribed)")]


def test_the_simulation_stops_after_a_year(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    sequence = make_sequence([wait("long", "P200D", "longer"), wait("longer", "P200D", None)])

    timeline = run(sequence)

    assert [item.kind for item in timeline] == ["wait", "wait", "stop"]
    assert timeline[-1].at == T0 + dt.timedelta(days=365)


def test_nothing_is_written_and_nothing_is_sent(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    # given a real subscriber and a sequence with every kind of writing step
    loose_caps(workspace)
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida")
    desire = str(funnel.stages.order_by("position")[2].pk)
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED, timezone="UTC")
    sequence = make_sequence(
        [
            email("welcome", "tag", stage=desire),
            {"key": "tag", "type": "add_tag", "tag": "driven", "next": "attr"},
            {"key": "attr", "type": "set_attribute", "name": "plan", "value": "pro", "next": "mv"},
            {"key": "mv", "type": "move_stage", "stage": desire, "next": "hook"},
            {"key": "hook", "type": "webhook", "url": "https://example.com/h", "next": "wf"},
            {
                "key": "wf",
                "type": "wait_for",
                "event": {"opened": "welcome"},
                "timeout": "P1D",
                "yes": "bye",
                "no": "bye",
            },
            email("bye", None),
        ],
        funnel=funnel,
    )
    counted = (Message, Enrollment, StageTransition, Tag, ConsentRecord, ContactStage)
    before = {model: model.objects.count() for model in counted}
    tags_before = contact.tags.count()
    mail.outbox.clear()

    # when it is driven through, with a reaction
    timeline = run(
        sequence,
        contact=contact,
        profile=None,
        reactions=[{"step": "welcome", "event": "opened", "after": "PT3H"}],
    )

    # then the timeline shows every step and the database and the outbox are untouched
    assert [item.detail for item in timeline] == [
        "email 'Mail welcome'",
        "tag added: driven",
        "attribute plan set to 'pro'",
        "move to stage Desire",
        "webhook to https://example.com/h (not called in a test drive)",
        "waited for opened(welcome): yes after PT3H",
        "email 'Mail bye'",
        "completed",
    ]
    assert {model: model.objects.count() for model in counted} == before
    contact.refresh_from_db()
    assert contact.tags.count() == tags_before
    assert contact.attributes == {}
    assert mail.outbox == []


def test_bad_reactions_name_the_field(
    workspace: Workspace, make_sequence: Callable[..., Sequence]
) -> None:
    sequence = make_sequence(clicked_branch())

    with pytest.raises(ApplicationError) as unknown:
        run(sequence, reactions=[{"step": "nope", "event": "clicked", "after": "PT2H"}])
    with pytest.raises(ApplicationError) as bad_duration:
        run(sequence, reactions=[{"step": "welcome", "event": "clicked", "after": "2 hours"}])

    assert unknown.value.field == "reactions[0].step"
    assert bad_duration.value.field == "reactions[0].after"


# --- the API


def url(sequence: Sequence) -> str:
    return f"/api/v1/sequences/{sequence.pk}/simulate/"


@pytest.mark.urls(__name__)
def test_api_returns_the_timeline(
    workspace: Workspace, make_sequence: Callable[..., Sequence], api: APIClient
) -> None:
    loose_caps(workspace)
    sequence = make_sequence(clicked_branch())

    response = api.post(
        url(sequence),
        {
            "profile": {"timezone": "Europe/Berlin", "tags": ["vip"], "first_name": "Ada"},
            "reactions": [{"step": "welcome", "event": "clicked", "after": "PT2H"}],
            "start": "2025-01-06T10:00:00Z",
        },
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["timeline"] == [
        {
            "at": "2025-01-06T10:00:00Z",
            "local": "Mon 2025-01-06 11:00 Europe/Berlin",
            "step": "welcome",
            "kind": "email",
            "detail": "email 'Mail welcome'",
        },
        {
            "at": "2025-01-06T12:00:00Z",
            "local": "Mon 2025-01-06 13:00 Europe/Berlin",
            "step": "w",
            "kind": "wait_for",
            "detail": "waited for clicked(welcome): yes after PT2H",
        },
        {
            "at": "2025-01-06T12:00:00Z",
            "local": "Mon 2025-01-06 13:00 Europe/Berlin",
            "step": "thanks",
            "kind": "email",
            "detail": "email 'Mail thanks'",
        },
        {
            "at": "2025-01-06T12:00:00Z",
            "local": "Mon 2025-01-06 13:00 Europe/Berlin",
            "step": "",
            "kind": "end",
            "detail": "completed",
        },
    ]


@pytest.mark.urls(__name__)
def test_api_with_a_real_contact_and_a_read_only_key(
    workspace: Workspace,
    make_sequence: Callable[..., Sequence],
    api_client_for: Callable[..., APIClient],
) -> None:
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED, timezone="UTC")
    sequence = make_sequence([email("hello", None)])
    read_only = api_client_for(workspace, access="read")

    response = read_only.post(
        url(sequence), {"contact": str(contact.pk), "start": "2025-01-06T10:00:00Z"}, format="json"
    )

    assert response.status_code == 200
    assert [row["detail"] for row in response.json()["timeline"]] == [
        "email 'Mail hello'",
        "completed",
    ]
    assert Message.objects.count() == 0


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    ("reactions", "field"),
    [
        ([{"step": "nope", "event": "clicked", "after": "PT2H"}], "reactions[0].step"),
        ([{"step": "welcome", "event": "clicked", "after": "soon"}], "reactions[0].after"),
        ([{"step": "welcome", "event": "liked", "after": "PT2H"}], "reactions[0].event"),
        ("clicked", "reactions"),
    ],
)
def test_api_refuses_bad_reactions_naming_the_field(
    workspace: Workspace,
    make_sequence: Callable[..., Sequence],
    api: APIClient,
    reactions: Any,
    field: str,
) -> None:
    sequence = make_sequence(clicked_branch())

    response = api.post(url(sequence), {"reactions": reactions}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]


@pytest.mark.urls(__name__)
def test_api_hides_other_workspaces_sequences_and_contacts(
    workspace: Workspace,
    other_workspace: Workspace,
    make_sequence: Callable[..., Sequence],
    api: APIClient,
) -> None:
    mine = make_sequence([email("hello", None)])
    theirs = sequence_create(workspace=other_workspace, name="Theirs", steps=[email("x", None)])
    their_contact: Contact = ContactFactory(workspace=other_workspace)

    assert api.post(url(theirs), {}, format="json").status_code == 404
    response = api.post(url(mine), {"contact": str(their_contact.pk)}, format="json")
    assert response.status_code == 404


# --- the page


@pytest.mark.urls(__name__)
def test_a_viewer_test_drives_a_sequence_on_the_page(
    workspace: Workspace,
    make_sequence: Callable[..., Sequence],
    member_of: Callable[..., Membership],
    logged_in: Callable[[Membership], Client],
) -> None:
    loose_caps(workspace)
    sequence = make_sequence(clicked_branch())
    client = logged_in(member_of(workspace, Role.VIEWER))
    page = f"/sequences/{sequence.pk}/test-drive/"

    assert client.get(page).status_code == 200
    response = client.post(
        page,
        {
            "timezone": "Europe/Berlin",
            "status": "subscribed",
            "tags": "vip, new",
            "start": "2025-01-06 10:00",
            "reaction_step_0": "welcome",
            "reaction_event_0": "clicked",
            "reaction_after_0": "PT2H",
        },
    )

    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="timeline"' in body
    assert "waited for clicked(welcome): yes after PT2H" in body
    assert "Mon 2025-01-06 13:00 Europe/Berlin" in body
    assert Message.objects.count() == 0


@pytest.mark.urls(__name__)
def test_the_page_shows_a_bad_reaction_next_to_its_row(
    workspace: Workspace,
    make_sequence: Callable[..., Sequence],
    owner: Membership,
    logged_in: Callable[[Membership], Client],
) -> None:
    sequence = make_sequence(clicked_branch())
    client = logged_in(owner)

    response = client.post(
        f"/sequences/{sequence.pk}/test-drive/",
        {"status": "subscribed", "reaction_event_1": "clicked", "reaction_after_1": "PT2H"},
    )

    assert response.status_code == 200
    assert 'data-testid="timeline"' not in response.content.decode()
    assert "reaction_step_1" in response.context["form"].errors
