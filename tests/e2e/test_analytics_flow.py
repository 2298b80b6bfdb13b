"""End to end in headless Chromium: a viewer opens the funnel report from the funnel board,
chooses the period, and sees exactly the figures the REST API reports for it; then the
comparison, the sequence and broadcast reports (with an A/B test), the overview and the
dashboard, each looked at on a wide screen and a phone (screenshots in test-artifacts/)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.utils import translation

from analytics.charts import format_count, format_duration, format_money, format_rate
from analytics.queries.base import Money
from core.models import Role
from core.services import api_key_create
from tests.analytics.conftest import History, history  # noqa: F401 (the fixture)
from tests.analytics.test_broadcast_report import ab_broadcast
from tests.e2e.conftest import ARTIFACTS
from tests.factories import TEST_PASSWORD, MembershipFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
WIDE = {"width": 1280, "height": 860}


@pytest.fixture(autouse=True)
def _english() -> Iterator[None]:
    """The browser asks for English; the figures the test formats must be English, too."""
    translation.activate("en")
    yield
    translation.deactivate()


def shown(page: Any, row: str, field: str) -> str:
    """The figure a person sees in a table row (`row`: a CSS selector) for `field`."""
    return page.locator(f"{row} [data-field={field}]").first.inner_text().strip()


def tile(page: Any, key: str) -> str:
    return page.locator(f"[data-testid=tile-{key}] [data-testid=value]").inner_text().strip()


# Visible elements that reach past the right edge of the screen, outside the wide tables and
# the diagram (they scroll sideways in their card, by design).
TOO_WIDE = """() => Array.from(document.querySelectorAll('body *'))
    .filter(e => e.checkVisibility()
        && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
        && !e.closest('.card.flush, .diagram-scroll, .table-scroll'))
    .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""


def look(page: Any, screenshot: Callable[[str], Path], name: str) -> None:
    """Screenshots at 1280 px and on a phone (and of each chart on the phone, to read its
    labels), and nothing on the page wider than the screen."""
    for size, suffix in ((WIDE, ""), (PHONE, "-phone")):
        page.set_viewport_size(size)
        screenshot(name + suffix)
        too_wide = page.evaluate(TOO_WIDE)
        assert too_wide == [], (name + suffix, too_wide)
    for number, chart in enumerate(page.locator("div.chart > svg, div.diagram-scroll > svg").all()):
        chart.screenshot(path=str(ARTIFACTS / f"analytics-{name}-phone-chart-{number}.png"))
    page.set_viewport_size(WIDE)


