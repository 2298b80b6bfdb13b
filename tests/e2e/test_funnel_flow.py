"""End to end in headless Chromium: create an AIDA funnel and a rule on the pages, feed events
and a move through the REST API, watch the board, move contacts back by hand (menu and
drag-and-drop), and find the moves on the contact's timeline."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contacts.models import Contact
from core.models import Role
from core.services import api_key_create
from funnel.models import ContactStage, Funnel, StageRule, StageTransition
from tests.factories import TEST_PASSWORD, MembershipFactory, UserFactory, WorkspaceFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def column(page: Any, name: str) -> Any:
    return page.locator(".stage-column").filter(
        has=page.locator("h2", has_text=re.compile(f"^{name}$"))
    )


def board_state(page: Any) -> list[tuple[str, str, list[str]]]:
    """(stage, count, card names) for every column, as the browser shows them."""
    columns = page.eval_on_selector_all(
        ".stage-column",
        """columns => columns.map(c => [
            c.querySelector('h2').textContent.trim(),
            c.querySelector('[data-testid=count]').textContent.trim(),
            Array.from(c.querySelectorAll('.contact-name')).map(a => a.textContent.trim()),
        ])""",
    )
    return [(name, count, cards) for name, count, cards in columns]


def stage_of(funnel: Funnel, contact: Contact) -> str:
    return (
        ContactStage.objects.select_related("stage").get(funnel=funnel, contact=contact).stage.name
    )


def test_aida_funnel_events_board_and_timeline(
    live_server: Any, page: Any, screenshot: Callable[[str], Path]
) -> None:
    # given an owner, a known contact and another one the API will put into Attention
    workspace = WorkspaceFactory(name="Acme Shop")
    owner = MembershipFactory(
        workspace=workspace, role=Role.OWNER, user=UserFactory(email="owner@acme.test")
    )
    grace = Contact.objects.create(
        workspace=workspace, email="grace@example.org", first_name="Grace", last_name="Hopper"
    )
    alan = Contact.objects.create(
        workspace=workspace, email="alan@example.org", first_name="Alan", last_name="Turing"
    )
    _key, raw_key = api_key_create(workspace=workspace, name="shop", created_by=None)
    api_headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}

    # when the owner logs in and creates an AIDA funnel with the goal "purchase"
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", owner.user.email)
    page.fill("#id_password", TEST_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.click("nav >> text=Funnels")
    page.click("text=New funnel")
    page.fill("#id_name", "Spring sale")
    page.check("input[name=preset][value=aida]")
    page.fill("#id_goal_event", "purchase")
    screenshot("funnel-form")
    page.click("button:has-text('Create funnel')")
    page.wait_for_url(re.compile(r"/funnels/[0-9a-f-]{36}/$"))
    funnel = Funnel.objects.get(workspace=workspace)
    assert (funnel.name, funnel.preset, funnel.goal_event) == ("Spring sale", "aida", "purchase")
    assert board_state(page) == [
        ("Attention", "0", []),
        ("Interest", "0", []),
        ("Desire", "0", []),
        ("Action", "0", []),
    ]

    # and adds the rule "demo_booked -> Desire" on the rules page
    page.click(".funnel-tabs >> text=Rules")
    page.fill("#id_event", "demo_booked")
    page.select_option("#id_move_to", label="Desire")
    page.click("button:has-text('Add rule')")
    page.locator("[data-testid=rule]").wait_for()
    assert page.locator("[data-testid=rule]").inner_text() == (
        "When event demo_booked → move to Desire\nDelete"
    )
    screenshot("rules")
    rule = StageRule.objects.get(funnel=funnel)
    assert (rule.when, rule.move_to.name) == ({"event": "demo_booked", "where": {}}, "Desire")

    # and a shop posts two demo_booked events (a new address, a known contact) and the API
    # moves Alan into Attention
    api = f"{live_server.url}/api/v1"
    new_lead = page.request.post(
        f"{api}/events/",
        headers=api_headers,
        data={"contact": "New.Lead@Example.org", "name": "demo_booked", "source": "calendly"},
    )
    known = page.request.post(
        f"{api}/events/",
        headers=api_headers,
        data={
            "contact": str(grace.pk),
            "name": "demo_booked",
            "source": "calendly",
            "value": "120.00",
            "currency": "EUR",
            "external_id": "cal-1",
        },
    )
    attention = funnel.stages.get(key="attention")
    moved = page.request.post(
        f"{api}/funnels/{funnel.pk}/contacts/{alan.pk}/move/",
        headers=api_headers,
        data={"stage": str(attention.pk), "reason": "webinar"},
    )
    assert (new_lead.status, known.status, moved.status) == (201, 201, 200)
    assert moved.json()["moved"] is True
    lead = Contact.objects.get(workspace=workspace, email="new.lead@example.org")

    # then the board shows them where the rule and the API put them
    page.click(".funnel-tabs >> text=Board")
    page.wait_for_url(re.compile(r"/funnels/[0-9a-f-]{36}/$"))
    assert board_state(page) == [
        ("Attention", "1", ["Alan Turing"]),
        ("Interest", "0", []),
        ("Desire", "2", ["Grace Hopper", "new.lead@example.org"]),  # newest entered first
        ("Action", "0", []),
    ]
    screenshot("board")
    page.click("summary:has-text('Put a contact in a stage')")
    screenshot("board-add-contact")
    page.click("summary:has-text('Put a contact in a stage')")

    # when the owner moves Grace back to Interest with her card's menu
    card = column(page, "Desire").locator("[data-testid=card]", has_text="Grace Hopper")
    card.locator("summary").click()
    card.locator("select[name=stage]").select_option(label="Interest")
    screenshot("board-menu")
    card.locator("button:has-text('Move')").click()
    page.locator(".message.success", has_text="grace@example.org moved to Interest.").wait_for()

    # then
    assert board_state(page) == [
        ("Attention", "1", ["Alan Turing"]),
        ("Interest", "1", ["Grace Hopper"]),
        ("Desire", "1", ["new.lead@example.org"]),
        ("Action", "0", []),
    ]
    assert stage_of(funnel, grace) == "Interest"

    # when the new lead is dragged back to Attention
    page.drag_and_drop(
        ".stage-column[data-testid=column-desire] [data-testid=card]",
        ".stage-column[data-testid=column-attention] .stage-cards",
    )
    page.wait_for_function(
        "document.querySelector('[data-testid=column-attention] [data-testid=count]')"
        ".textContent.trim() === '2'"
    )

    # then the board fragment came back with the new counts, without a page load
    assert board_state(page)[2] == ("Desire", "0", [])
    assert [name for name, count, _cards in board_state(page)] == [
        "Attention",
        "Interest",
        "Desire",
        "Action",
    ]
    assert [count for _name, count, _cards in board_state(page)] == ["2", "1", "0", "0"]
    assert sorted(board_state(page)[0][2]) == ["Alan Turing", "new.lead@example.org"]
    assert page.locator(".message.success").count() == 1  # still the menu's message: no reload
    screenshot("board-after-moves")
    assert stage_of(funnel, lead) == "Attention"
    user_detail = f"user:{owner.user.pk}"
    assert [
        (t.contact_id, t.from_stage.name if t.from_stage else None, t.to_stage.name, t.cause)
        for t in StageTransition.objects.filter(funnel=funnel)
        .select_related("from_stage", "to_stage")
        .order_by("occurred_at")
        if t.cause == "manual" and t.cause_detail == user_detail
    ] == [(grace.pk, "Desire", "Interest", "manual"), (lead.pk, "Desire", "Attention", "manual")]

    # and Grace's page shows the hand move and the event on her timeline
    page.click("[data-testid=column-interest] >> text=Grace Hopper")
    page.wait_for_url(f"{live_server.url}/contacts/{grace.pk}/")
    rows = page.eval_on_selector_all(
        "[data-testid=timeline] tbody tr",
        """rows => rows.map(r => Array.from(r.cells).slice(1).map(
            c => c.textContent.replace(/\\s+/g, ' ').trim()))""",
    )
    assert rows[0] == [
        "Stage",
        "Spring sale: Desire → Interest",
        "Moved by hand by owner@acme.test",
    ]
    # the event and the move it caused share one time, so either may be listed first
    assert sorted(rows[1:]) == [
        ["Event", "demo_booked", "120.00 EUR from calendly"],
        ["Stage", "Spring sale: (entered) → Desire", "Stage rule"],
    ]
    assert (
        page.locator("[data-testid=current-stages]")
        .inner_text()
        .startswith("Funnel stages\nSpring sale: Desire → Interest")
    )
    screenshot("timeline")

    # and the index and the stage editor show the counts
    page.click("nav >> text=Funnels")
    assert " ".join(page.locator("[data-testid=funnel-table] tbody tr").inner_text().split()) == (
        "Spring sale AIDA: attention, interest, desire, action "
        "Attention 2 Interest 1 Desire 0 Action 0 purchase 3"
    )
    screenshot("index")
    page.click("text=Spring sale")
    page.click(".funnel-tabs >> text=Stages and settings")
    assert page.locator("[data-testid=stage-row] .chip-count").all_inner_texts() == [
        "2",
        "1",
        "0",
        "0",
    ]
    screenshot("stages")
