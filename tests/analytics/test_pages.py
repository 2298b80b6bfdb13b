"""The analytics pages: they show the figures of the report query classes (the API's) for the
known history of conftest.py, check the role and the workspace, validate the period like the
API, escape names in the SVG charts, and offer the same CSV as the API's export."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import translation
from rest_framework.test import APIClient

from analytics.charts import format_count, format_duration, format_rate
from analytics.models import DirtyKey
from analytics.rollups import messages_mark_dirty
from campaigns.models import Broadcast, Message
from core.models import Membership, Role, Workspace
from funnel.models import Stage
from funnel.services import funnel_create
from tests.analytics.conftest import History
from tests.analytics.test_anonymous import (  # the anonymous history, and its fixture
    DAY0,
    DAY1,
    Anonymous,
    activity,
    anonymous,  # noqa: F401
)
from tracking.ingest import hits_write

pytestmark = pytest.mark.django_db

PERIOD = "from=2025-01-06&to=2025-01-08"
SVG = "{http://www.w3.org/2000/svg}"


def cell(html: str, row_attribute: str, field: str) -> str:
    """The text of the element data-field=`field` in the first table row with
    `row_attribute` (e.g. 'data-stage="attention"'), as the page shows it."""
    row = re.search(rf"<tr [^>]*{re.escape(row_attribute)}[^>]*>(.*?)</tr>", html, re.S)
    assert row is not None, row_attribute
    value = re.search(rf'data-field="{field}"[^>]*>([^<]*)<', row.group(1))
    assert value is not None, (row_attribute, field)
    return value.group(1).strip()


def svg_of(html: str, css: str) -> ET.Element:
    """The chart's <svg class="chart `css`"> element, parsed (so it is well-formed)."""
    match = re.search(rf'<svg [^>]*class="chart {css}".*?</svg>(?=\s*</div>)', html, re.S)
    assert match is not None, css
    return ET.fromstring(match.group(0))  # noqa: S314 (our own output)


@pytest.fixture
def viewer(history: History, member_of: Callable[..., Membership], logged_in: Any) -> Client:
    return logged_in(member_of(history.workspace, Role.VIEWER))


def test_the_funnel_page_shows_the_api_figures_for_every_stage(
    history: History, viewer: Client, api: APIClient
) -> None:
    # given the API's report of the period
    body = api.get(f"/api/v1/funnels/{history.funnel.pk}/report/?{PERIOD}").json()

    # when a viewer opens the funnel's report page for the same period
    response = viewer.get(f"/funnels/{history.funnel.pk}/report/?{PERIOD}")

    # then every stage row shows the API's figures, formatted as people read them
    assert response.status_code == 200
    html = response.content.decode()
    for stage in body["stages"]:
        row = f'data-stage="{stage["key"]}"'
        for field in ("entered", "current", "advanced", "converted", "drop_off"):
            assert cell(html, row, field) == format_count(stage[field]), (stage["key"], field)
        for field in ("advance_rate", "conversion_rate", "drop_off_rate"):
            assert cell(html, row, field) == format_rate(stage[field]), (stage["key"], field)
        assert cell(html, row, "median_time_in_stage") == format_duration(
            stage["median_time_in_stage_seconds"]
        )
    # the mails of each stage (second table), e.g. attention's welcome mail: 4 of 5 delivered
    mail_table = html[html.index('data-testid="stage-mail-table"') :]
    for stage in body["stages"]:
        row = f'data-stage="{stage["key"]}"'
        assert cell(mail_table, row, "sent") == format_count(stage["sent"])
        for field in ("delivery_rate", "open_rate", "click_rate", "unsubscribe_rate"):
            assert cell(mail_table, row, field) == format_rate(stage[field])
    assert cell(mail_table, 'data-stage="attention"', "delivery_rate") == "80.0%"
    # the goal tiles and the stage that loses the most people
    goal = body["goal"]
    assert _tile(html, "conversions") == format_count(goal["conversions"]) == "2"
    assert _tile(html, "goal_conversion_rate") == format_rate(goal["conversion_rate"]) == "50.0%"
    assert _tile(html, "revenue") == "150.00 EUR"
    assert "Attention loses the most people." in html
    # and the period the page shows is the one asked for
    assert 'value="2025-01-06"' in html and 'value="2025-01-08"' in html