def test_the_funnel_report_shows_the_apis_figures(
    live_server: Any,
    page: Any,
    screenshot: Callable[[str], Path],
    history: History,  # noqa: F811 (the fixture)
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    # given a viewer of the workspace with the known history, and an API key of it
    viewer = MembershipFactory(
        workspace=history.workspace, role=Role.VIEWER, user=UserFactory(email="viewer@acme.test")
    )
    _key, raw_key = api_key_create(workspace=history.workspace, name="bi", created_by=None)

    # when the viewer logs in, opens the funnel from the funnels list, then its report tab
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", viewer.user.email)
    page.fill("#id_password", TEST_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.click("nav >> text=Funnels")
    page.click("table >> text=AIDA")
    page.click(".funnel-tabs >> text=Report")
    page.wait_for_url(re.compile(rf"/funnels/{history.funnel.pk}/report/$"))
    # and chooses the three days of the history
    page.fill("input[name=from]", "2025-01-06")
    page.fill("input[name=to]", "2025-01-08")
    page.click("[data-testid=period-form] button[type=submit]")
    page.wait_for_url(re.compile(r"from=2025-01-06&to=2025-01-08"))

    # then every figure shown is the API's for the same period
    api = page.request.get(
        f"{live_server.url}/api/v1/funnels/{history.funnel.pk}/report/"
        "?from=2025-01-06&to=2025-01-08",
        headers={"Authorization": f"Bearer {raw_key}"},
    )
    assert api.status == 200
    body = api.json()
    assert [s["key"] for s in body["stages"]] == ["attention", "interest", "desire", "action"]
    for stage in body["stages"]:
        row = f"[data-testid=stage-table] tr[data-stage={stage['key']}]"
        for field in ("entered", "current", "advanced", "converted", "drop_off"):
            assert shown(page, row, field) == format_count(stage[field]), (row, field)
        for field in ("advance_rate", "conversion_rate", "drop_off_rate"):
            assert shown(page, row, field) == format_rate(stage[field]), (row, field)
        assert shown(page, row, "median_time_in_stage") == format_duration(
            stage["median_time_in_stage_seconds"]
        )
        mail_row = f"[data-testid=stage-mail-table] tr[data-stage={stage['key']}]"
        assert shown(page, mail_row, "sent") == format_count(stage["sent"])
        assert shown(page, mail_row, "delivered") == format_count(stage["delivered"])
        for field in ("delivery_rate", "open_rate", "click_rate", "unsubscribe_rate"):
            assert shown(page, mail_row, field) == format_rate(stage[field]), (mail_row, field)
    goal = body["goal"]
    assert tile(page, "conversions") == format_count(goal["conversions"])
    assert tile(page, "goal_conversion_rate") == format_rate(goal["conversion_rate"])
    assert tile(page, "revenue") == format_money(
        Money(value=Decimal(goal["revenue"]["value"]), currency=goal["revenue"]["currency"])
    )
    assert tile(page, "contacts") == format_count(goal["contacts"])
    # the chart draws the same entries and flags the stage the API flags
    bars = page.eval_on_selector_all(
        "svg.funnel-chart g.funnel-stage",
        "gs => gs.map(g => [g.dataset.stage, g.dataset.entered, "
        "g.classList.contains('loses-most')])",
    )
    worst = body["loses_most"]
    assert bars == [[s["key"], str(s["entered"]), s["id"] == worst] for s in body["stages"]]
    assert page.locator("[data-testid=loses-most]").inner_text() == (
        f"{next(s['name'] for s in body['stages'] if s['id'] == worst)} loses the most people."
    )
    look(page, screenshot, "funnel-report")

    # when the period is compared with the one before
    page.check("input[name=compare]")
    page.click("[data-testid=period-form] button[type=submit]")
    page.wait_for_url(re.compile(r"compare=on"))

    # then the previous figures are next to the current ones, as the API's previous
    previous = page.request.get(
        f"{live_server.url}/api/v1/funnels/{history.funnel.pk}/report/"
        "?from=2025-01-06&to=2025-01-08&compare=true",
        headers={"Authorization": f"Bearer {raw_key}"},
    ).json()["previous"]
    assert (previous["from"], previous["to"]) == ("2025-01-03", "2025-01-05")
    entered_before = page.eval_on_selector_all(
        "[data-testid=stage-table] tbody tr",
        "rows => rows.map(r => r.querySelector('.prev').textContent)",
    )
    assert entered_before == [format_count(s["entered"]) for s in previous["stages"]]
    look(page, screenshot, "funnel-report-compared")

    # and the sequence report, reached from the sequence's tabs
    page.goto(f"{live_server.url}/sequences/{history.sequence.pk}/")
    page.click(".sequence-tabs >> text=Report")
    page.fill("input[name=from]", "2025-01-06")
    page.fill("input[name=to]", "2025-01-08")
    page.click("[data-testid=period-form] button[type=submit]")
    page.wait_for_url(re.compile(r"from=2025-01-06"))
    sequence = page.request.get(
        f"{live_server.url}/api/v1/sequences/{history.sequence.pk}/report/"
        "?from=2025-01-06&to=2025-01-08",
        headers={"Authorization": f"Bearer {raw_key}"},
    ).json()
    for step in sequence["steps"]:
        row = f"[data-testid=step-rates] tr[data-step={step['step']}]"
        assert shown(page, row, "open_rate") == format_rate(step["open_rate"])
    look(page, screenshot, "sequence-report")

    # and the overview of the workspace with a weekly series
    page.click("nav >> text=Reports")
    page.fill("input[name=from]", "2025-01-06")
    page.fill("input[name=to]", "2025-01-08")
    page.check("input[name=compare]")
    page.click("[data-testid=period-form] button[type=submit]")
    page.wait_for_url(re.compile(r"from=2025-01-06"))
    assert tile(page, "sent") == format_count(sequence["totals"]["sent"])
    look(page, screenshot, "overview")

    # and a broadcast with a decided A/B test
    broadcast = ab_broadcast(history.workspace, django_capture_on_commit_callbacks, {0: 2, 1: 8})
    page.goto(f"{live_server.url}/sequences/broadcasts/{broadcast.pk}/")
    page.click("[data-testid=report-link]")
    page.wait_for_url(re.compile(rf"/sequences/broadcasts/{broadcast.pk}/report/$"))
    ab = page.request.get(
        f"{live_server.url}/api/v1/broadcasts/{broadcast.pk}/report/",
        headers={"Authorization": f"Bearer {raw_key}"},
    ).json()["ab_test"]
    rates = page.eval_on_selector_all(
        "[data-testid=ab-test] tbody tr",
        "rows => rows.map(r => r.querySelector('[data-field=rate]').textContent)",
    )
    assert rates == [format_rate(variant["rate"]) for variant in ab["variants"]]
    assert "beyond chance" in page.locator("[data-testid=ab-note]").inner_text()
    look(page, screenshot, "broadcast-report")

    # and the dashboard on the day after the history: its last 30 days hold all of it
    with time_machine.travel("2025-01-09T12:00:00Z", tick=True):
        page.goto(f"{live_server.url}/")
        assert tile(page, "sent") == format_count(sequence["totals"]["sent"])
        look(page, screenshot, "dashboard")
