"""Funnel pages: index, new funnel, board with menu and drag-and-drop moves, stage editor,
rules editor, roles, workspace isolation, escaping; and the timeline on the contact page."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from contacts.models import Contact
from core.models import Membership, Role, Workspace
from funnel import services
from funnel.models import (
    ContactStage,
    Funnel,
    Stage,
    StageRule,
    StageTransition,
    TransitionCause,
)
from funnel.services import EventInput
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
HTMX = {"HTTP_HX_REQUEST": "true"}


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def aida(workspace: Workspace) -> Funnel:
    return services.funnel_create(
        workspace=workspace, name="Spring sale", preset="aida", goal_event="purchase"
    )


@pytest.fixture
def editor(workspace: Workspace, member_of: Callable[..., Membership]) -> Membership:
    return member_of(workspace, Role.EDITOR)


@pytest.fixture
def viewer(workspace: Workspace, member_of: Callable[..., Membership]) -> Membership:
    return member_of(workspace, Role.VIEWER)


def stage(funnel: Funnel, key: str) -> Stage:
    return Stage.objects.get(funnel=funnel, key=key)


def put(funnel: Funnel, contact: Contact, key: str, at: datetime | None = None) -> None:
    """Given state: the contact in that stage (through the real service)."""
    services.contact_move(
        funnel=funnel,
        contact=contact,
        stage=stage(funnel, key),
        cause=TransitionCause.API,
        occurred_at=at,
    )


def current_stage_key(funnel: Funnel, contact: Contact) -> str | None:
    place = ContactStage.objects.filter(funnel=funnel, contact=contact).first()
    return place.stage.key if place else None


def stage_rows(funnel: Funnel) -> list[tuple[Any, str, str, int]]:
    return list(
        Stage.objects.filter(funnel=funnel)
        .order_by("position")
        .values_list("pk", "key", "name", "position")
    )


def transitions(funnel: Funnel) -> list[tuple[str | None, str, str, str]]:
    return [
        (t.from_stage.key if t.from_stage else None, t.to_stage.key, t.cause, t.cause_detail)
        for t in StageTransition.objects.filter(funnel=funnel)
        .select_related("from_stage", "to_stage")
        .order_by("occurred_at")
    ]


def squashed(html: str) -> str:
    """The HTML with every run of whitespace made one space."""
    return " ".join(html.split())


def column_texts(html: str) -> list[tuple[str, str, list[str]]]:
    """(stage name, count, card names in order) for each board column, read from the HTML."""
    columns = []
    for section in re.findall(r'<section class="stage-column".*?</section>', html, re.S):
        name = re.search(r"<h2[^>]*>(.*?)</h2>", section, re.S)
        count = re.search(r'data-testid="count"[^>]*>(.*?)</span>', section, re.S)
        cards = re.findall(r'class="contact-name"[^>]*>(.*?)</a>', section, re.S)
        assert name is not None and count is not None
        columns.append((name.group(1).strip(), count.group(1).strip(), cards))
    return columns


# --- index and new funnel --------------------------------------------------------------------


def test_the_index_lists_funnels_with_stage_counts(
    workspace: Workspace, owner: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    # given two contacts in Attention and one in Desire
    first, second, third = ContactFactory.create_batch(3, workspace=workspace)
    put(aida, first, "attention")
    put(aida, second, "attention")
    put(aida, third, "desire")

    # when
    response = logged_in(owner).get(reverse("funnel-list"))

    # then
    assert response.status_code == 200
    [summary] = response.context["summaries"]
    assert summary.funnel == aida
    assert [(s.name, count) for s, count in summary.stages] == [
        ("Attention", 2),
        ("Interest", 0),
        ("Desire", 1),
        ("Action", 0),
    ]
    assert summary.total == 3
    assert reverse("funnel-board", args=[aida.pk]) in response.content.decode()


@pytest.mark.parametrize(
    ("preset", "stage_names", "expected"),
    [
        (
            "aida",
            "",
            [
                ("attention", "Attention"),
                ("interest", "Interest"),
                ("desire", "Desire"),
                ("action", "Action"),
            ],
        ),
        (
            "journey",
            "",
            [
                ("awareness", "Awareness"),
                ("consideration", "Consideration"),
                ("purchase", "Purchase"),
                ("retention", "Retention"),
                ("advocacy", "Advocacy"),
            ],
        ),
        (
            "custom",
            "Lead\n\n  Trial \nPaying customer\n",
            [("lead", "Lead"), ("trial", "Trial"), ("paying_customer", "Paying customer")],
        ),
    ],
)
def test_new_funnel_from_a_preset_or_custom_stage_names(
    workspace: Workspace,
    editor: Membership,
    logged_in: Callable[..., Client],
    preset: str,
    stage_names: str,
    expected: list[tuple[str, str]],
) -> None:
    # when
    response = logged_in(editor).post(
        reverse("funnel-create"),
        {"name": " Q3 ", "preset": preset, "stage_names": stage_names, "goal_event": "purchase"},
    )

    # then
    funnel = Funnel.objects.get(workspace=workspace)
    assert response.status_code == 302
    assert response["Location"] == reverse("funnel-board", args=[funnel.pk])
    assert (funnel.name, funnel.preset, funnel.goal_event) == (
        "Q3",
        None if preset == "custom" else preset,
        "purchase",
    )
    assert [(key, name) for _pk, key, name, _pos in stage_rows(funnel)] == expected


def test_new_custom_funnel_needs_stage_names_and_a_valid_goal_event(
    workspace: Workspace, editor: Membership, logged_in: Callable[..., Client]
) -> None:
    # when
    response = logged_in(editor).post(
        reverse("funnel-create"),
        {"name": "Q3", "preset": "custom", "stage_names": " \n ", "goal_event": "bad name!"},
    )

    # then
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "stage_names": ["Name at least one stage, one per line."],
        "goal_event": ["Letters, digits and _ . : - only, as in the events API."],
    }
    assert Funnel.objects.count() == 0


def test_viewers_cannot_create_funnels(
    viewer: Membership, logged_in: Callable[..., Client]
) -> None:
    client = logged_in(viewer)
    assert client.get(reverse("funnel-create")).status_code == 403
    assert client.post(reverse("funnel-create"), {"name": "X", "preset": "aida"}).status_code == 403
    assert Funnel.objects.count() == 0


# --- board -----------------------------------------------------------------------------------


def test_the_board_shows_stages_in_order_with_counts_and_newest_entered_first(
    workspace: Workspace,
    viewer: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
) -> None:
    # given contacts entering at different times, one of them in another funnel only
    ada = ContactFactory(workspace=workspace, first_name="Ada", last_name="L", email="ada@x.org")
    bob = ContactFactory(workspace=workspace, first_name="", last_name="", email="bob@x.org")
    cy = ContactFactory(workspace=workspace, first_name="Cy", last_name="", email="cy@x.org")
    other = services.funnel_create(workspace=workspace, name="Other", preset="journey")
    put(aida, ada, "interest", T0)
    put(aida, bob, "interest", T0 + timedelta(hours=1))
    put(aida, cy, "action", T0)
    put(other, cy, "awareness", T0)

    # when a viewer opens the board three hours later
    with time_machine.travel(T0 + timedelta(hours=3), tick=False):
        response = logged_in(viewer).get(reverse("funnel-board", args=[aida.pk]))

    # then
    html = response.content.decode()
    assert response.status_code == 200
    assert column_texts(html) == [
        ("Attention", "0", []),
        ("Interest", "2", ["bob@x.org", "Ada L"]),
        ("Desire", "0", []),
        ("Action", "1", ["Cy"]),
    ]
    assert "2\xa0hours in stage" in html
    assert "3\xa0hours in stage" in html
    # viewers get no move menu and no draggable cards
    assert 'draggable="true"' not in html
    assert reverse("funnel-move", args=[aida.pk]) not in html


def test_a_column_shows_the_first_50_and_links_to_the_rest(
    workspace: Workspace, owner: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    # given 52 contacts entering Desire one minute apart
    contacts = ContactFactory.create_batch(52, workspace=workspace)
    for minute, contact in enumerate(contacts):
        put(aida, contact, "desire", T0 + timedelta(minutes=minute))

    # when
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        response = logged_in(owner).get(reverse("funnel-board", args=[aida.pk]))

    # then the newest 50 are shown, and a link leads to all of them on the contacts list
    desire = response.context["columns"][2]
    assert desire.count == 52
    assert [place.contact for place in desire.cards] == contacts[::-1][:50]
    assert desire.more == 2
    html = response.content.decode()
    assert f'href="/contacts/?stage={stage(aida, "desire").pk}">2 more contacts</a>' in html


def test_the_board_takes_the_same_number_of_queries_for_1_or_60_contacts(
    workspace: Workspace, owner: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    client = logged_in(owner)
    put(aida, ContactFactory(workspace=workspace), "attention")
    url = reverse("funnel-board", args=[aida.pk])
    client.get(url)  # warm the session and the workspace
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for index, contact in enumerate(ContactFactory.create_batch(59, workspace=workspace)):
        put(aida, contact, ["attention", "interest", "desire", "action"][index % 4])
    with CaptureQueriesContext(connection) as many:
        response = client.get(url)

    assert [column.count for column in response.context["columns"]] == [16, 15, 15, 14]
    assert len(many) == len(few)
    # session, user, membership; funnel, stages, counts, cards; the workspace switcher
    assert len(few) == 8


@pytest.mark.parametrize(
    ("start", "target"),
    [
        ("attention", "interest"),  # forward
        ("desire", "interest"),  # back
        ("attention", "action"),  # skipping two stages
        (None, "desire"),  # entering the funnel
    ],
)
def test_the_card_menu_moves_a_contact_in_any_direction(
    workspace: Workspace,
    editor: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
    start: str | None,
    target: str,
) -> None:
    # given
    contact = ContactFactory(workspace=workspace, email="mover@x.org")
    if start:
        put(aida, contact, start, T0)
    before = transitions(aida)

    # when the editor moves the contact with the card's menu
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        response = logged_in(editor).post(
            reverse("funnel-move", args=[aida.pk]),
            {"contact": str(contact.pk), "stage": str(stage(aida, target).pk)},
            follow=True,
        )

    # then
    assert response.redirect_chain == [(reverse("funnel-board", args=[aida.pk]), 302)]
    assert transitions(aida) == [
        *before,
        (start, target, "manual", f"user:{editor.user.pk}"),
    ]
    place = ContactStage.objects.get(funnel=aida, contact=contact)
    assert (place.stage.key, place.entered_at) == (target, T0 + timedelta(days=1))
    assert f"mover@x.org moved to {stage(aida, target).name}." in response.content.decode()


def test_a_contact_enters_by_email_from_the_board(
    workspace: Workspace, editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    contact = ContactFactory(workspace=workspace, email="late@x.org")

    response = logged_in(editor).post(
        reverse("funnel-move", args=[aida.pk]),
        {"email": " LATE@x.org ", "stage": str(stage(aida, "interest").pk)},
    )

    assert response.status_code == 302
    assert current_stage_key(aida, contact) == "interest"
    assert transitions(aida) == [(None, "interest", "manual", f"user:{editor.user.pk}")]


def test_moving_into_the_current_stage_changes_nothing(
    workspace: Workspace, editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    contact = ContactFactory(workspace=workspace, email="still@x.org")
    put(aida, contact, "desire", T0)

    response = logged_in(editor).post(
        reverse("funnel-move", args=[aida.pk]),
        {"contact": str(contact.pk), "stage": str(stage(aida, "desire").pk)},
        follow=True,
    )

    assert "still@x.org is in Desire already." in response.content.decode()
    assert transitions(aida) == [(None, "desire", "api", "")]


def test_drag_and_drop_posts_the_move_and_gets_the_board_with_new_counts(
    workspace: Workspace, editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    # given
    ada = ContactFactory(workspace=workspace, first_name="Ada", last_name="", email="ada@x.org")
    bob = ContactFactory(workspace=workspace, first_name="Bob", last_name="", email="bob@x.org")
    put(aida, ada, "desire", T0)
    put(aida, bob, "desire", T0)

    # when the board's script posts the drop (HX-Request: the fragment comes back)
    response = logged_in(editor).post(
        reverse("funnel-move", args=[aida.pk]),
        {"contact": str(ada.pk), "stage": str(stage(aida, "attention").pk)},
        **HTMX,
    )

    # then
    html = response.content.decode()
    assert response.status_code == 200
    assert html.startswith('<div class="board" data-testid="board">')
    assert "<html" not in html
    assert column_texts(html) == [
        ("Attention", "1", ["Ada"]),
        ("Interest", "0", []),
        ("Desire", "1", ["Bob"]),
        ("Action", "0", []),
    ]
    assert transitions(aida)[-1] == ("desire", "attention", "manual", f"user:{editor.user.pk}")


def test_drag_and_drop_with_a_bad_stage_answers_400_with_the_reason(
    workspace: Workspace,
    other_workspace: Workspace,
    editor: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
) -> None:
    contact = ContactFactory(workspace=workspace)
    foreign = services.funnel_create(workspace=other_workspace, name="Theirs", preset="aida")
    client = logged_in(editor)

    bad_stage = client.post(
        reverse("funnel-move", args=[aida.pk]),
        {"contact": str(contact.pk), "stage": str(stage(foreign, "desire").pk)},
        **HTMX,
    )
    bad_contact = client.post(
        reverse("funnel-move", args=[aida.pk]),
        {"contact": "not-a-uuid", "stage": str(stage(aida, "desire").pk)},
        **HTMX,
    )

    assert (bad_stage.status_code, bad_stage.content.decode()) == (
        400,
        "Choose a stage of this funnel.",
    )
    assert (bad_contact.status_code, bad_contact.content.decode()) == (
        400,
        "No such contact in this workspace.",
    )
    assert StageTransition.objects.count() == 0


def test_moving_needs_post(
    editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    assert logged_in(editor).get(reverse("funnel-move", args=[aida.pk])).status_code == 405


@pytest.mark.parametrize("headers", [{}, HTMX])
def test_viewers_cannot_move_contacts(
    workspace: Workspace,
    viewer: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
    headers: dict[str, str],
) -> None:
    # given
    contact = ContactFactory(workspace=workspace)
    put(aida, contact, "attention", T0)

    # when
    response = logged_in(viewer).post(
        reverse("funnel-move", args=[aida.pk]),
        {"contact": str(contact.pk), "stage": str(stage(aida, "action").pk)},
        **headers,
    )

    # then
    assert response.status_code == 403
    assert current_stage_key(aida, contact) == "attention"
    assert transitions(aida) == [(None, "attention", "api", "")]


# --- stage editor ----------------------------------------------------------------------------


def test_rename_add_and_reorder_keep_stage_ids_and_history(
    workspace: Workspace, editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    # given a contact with history in Interest and now in Desire
    contact = ContactFactory(workspace=workspace)
    put(aida, contact, "interest", T0)
    put(aida, contact, "desire", T0 + timedelta(hours=1))
    ids = {key: pk for pk, key, _name, _pos in stage_rows(aida)}
    client = logged_in(editor)
    url = reverse("funnel-stages", args=[aida.pk])

    # when the editor renames Desire, adds a stage, and moves Action above Desire
    renamed = client.post(
        url, {"action": "rename", "stage": str(ids["desire"]), "name": " Wunsch "}, follow=True
    )
    client.post(url, {"action": "add", "name": "Loyalty"})
    client.post(url, {"action": "up", "stage": str(ids["action"])})
    client.post(url, {"action": "down", "stage": str(ids["attention"])})

    # then
    assert "Stage renamed." in renamed.content.decode()
    rows = stage_rows(aida)
    assert [(pk, key, name, pos) for pk, key, name, pos in rows[:4]] == [
        (ids["interest"], "interest", "Interest", 0),
        (ids["attention"], "attention", "Attention", 1),
        (ids["action"], "action", "Action", 2),
        (ids["desire"], "desire", "Wunsch", 3),
    ]
    assert [(key, name, pos) for _pk, key, name, pos in rows[4:]] == [("loyalty", "Loyalty", 4)]
    assert transitions(aida) == [(None, "interest", "api", ""), ("interest", "desire", "api", "")]
    assert ContactStage.objects.get(contact=contact).stage_id == ids["desire"]


def test_moving_the_first_stage_up_changes_nothing(
    editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    before = stage_rows(aida)

    logged_in(editor).post(
        reverse("funnel-stages", args=[aida.pk]),
        {"action": "up", "stage": str(stage(aida, "attention").pk)},
    )

    assert stage_rows(aida) == before


def test_renaming_to_an_empty_name_is_refused(
    editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    before = stage_rows(aida)

    response = logged_in(editor).post(
        reverse("funnel-stages", args=[aida.pk]),
        {"action": "rename", "stage": str(stage(aida, "desire").pk), "name": "  "},
        follow=True,
    )

    assert "Every stage needs a name." in response.content.decode()
    assert stage_rows(aida) == before


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ("in it", "Contacts are in this stage; move them first."),
        ("passed through", "This stage has history; rename it instead of deleting it."),
    ],
)
def test_deleting_a_stage_with_contacts_or_history_is_refused(
    workspace: Workspace,
    editor: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
    history: str,
    message: str,
) -> None:
    # given
    contact = ContactFactory(workspace=workspace)
    put(aida, contact, "interest", T0)
    if history == "passed through":
        put(aida, contact, "desire", T0 + timedelta(hours=1))
    before_stages, before_transitions = stage_rows(aida), transitions(aida)

    # when
    response = logged_in(editor).post(
        reverse("funnel-stages", args=[aida.pk]),
        {"action": "delete", "stage": str(stage(aida, "interest").pk)},
        follow=True,
    )

    # then
    assert f'<li class="message error">{message}</li>' in response.content.decode()
    assert stage_rows(aida) == before_stages
    assert transitions(aida) == before_transitions


def test_deleting_an_unused_stage_closes_the_gap(
    editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    response = logged_in(editor).post(
        reverse("funnel-stages", args=[aida.pk]),
        {"action": "delete", "stage": str(stage(aida, "interest").pk)},
        follow=True,
    )

    assert "Stage Interest deleted." in response.content.decode()
    assert [(key, pos) for _pk, key, _name, pos in stage_rows(aida)] == [
        ("attention", 0),
        ("desire", 2),
        ("action", 3),
    ]


def test_funnel_settings_change_name_and_goal(
    editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    response = logged_in(editor).post(
        reverse("funnel-stages", args=[aida.pk]),
        {"action": "settings", "name": "Autumn", "goal_event": "order_paid"},
    )

    aida.refresh_from_db()
    assert response.status_code == 302
    assert (aida.name, aida.goal_event) == ("Autumn", "order_paid")


def test_viewers_cannot_open_or_use_the_stage_editor(
    viewer: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    client = logged_in(viewer)
    url = reverse("funnel-stages", args=[aida.pk])
    before = stage_rows(aida)

    assert client.get(url).status_code == 403
    assert client.post(url, {"action": "add", "name": "Sneaky"}).status_code == 403
    assert stage_rows(aida) == before


def test_deleting_a_funnel_takes_its_stages_and_history_but_not_contacts(
    workspace: Workspace, editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    contact = ContactFactory(workspace=workspace)
    put(aida, contact, "interest", T0)
    put(aida, contact, "desire", T0 + timedelta(hours=1))
    client = logged_in(editor)

    assert client.get(reverse("funnel-delete", args=[aida.pk])).status_code == 200
    response = client.post(reverse("funnel-delete", args=[aida.pk]))

    assert response["Location"] == reverse("funnel-list")
    assert Funnel.objects.count() == 0
    assert Stage.objects.count() == 0
    assert StageTransition.objects.count() == 0
    assert Contact.objects.filter(pk=contact.pk).exists()


# --- rules editor ----------------------------------------------------------------------------


def record(workspace: Workspace, contact: Contact, name: str, **properties: Any) -> None:
    services.events_record(
        workspace=workspace,
        inputs=[EventInput(name=name, contact_id=contact.pk, properties=properties)],
    )


def test_a_rule_made_on_the_page_moves_a_contact_on_the_matching_event_only(
    workspace: Workspace,
    editor: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given a rule "demo_booked with plan = pro -> Desire" made on the rules page
    response = logged_in(editor).post(
        reverse("funnel-rules", args=[aida.pk]),
        {
            "event": "demo_booked",
            "property": "plan",
            "operator": "eq",
            "value": "pro",
            "where": "",
            "move_to": str(stage(aida, "desire").pk),
        },
        follow=True,
    )
    rule = StageRule.objects.get(funnel=aida)
    assert (rule.when, rule.move_to.key) == (
        {"event": "demo_booked", "where": {"plan": "pro"}},
        "desire",
    )
    html = squashed(response.content.decode())
    assert "Rule added." in html
    assert (
        "When event <code>demo_booked</code> with <code>plan = pro</code> "
        '<span class="rule-arrow" aria-hidden="true">→</span> move to <strong>Desire</strong>'
    ) in html
    pro = ContactFactory(workspace=workspace)
    free = ContactFactory(workspace=workspace)
    other = ContactFactory(workspace=workspace)

    # when events arrive (the task runs eagerly after commit)
    with django_capture_on_commit_callbacks(execute=True):
        record(workspace, pro, "demo_booked", plan="pro")
        record(workspace, free, "demo_booked", plan="free")
        record(workspace, other, "newsletter_opened", plan="pro")

    # then only the matching event moved its contact
    assert current_stage_key(aida, pro) == "desire"
    assert current_stage_key(aida, free) is None
    assert current_stage_key(aida, other) is None
    assert [(t.contact_id, t.cause) for t in StageTransition.objects.all()] == [(pro.pk, "rule")]


def test_a_rule_with_json_conditions_and_its_sentence(
    workspace: Workspace,
    editor: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # when
    response = logged_in(editor).post(
        reverse("funnel-rules", args=[aida.pk]),
        {
            "event": "purchase",
            "property": "",
            "operator": "eq",
            "value": "",
            "where": '{"total": {"gte": 100}, "country": {"in": ["DE", "AT"]}}',
            "move_to": str(stage(aida, "action").pk),
        },
        follow=True,
    )

    # then
    html = response.content.decode()
    assert "<code>total ≥ 100</code> and <code>country is one of DE, AT</code>" in html
    big, small = ContactFactory.create_batch(2, workspace=workspace)
    with django_capture_on_commit_callbacks(execute=True):
        record(workspace, big, "purchase", total=120, country="DE")
        record(workspace, small, "purchase", total=99, country="DE")
    assert (current_stage_key(aida, big), current_stage_key(aida, small)) == ("action", None)


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"event": "demo booked!"},
            {"event": ["Letters, digits and _ . : - only, as in the events API."]},
        ),
        (
            {"where": "{plan: pro}"},
            {
                "where": [
                    "Not valid JSON (line 1, column 2): "
                    "Expecting property name enclosed in double quotes"
                ]
            },
        ),
        ({"where": '["plan"]'}, {"where": ['Give an object, e.g. {"plan": "pro"}.']}),
        (
            {"where": '{"plan": {"like": "p"}}'},
            {"where": ["where.plan: use one of eq, neq, gt, gte, lt, lte, in, contains, exists."]},
        ),
        (
            {"property": "plan", "where": '{"plan": "pro"}'},
            {"where": ["Give one property condition or JSON, not both."]},
        ),
        (
            {"move_to": "not-a-stage"},
            {
                "move_to": [
                    "Select a valid choice. not-a-stage is not one of the available choices."
                ]
            },
        ),
    ],
)
def test_bad_rules_are_refused_with_a_reason(
    editor: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
    fields: dict[str, str],
    errors: dict[str, list[str]],
) -> None:
    data = {
        "event": "demo_booked",
        "property": "",
        "operator": "eq",
        "value": "",
        "where": "",
        "move_to": str(stage(aida, "desire").pk),
        **fields,
    }

    response = logged_in(editor).post(reverse("funnel-rules", args=[aida.pk]), data)

    assert response.status_code == 200
    assert response.context["form"].errors == errors
    assert StageRule.objects.count() == 0


def test_deleting_a_rule(
    editor: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    keep = services.rule_create(funnel=aida, when={"event": "a"}, move_to=stage(aida, "interest"))
    drop = services.rule_create(funnel=aida, when={"event": "b"}, move_to=stage(aida, "desire"))
    client = logged_in(editor)

    response = client.post(reverse("funnel-rule-delete", args=[aida.pk, drop.pk]))

    assert response["Location"] == reverse("funnel-rules", args=[aida.pk])
    assert list(StageRule.objects.values_list("pk", flat=True)) == [keep.pk]
    assert client.get(reverse("funnel-rule-delete", args=[aida.pk, keep.pk])).status_code == 405


def test_viewers_see_rules_but_cannot_change_them(
    viewer: Membership, aida: Funnel, logged_in: Callable[..., Client]
) -> None:
    rule = services.rule_create(
        funnel=aida, when={"event": "demo_booked"}, move_to=stage(aida, "desire")
    )
    client = logged_in(viewer)

    page = client.get(reverse("funnel-rules", args=[aida.pk]))
    create = client.post(
        reverse("funnel-rules", args=[aida.pk]),
        {"event": "x", "move_to": str(stage(aida, "desire").pk)},
    )
    delete = client.post(reverse("funnel-rule-delete", args=[aida.pk, rule.pk]))

    assert page.status_code == 200
    assert "When event <code>demo_booked</code>" in page.content.decode()
    assert 'data-testid="rule-form"' not in page.content.decode()
    assert (create.status_code, delete.status_code) == (403, 403)
    assert list(StageRule.objects.values_list("pk", flat=True)) == [rule.pk]


# --- isolation and escaping ------------------------------------------------------------------


def test_another_workspaces_member_gets_404_everywhere(
    workspace: Workspace,
    other_workspace: Workspace,
    aida: Funnel,
    member_of: Callable[..., Membership],
    logged_in: Callable[..., Client],
) -> None:
    # given a contact in the funnel and a rule, and an owner of another workspace
    contact = ContactFactory(workspace=workspace)
    put(aida, contact, "interest", T0)
    rule = services.rule_create(funnel=aida, when={"event": "x"}, move_to=stage(aida, "desire"))
    client = logged_in(member_of(other_workspace, Role.OWNER))
    desire = str(stage(aida, "desire").pk)

    # when / then
    assert client.get(reverse("funnel-board", args=[aida.pk])).status_code == 404
    assert client.get(reverse("funnel-board", args=[aida.pk]), **HTMX).status_code == 404
    assert (
        client.post(
            reverse("funnel-move", args=[aida.pk]), {"contact": str(contact.pk), "stage": desire}
        ).status_code
        == 404
    )
    assert client.get(reverse("funnel-stages", args=[aida.pk])).status_code == 404
    assert (
        client.post(
            reverse("funnel-stages", args=[aida.pk]),
            {"action": "rename", "stage": desire, "name": "X"},
        ).status_code
        == 404
    )
    assert client.get(reverse("funnel-rules", args=[aida.pk])).status_code == 404
    assert (
        client.post(
            reverse("funnel-rules", args=[aida.pk]), {"event": "y", "move_to": desire}
        ).status_code
        == 404
    )
    assert client.post(reverse("funnel-rule-delete", args=[aida.pk, rule.pk])).status_code == 404
    assert client.post(reverse("funnel-delete", args=[aida.pk])).status_code == 404
    assert client.get(reverse("funnel-list")).context["summaries"] == []

    # and nothing changed
    assert current_stage_key(aida, contact) == "interest"
    assert [s.name for s in Stage.objects.filter(funnel=aida).order_by("position")] == [
        "Attention",
        "Interest",
        "Desire",
        "Action",
    ]
    assert StageRule.objects.count() == 1
    assert StageTransition.objects.count() == 1


def test_moving_another_workspaces_contact_is_refused(
    workspace: Workspace,
    other_workspace: Workspace,
    editor: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
) -> None:
    stranger = ContactFactory(workspace=other_workspace, email="stranger@x.org")

    response = logged_in(editor).post(
        reverse("funnel-move", args=[aida.pk]),
        {"contact": str(stranger.pk), "stage": str(stage(aida, "desire").pk)},
        follow=True,
    )
    by_email = logged_in(editor).post(
        reverse("funnel-move", args=[aida.pk]),
        {"email": "stranger@x.org", "stage": str(stage(aida, "desire").pk)},
        follow=True,
    )

    for answer in (response, by_email):
        assert "No such contact in this workspace." in answer.content.decode()
    assert StageTransition.objects.count() == 0


def test_names_from_outside_are_escaped_on_board_stages_and_rules(
    workspace: Workspace, owner: Membership, logged_in: Callable[..., Client]
) -> None:
    # given a funnel, stage, contact and rule condition carrying markup
    funnel = services.funnel_create(
        workspace=workspace, name=SCRIPT, stages=[{"name": SCRIPT}], goal_event=""
    )
    contact = ContactFactory(workspace=workspace, first_name=SCRIPT, last_name="")
    only_stage = Stage.objects.get(funnel=funnel)
    services.contact_move(
        funnel=funnel, contact=contact, stage=only_stage, cause=TransitionCause.MANUAL
    )
    services.rule_create(
        funnel=funnel, when={"event": "x", "where": {SCRIPT: SCRIPT}}, move_to=only_stage
    )
    client = logged_in(owner)

    # when / then
    for name in ("funnel-board", "funnel-stages", "funnel-rules"):
        html = client.get(reverse(name, args=[funnel.pk])).content.decode()
        assert SCRIPT not in html, name
        assert ESCAPED_SCRIPT in html, name
    index = client.get(reverse("funnel-list")).content.decode()
    assert SCRIPT not in index
    assert ESCAPED_SCRIPT in index


# --- the contact page ------------------------------------------------------------------------


def test_the_contact_page_shows_the_timeline_and_current_stages(
    workspace: Workspace,
    editor: Membership,
    aida: Funnel,
    logged_in: Callable[..., Client],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given an event with a value and a hand move by the editor
    contact = ContactFactory(workspace=workspace, email="ada@x.org")
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        services.events_record(
            workspace=workspace,
            inputs=[
                EventInput(
                    name="purchase",
                    contact_id=contact.pk,
                    value=Decimal("49.90"),
                    currency="eur",
                    source="shopify",
                    properties={"items": 3, "note": SCRIPT},
                )
            ],
        )
    client = logged_in(editor)
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        client.post(
            reverse("funnel-move", args=[aida.pk]),
            {"contact": str(contact.pk), "stage": str(stage(aida, "desire").pk)},
        )

    # when
    with time_machine.travel(T0 + timedelta(hours=3), tick=False):
        response = client.get(reverse("contact-detail", args=[contact.pk]))

    # then the timeline lists both, newest first, with the details that matter
    assert [(item.kind, item.title) for item in response.context["timeline"]] == [
        ("stage_change", "Spring sale: (entered) → Desire"),
        ("event", "purchase"),
    ]
    html = response.content.decode()
    timeline = html[html.index('data-testid="timeline"') :]
    assert timeline.index("Spring sale: (entered) → Desire") < timeline.index(
        "<code>purchase</code>"
    )
    assert f"Moved by hand by {editor.user.email}" in timeline
    assert "<strong>49.90 EUR</strong>" in timeline
    assert "from shopify" in timeline
    # (PostgreSQL's jsonb keeps keys shortest first)
    assert f"note: {ESCAPED_SCRIPT} · items: 3" in timeline
    assert SCRIPT not in html
    # and the current stage
    current = html[
        html.index('data-testid="current-stages"') : html.index('data-testid="timeline"')
    ]
    assert "Spring sale: (entered) → Desire" in current
    assert "for 2\xa0hours" in current


def test_the_contact_page_names_no_one_outside_the_workspace(
    workspace: Workspace,
    other_workspace: Workspace,
    owner: Membership,
    aida: Funnel,
    member_of: Callable[..., Membership],
    logged_in: Callable[..., Client],
) -> None:
    # given a move whose cause names a user of another workspace
    outsider = member_of(other_workspace, Role.OWNER)
    contact = ContactFactory(workspace=workspace)
    services.contact_move(
        funnel=aida,
        contact=contact,
        stage=stage(aida, "interest"),
        cause=TransitionCause.MANUAL,
        cause_detail=f"user:{outsider.user.pk}",
    )

    html = logged_in(owner).get(reverse("contact-detail", args=[contact.pk])).content.decode()

    assert "Moved by hand" in html
    assert outsider.user.email not in html