def _tile(html: str, key: str) -> str:
    match = re.search(rf'data-testid="tile-{key}".*?data-testid="value">([^<]*)</span>', html, re.S)
    assert match is not None, key
    return match.group(1).strip()


def test_the_funnel_chart_draws_the_report(history: History, viewer: Client) -> None:
    # when
    html = viewer.get(f"/funnels/{history.funnel.pk}/report/?{PERIOD}").content.decode()

    # then one bar per stage with its entries, the worst stage marked, and the rates between
    chart = svg_of(html, "funnel-chart")
    assert chart.get("role") == "img"
    assert chart.find(f"{SVG}title").text == "Funnel AIDA"
    stages = [g for g in chart.iter(f"{SVG}g") if "funnel-stage" in g.get("class", "")]
    assert [(g.get("data-stage"), g.get("data-entered")) for g in stages] == [
        ("attention", "5"),
        ("interest", "2"),
        ("desire", "1"),
        ("action", "0"),
    ]
    assert [g.get("data-stage") for g in stages if "loses-most" in g.get("class", "")] == [
        "attention"
    ]
    # bars narrow with the entries: 5 -> 100 % of the width, 2 -> 40 %, 1 -> 20 %
    widths = [g.find(f"{SVG}rect[@class='bar']").get("width") for g in stages]
    assert widths[:3] == ["100.000%", "40.000%", "20.000%"]
    rates = [t.text for t in chart.iter(f"{SVG}text") if t.get("class") == "stage-rate"]
    assert rates == ["↓ 40.0% moved on", "↓ 50.0% moved on", "↓ 0.0% moved on"]


def test_comparing_shows_the_previous_period(history: History, viewer: Client) -> None:
    # when day 1 is compared with day 0
    html = viewer.get(
        f"/funnels/{history.funnel.pk}/report/?from=2025-01-07&to=2025-01-07&compare=on"
    ).content.decode()

    # then the stays of day 1, and day 0's next to them, in the table and as dashed bars
    assert cell(html, 'data-stage="attention"', "entered") == "1"
    row = re.search(r'<tr data-stage="attention"[^>]*>(.*?)</tr>', html, re.S).group(1)
    assert re.search(r'data-field="entered">1</span><span class="prev">4</span>', row)
    chart = svg_of(html, "funnel-chart")
    # (day 0: four stays began in attention, one in interest; none in desire or action)
    outlined = {
        g.get("data-stage"): [r.get("width") for r in g if r.get("class") == "previous-bar"]
        for g in chart.iter(f"{SVG}g")
        if "funnel-stage" in g.get("class", "")
    }
    assert outlined == {
        "attention": ["100.000%"],
        "interest": ["25.000%"],
        "desire": [],
        "action": [],
    }
    assert "compared with" in html
    # the rates: no mail went out on day 1, day 0's welcome mail is the dashed previous
    series = svg_of(html, "rate-chart")
    assert "No mail was sent in this period." in series.find(f"{SVG}desc").text
    # (one day each: no line to draw, a hollow marker per rate)
    assert list(series.iter(f"{SVG}polyline")) == []
    markers = [
        (c.get("class"), c.get("data-rate"), c.get("data-day"), c.get("data-value"))
        for c in series.iter(f"{SVG}circle")
    ]
    assert markers == [
        ("marker previous", "open_rate", "2025-01-06", "0.500000"),
        ("marker previous", "click_rate", "2025-01-06", "0.250000"),
        ("marker previous", "bounce_rate", "2025-01-06", "0.200000"),
    ]


def test_the_sequence_page_shows_every_step_and_annotates_the_diagram(
    history: History, viewer: Client, api: APIClient
) -> None:
    body = api.get(f"/api/v1/sequences/{history.sequence.pk}/report/?{PERIOD}").json()

    html = viewer.get(f"/sequences/{history.sequence.pk}/report/?{PERIOD}").content.decode()

    counts = html[html.index('data-testid="step-counts"') :]
    rates = html[html.index('data-testid="step-rates"') :]
    for step in body["steps"]:
        row = f'data-step="{step["step"]}"'
        for field, api_field in (
            ("sent", "sent"),
            ("delivered", "delivered"),
            ("opened", "opened"),
            ("clicked", "clicked"),
            ("machine_opened", "machine_opens"),
            ("bot_clicked", "bot_clicks"),
            ("unsubscribed", "unsubscribed"),
            ("complained", "complained"),
            ("converted", "converted"),
        ):
            assert cell(counts, row, field) == format_count(step[api_field]), field
        for field in ("delivery_rate", "open_rate", "click_rate", "bounce_rate"):
            assert cell(rates, row, field) == format_rate(step[field]), field
    assert cell(counts, 'data-step="total"', "sent") == format_count(body["totals"]["sent"])
    assert cell(rates, 'data-step="total"', "open_rate") == format_rate(body["totals"]["open_rate"])
    # the diagram's welcome box carries its rates: 5 sent, 80 % delivered, 50 % opened
    diagram = re.search(
        r'<svg xmlns="http://www.w3.org/2000/svg" class="sequence-diagram".*?</svg>', html, re.S
    )
    root = ET.fromstring(diagram.group(0))  # noqa: S314 (our own output)
    keys = [g.get("data-key") for g in root.iter(f"{SVG}g") if "step" in g.get("class", "").split()]
    assert keys == ["welcome", "pause", "offer"]
    welcome = next(g for g in root.iter(f"{SVG}g") if g.get("data-key") == "welcome")
    annotation = next(g for g in welcome.iter(f"{SVG}g") if g.get("class") == "step-annotation")
    assert [t.text for t in annotation.iter(f"{SVG}text")] == [
        "5 sent · 80.0% delivered",
        "50.0% opened · 25.0% clicked",
    ]
    # the wait step is drawn, without rates
    pause = next(g for g in root.iter(f"{SVG}g") if g.get("data-key") == "pause")
    assert not [g for g in pause.iter(f"{SVG}g") if g.get("class") == "step-annotation"]


def test_pages_need_a_member_and_another_workspaces_objects_are_not_found(
    history: History,
    other_workspace: Workspace,
    member_of: Callable[..., Membership],
    logged_in: Any,
    client: Client,
) -> None:
    urls = [
        f"/funnels/{history.funnel.pk}/report/",
        f"/funnels/{history.funnel.pk}/report/export/",
        f"/sequences/{history.sequence.pk}/report/",
        f"/sequences/{history.sequence.pk}/report/export/",
    ]
    # anonymous: to the login page, nothing shown
    for url in [*urls, "/reports/"]:
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/login/"), url

    # a member of another workspace: 404 for this workspace's funnel and sequence
    outsider = logged_in(member_of(other_workspace, Role.OWNER))
    for url in urls:
        assert outsider.get(url).status_code == 404, url
    assert outsider.get("/reports/").status_code == 200
    assert "AIDA" not in outsider.get("/reports/").content.decode()


def test_a_bad_period_is_refused_with_the_api_message(history: History, viewer: Client) -> None:
    response = viewer.get(f"/funnels/{history.funnel.pk}/report/?from=2025-01-08&to=2025-01-06")

    assert response.status_code == 400
    html = response.content.decode()
    assert "The end must not be before the start." in html
    assert 'data-testid="stage-table"' not in html
    csv_response = viewer.get(
        f"/funnels/{history.funnel.pk}/report/export/?from=2025-13-01&to=2025-01-06"
    )
    assert csv_response.status_code == 400
    assert csv_response.content.decode() == "Enter a date as YYYY-MM-DD."


def test_the_csv_download_is_the_apis_export(
    history: History, viewer: Client, api: APIClient
) -> None:
    html = viewer.get(f"/funnels/{history.funnel.pk}/report/?{PERIOD}&compare=on").content.decode()
    link = re.search(r'href="([^"]+)" download data-testid="csv-link"', html).group(1)
    assert link == (
        f"/funnels/{history.funnel.pk}/report/export/"
        "?from=2025-01-06&amp;to=2025-01-08&amp;compare=true"
    )

    page_csv = viewer.get(link.replace("&amp;", "&"))
    api_csv = api.get(f"/api/v1/funnels/{history.funnel.pk}/report/export/?{PERIOD}&compare=true")

    assert page_csv["Content-Type"] == "text/csv; charset=utf-8"
    page_rows = list(csv.reader(io.StringIO(b"".join(page_csv.streaming_content).decode())))
    api_rows = list(csv.reader(io.StringIO(b"".join(api_csv.streaming_content).decode())))
    assert page_rows == api_rows
    assert len(page_rows) > 8


def test_names_from_outside_are_escaped_in_the_charts_and_the_page(
    workspace: Workspace, member_of: Callable[..., Membership], logged_in: Any
) -> None:
    # given a funnel and a stage whose names are markup
    funnel = funnel_create(
        workspace=workspace, name='<script>alert("f")</script>', preset="aida", goal_event=""
    )
    Stage.objects.filter(funnel=funnel, key="attention").update(name="<script>x</script>")
    client = logged_in(member_of(workspace, Role.VIEWER))

    # when
    html = client.get(f"/funnels/{funnel.pk}/report/").content.decode()

    # then no markup of theirs got through, and the chart is still well-formed SVG
    assert "<script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    chart = svg_of(html, "funnel-chart")
    assert chart.find(f"{SVG}title").text == 'Funnel <script>alert("f")</script>'
    names = [t.text for t in chart.iter(f"{SVG}text") if t.get("class") == "stage-name"]
    assert names[0] == "<script>x</script>"


def test_the_dashboard_shows_the_headline_figures_and_links_the_reports(
    history: History, viewer: Client, api: APIClient, time_machine: Any
) -> None:
    # given "today" is the day after the offer, so the last 30 days hold the whole history
    time_machine.move_to("2025-01-09T12:00:00Z", tick=False)
    body = api.get(f"/api/v1/sequences/{history.sequence.pk}/report/?from=2024-12-11&to=2025-01-09")

    html = viewer.get("/").content.decode()

    totals = body.json()["totals"]
    assert _tile(html, "sent") == format_count(totals["sent"]) == "7"
    assert _tile(html, "open_rate") == format_rate(totals["open_rate"])
    assert _tile(html, "click_rate") == format_rate(totals["click_rate"])
    assert f'href="/funnels/{history.funnel.pk}/report/"' in html
    assert f'href="/sequences/{history.sequence.pk}/report/"' in html
    assert 'href="/reports/"' in html
    svg_of(html, "rate-chart")


def test_the_overview_shows_kpis_time_series_and_attribution(
    history: History, viewer: Client
) -> None:
    html = viewer.get(f"/reports/?{PERIOD}&rates=open_rate&rates=click_rate").content.decode()

    # the mails of the whole workspace: 7 sent, 6 delivered, 2 opened
    assert _tile(html, "sent") == "7"
    assert _tile(html, "open_rate") == format_rate(2 / 6)
    # engagement: ada and bo opened, of the four people whose mail was delivered
    assert _tile(html, "engagement_rate") == "50.0%"
    # the series: a marker per day with a defined rate of the chosen ones; day 1 sent
    # nothing, so the two days are not joined by a line
    chart = svg_of(html, "rate-chart")
    assert list(chart.iter(f"{SVG}polyline")) == []
    markers = [
        (c.get("data-rate"), c.get("data-day"), c.get("data-value"))
        for c in chart.iter(f"{SVG}circle")
    ]
    # day 0: the welcome mail (2 of 4 opened, 1 clicked); day 2: the offer (none of 2)
    assert markers == [
        ("open_rate", "2025-01-06", "0.500000"),
        ("open_rate", "2025-01-08", "0.000000"),
        ("click_rate", "2025-01-06", "0.250000"),
        ("click_rate", "2025-01-08", "0.000000"),
    ]
    # attribution: ada's purchase came a day after her click on the welcome mail
    attribution = html[html.index('data-testid="attribution"') :]
    assert ">Welcome · welcome<" in attribution
    assert "1 of 2 conversions followed a human click within 5 days." in attribution


def test_the_broadcast_page_without_ab_test_and_isolation(
    workspace: Workspace,
    other_workspace: Workspace,
    member_of: Callable[..., Membership],
    logged_in: Any,
) -> None:
    broadcast = Broadcast.objects.create(workspace=workspace, name="<b>June</b>", subject="Hi")
    viewer = logged_in(member_of(workspace, Role.VIEWER))

    html = viewer.get(f"/sequences/broadcasts/{broadcast.pk}/report/").content.decode()

    assert "&lt;b&gt;June&lt;/b&gt;" in html and "<b>June</b>" not in html
    assert 'data-testid="ab-test"' not in html
    assert cell(html, 'data-variant="0"', "sent") == "0"
    outsider = logged_in(member_of(other_workspace, Role.OWNER))
    assert outsider.get(f"/sequences/broadcasts/{broadcast.pk}/report/").status_code == 404


def test_numbers_follow_the_language(history: History, viewer: Client) -> None:
    # when a German reader opens the page
    try:
        html = viewer.get(
            f"/funnels/{history.funnel.pk}/report/?{PERIOD}", HTTP_ACCEPT_LANGUAGE="de"
        ).content.decode()
    finally:
        # the locale middleware leaves the language of the request active in this thread
        translation.deactivate()

    # then rates have a decimal comma (1/5 of the stays in attention converted)
    with translation.override("de"):
        expected = format_rate(1 / 5)
    assert expected.startswith("20,0")
    assert cell(html, 'data-stage="attention"', "conversion_rate") == expected


def test_the_funnel_page_shows_the_conversion_paths_of_the_api(
    history: History, viewer: Client, api: APIClient
) -> None:
    body = api.get(f"/api/v1/analytics/paths/?{PERIOD}&funnel={history.funnel.pk}").json()

    html = viewer.get(f"/funnels/{history.funnel.pk}/report/?{PERIOD}").content.decode()

    def shown(testid: str) -> list[tuple[list[str], list[str]]]:
        table = html[html.index(f'data-testid="{testid}"') :]
        table = table[: table.index("</table>")]
        rows = re.findall(r'<tr><td><ol class="path-steps">(.*?)</ol>\s*</td>(.*?)</tr>', table)
        return [
            (
                [
                    f"{kind}:{name.strip()}"
                    for kind, name in re.findall(
                        r'touchpoint-(\w+)"><span class="touchpoint-kind">[^<]*</span>([^<]*)<',
                        steps,
                    )
                ],
                re.findall(r'<td class="num">([^<]*)</td>', cells),
            )
            for steps, cells in rows
        ]

    assert shown("converting-paths") == [
        (
            path["steps"],
            [
                format_count(path["journeys"]),
                format_count(path["conversions"]),
                format_rate(path["conversion_rate"]),
            ],
        )
        for path in body["converting"]
    ]
    assert shown("non-converting-paths") == [
        (
            path["steps"],
            [
                format_count(path["journeys"]),
                format_count(path["without_conversion"]),
                format_rate(path["conversion_rate"]),
            ],
        )
        for path in body["non_converting"]
    ]
    # ada's path, as a person reads it
    assert shown("converting-paths")[1][0] == [
        "stage:Attention",
        "mail:Welcome / welcome",
        "stage:Interest",
        "stage:Desire",
    ]


@pytest.mark.parametrize(
    ("section", "scope"),
    [
        ("timeseries", "funnel"),
        ("attribution", "funnel"),
        ("paths", "funnel"),
        ("kpis", "sequence"),
        ("timeseries", "sequence"),
    ],
)
def test_the_csv_of_each_section_is_the_apis_export(
    history: History, viewer: Client, api: APIClient, section: str, scope: str
) -> None:
    # given the section's CSV link as its page shows it
    page = (
        f"/funnels/{history.funnel.pk}/report/"
        if scope == "funnel"
        else (f"/sequences/{history.sequence.pk}/report/")
    )
    html = viewer.get(f"{page}?{PERIOD}").content.decode()
    testid = {"timeseries": "series-csv"}.get(section, f"{section}-csv")
    link = re.search(rf'href="([^"]+)" download data-testid="{testid}"', html).group(1)
    link = link.replace("&amp;", "&")
    owner = history.funnel.pk if scope == "funnel" else history.sequence.pk
    assert link.startswith(f"/reports/export/{section}/?from=2025-01-06&to=2025-01-08&")
    assert f"{scope}={owner}" in link

    # when it is downloaded, and the API's export asked for the same
    page_csv = viewer.get(link)
    query = link.split("?", 1)[1]
    api_csv = api.get(f"/api/v1/analytics/{section}/export/?{query}")

    # then they are the same rows
    assert page_csv.status_code == 200 and api_csv.status_code == 200
    page_rows = b"".join(page_csv.streaming_content).decode()
    assert page_rows == b"".join(api_csv.streaming_content).decode()
    assert len(page_rows.splitlines()) >= 3


def test_the_section_csv_checks_the_workspace_and_its_parameters(
    history: History,
    viewer: Client,
    other_workspace: Workspace,
    member_of: Callable[..., Membership],
    logged_in: Any,
) -> None:
    outsider = logged_in(member_of(other_workspace, Role.OWNER))
    for section in ("timeseries", "attribution", "paths"):
        url = f"/reports/export/{section}/?funnel={history.funnel.pk}"
        assert outsider.get(url).status_code == 404, section
    assert viewer.get("/reports/export/contacts/").status_code == 404
    assert viewer.get("/reports/export/paths/").status_code == 404  # paths need a funnel
    assert viewer.get("/reports/export/kpis/?sequence=not-an-id").status_code == 404
    refused = viewer.get(f"/reports/export/attribution/?funnel={history.funnel.pk}&model=best")
    assert refused.status_code == 400


# --- anonymous tracking: the pages and the CSV show the API's values

ANONYMOUS_PERIOD = f"from={DAY0}&to={DAY1}"
COUNT_FIELDS = {
    "sent": "sent",
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "machine_opened": "machine_opens",
    "bot_clicked": "bot_clicks",
    "anonymous_opens": "anonymous_opens",
    "anonymous_clicks": "anonymous_clicks",
    "anonymous_machine_opens": "anonymous_machine_opens",
    "anonymous_bot_clicks": "anonymous_bot_clicks",
}
RATE_FIELDS = (
    "delivery_rate",
    "open_rate",
    "click_rate",
    "click_to_open_rate",
    "bounce_rate",
    "unsubscribe_rate",
    "complaint_rate",
    "conversion_rate",
)


@pytest.fixture
def anonymous_pages(
    request: pytest.FixtureRequest, member_of: Callable[..., Membership], logged_in: Any
) -> tuple[Anonymous, Client]:
    """test_anonymous.py's workspace tracking anonymously, its mails' activity written by
    tracking's writer, and a viewer of it."""
    tracked: Anonymous = request.getfixturevalue("anonymous")
    hits_write(activity(tracked))
    return tracked, logged_in(member_of(tracked.workspace, Role.VIEWER))


def test_the_sequence_page_shows_the_api_values_for_anonymous_tracking(
    anonymous_pages: tuple[Anonymous, Client], api: APIClient
) -> None:
    tracked, anonymous_viewer = anonymous_pages
    # given the API's report of days 0 and 1 (unique rates null, anonymous events counted)
    body = api.get(f"/api/v1/sequences/{tracked.sequence.pk}/report/?{ANONYMOUS_PERIOD}").json()
    assert body["totals"]["open_rate"] is None and body["totals"]["anonymous_opens"] == 3

    # when a viewer opens the sequence's page for the same days, with the open rate charted
    html = anonymous_viewer.get(
        f"/sequences/{tracked.sequence.pk}/report/?{ANONYMOUS_PERIOD}"
        "&rates=open_rate&rates=delivery_rate"
    ).content.decode()

    # then every count and rate of the step and the totals is the API's; null reads "—"
    counts = html[html.index('data-testid="step-counts"') :]
    rates = html[html.index('data-testid="step-rates"') :]
    for row, figures in (
        ('data-step="welcome"', body["steps"][0]),
        ('data-step="total"', body["totals"]),
    ):
        for field, api_field in COUNT_FIELDS.items():
            assert cell(counts, row, field) == format_count(figures[api_field]), (row, field)
        for field in RATE_FIELDS:
            assert cell(rates, row, field) == format_rate(figures[field]), (row, field)
    assert cell(rates, 'data-step="total"', "open_rate") == "—"
    assert cell(rates, 'data-step="total"', "delivery_rate") == "66.7%"
    assert ">Anonymous opens</th>" in counts
    # the tiles alike, and the anonymous events in a line under them
    totals = body["totals"]
    for key in ("delivery_rate", "open_rate", "click_rate", "click_to_open_rate"):
        assert _tile(html, key) == format_rate(totals[key]), key
    assert (_tile(html, "open_rate"), _tile(html, "conversion_rate")) == ("—", "—")
    note = html[html.index('data-testid="anonymous-note"') :]
    for field in ("anonymous_opens", "anonymous_clicks", "anonymous_machine_opens"):
        assert re.search(rf'data-field="{field}">{totals[field]}<', note), field
    # the diagram's box of the step
    assert "— opened · — clicked" in html
    # the chart: day 0's open rate is unknown, a gap (no marker); its delivery rate is drawn
    chart = svg_of(html, "rate-chart")
    markers = [(c.get("data-rate"), c.get("data-day")) for c in chart.iter(f"{SVG}circle")]
    assert markers == [("delivery_rate", str(DAY0))]
    assert "leave a gap where people opened or clicked mails tracked anonymously" in html


def test_the_funnel_and_broadcast_pages_show_the_api_values_for_anonymous_tracking(
    anonymous_pages: tuple[Anonymous, Client], api: APIClient
) -> None:
    tracked, anonymous_viewer = anonymous_pages
    # given the API's reports
    funnel = api.get(f"/api/v1/funnels/{tracked.funnel.pk}/report/?{ANONYMOUS_PERIOD}").json()
    broadcast = api.get(f"/api/v1/broadcasts/{tracked.broadcast.pk}/report/").json()

    # when their pages are opened
    funnel_html = anonymous_viewer.get(
        f"/funnels/{tracked.funnel.pk}/report/?{ANONYMOUS_PERIOD}"
    ).content.decode()
    broadcast_html = anonymous_viewer.get(
        f"/sequences/broadcasts/{tracked.broadcast.pk}/report/"
    ).content.decode()

    # then the mails of the attention stage are the API's, with their anonymous events
    mail_table = funnel_html[funnel_html.index('data-testid="stage-mail-table"') :]
    attention = funnel["stages"][0]
    row = 'data-stage="attention"'
    for field in ("delivery_rate", "open_rate", "click_rate", "unsubscribe_rate"):
        assert cell(mail_table, row, field) == format_rate(attention[field]), field
    assert cell(mail_table, row, "open_rate") == "—"
    for field in ("anonymous_opens", "anonymous_clicks", "anonymous_bot_clicks"):
        assert cell(mail_table, row, field) == format_count(attention[field]), field
    # and the broadcast's tiles and version rows (one click by a person: no unique rates)
    for key in ("delivery_rate", "open_rate", "click_rate"):
        assert (
            _tile(broadcast_html, key)
            == format_rate(broadcast[key])
            == ("100.0%" if key == "delivery_rate" else "—")
        )
    variant = broadcast["variants"][0]
    variant_rates = broadcast_html[broadcast_html.index('data-testid="variant-rates"') :]
    for field in RATE_FIELDS:
        assert cell(variant_rates, 'data-variant="0"', field) == format_rate(variant[field])
    assert cell(broadcast_html, 'data-variant="0"', "anonymous_clicks") == "1"


def _csv_rows(response: Any) -> list[dict[str, str]]:
    text = b"".join(response.streaming_content).decode().lstrip("\ufeff")
    return list(csv.DictReader(io.StringIO(text)))


def test_the_csv_has_the_api_values_for_anonymous_tracking(
    anonymous_pages: tuple[Anonymous, Client], api: APIClient
) -> None:
    tracked, anonymous_viewer = anonymous_pages
    # given the API's report of the sequence
    body = api.get(f"/api/v1/sequences/{tracked.sequence.pk}/report/?{ANONYMOUS_PERIOD}").json()

    # when the page's CSV and the API's export are downloaded
    page_csv = anonymous_viewer.get(
        f"/sequences/{tracked.sequence.pk}/report/export/?{ANONYMOUS_PERIOD}"
    )
    api_csv = api.get(f"/api/v1/sequences/{tracked.sequence.pk}/report/export/?{ANONYMOUS_PERIOD}")

    # then they are the same, and each row has the report's values: null is an empty cell
    rows = _csv_rows(page_csv)
    assert rows == _csv_rows(api_csv)
    (welcome, total) = rows
    for row, figures in ((welcome, body["steps"][0]), (total, body["totals"])):
        for field, value in figures.items():
            if field not in row:
                continue
            if value is None:
                assert row[field] == "", field
            elif isinstance(value, float):
                assert float(row[field]) == pytest.approx(value), field
            else:
                assert row[field] == str(value), field
    assert (welcome["open_rate"], welcome["conversion_rate"], welcome["anonymous_opens"]) == (
        "",
        "",
        "3",
    )
    # the time series of the sequence: day 0's unique rates are empty, as in the API
    series = api.get(
        f"/api/v1/analytics/timeseries/?{ANONYMOUS_PERIOD}&sequence={tracked.sequence.pk}"
    ).json()
    series_csv = _csv_rows(
        anonymous_viewer.get(
            f"/reports/export/timeseries/?{ANONYMOUS_PERIOD}&sequence={tracked.sequence.pk}"
        )
    )
    assert (
        [(row["open_rate"], row["anonymous_opens"]) for row in series_csv]
        == [
            (
                "" if point["open_rate"] is None else f"{point['open_rate']:.6f}",
                str(point["anonymous_opens"]),
            )
            for point in series["points"]
        ]
        == [("", "2"), ("", "1")]
    )


def test_personal_tracking_shows_no_anonymous_columns(history: History, viewer: Client) -> None:
    for page in (
        f"/sequences/{history.sequence.pk}/report/?{PERIOD}",
        f"/funnels/{history.funnel.pk}/report/?{PERIOD}",
        f"/reports/?{PERIOD}",
    ):
        html = viewer.get(page).content.decode()
        assert "Anonymous opens" not in html and 'data-testid="anonymous-note"' not in html, page
        assert "tracked anonymously" not in html, page


def test_a_report_page_folds_pending_changes_once_for_all_its_queries(
    history: History, viewer: Client
) -> None:
    """The sequence page runs several report queries (the report, series, KPIs now and before,
    attribution); the workspace's pending rollup marks are looked for once, on entering, and
    what was pending is in the figures."""
    messages_mark_dirty(message_ids=Message.objects.values_list("pk", flat=True))
    assert DirtyKey.objects.exists()

    with CaptureQueriesContext(connection) as captured:
        response = viewer.get(f"/sequences/{history.sequence.pk}/report/?{PERIOD}")

    assert response.status_code == 200
    looks = [q for q in captured.captured_queries if 'FROM "analytics_dirtykey"' in q["sql"]]
    assert len([q for q in looks if q["sql"].startswith("SELECT 1 AS")]) == 1
    assert not DirtyKey.objects.filter(workspace_id=history.workspace.pk).exists()
