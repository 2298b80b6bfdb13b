"""The funnel and sequence reports over the known history of conftest.py, through the API,
exactly; the rebuild reproduces the live rollups; isolation, validation and CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.forms.models import model_to_dict
from rest_framework.test import APIClient

from analytics.models import (
    ConversionDaily,
    DirtyKey,
    MessageDaily,
    StageDaily,
    StageDurationDaily,
    StageStay,
)
from analytics.rollups import DURATION_BUCKETS, rollups_refresh
from core.models import Workspace
from funnel.services import stage_add
from tests.analytics.conftest import T0, History

pytestmark = pytest.mark.django_db

PERIOD = "from=2025-01-06&to=2025-01-08"
WELCOME = {
    # ada, bo, cy, di, eve got it; cy's bounced
    "sent": 5,
    "delivered": 4,
    "bounced": 1,
    # ada (open + click), bo (a day later: counted on the send day)
    "opened": 2,
    "clicked": 1,
    "unsubscribed": 1,
    "complained": 1,
    # ada bought a day after her click
    "converted": 1,
    "machine_opens": 1,
    "bot_clicks": 1,
    "delivery_rate": 4 / 5,
    "open_rate": 2 / 4,
    "click_rate": 1 / 4,
    "click_to_open_rate": 1 / 2,
    "bounce_rate": 1 / 5,
    "unsubscribe_rate": 1 / 4,
    "complaint_rate": 1 / 4,
    "conversion_rate": 1 / 4,
}
OFFER = {
    # bo and di, nothing else happened
    **{key: 0 for key in WELCOME},
    "sent": 2,
    "delivered": 2,
    "delivery_rate": 1.0,
}


def bucket_of(seconds: int) -> int:
    """The duration bucket (its lower bound) a stay of `seconds` counts in."""
    return max(bound for bound in DURATION_BUCKETS if bound <= seconds)


def rollup_rows() -> dict[str, list[dict[str, Any]]]:
    def rows(model: Any, *order: str) -> list[dict[str, Any]]:
        return [
            {key: value for key, value in model_to_dict(row).items() if key != "id"}
            for row in model.objects.order_by(*order)
        ]

    return {
        "messages": rows(MessageDaily, "day", "sequence", "broadcast", "step_key", "variant"),
        "stays": rows(StageStay, "entered_at", "contact_id"),
        "stages": rows(StageDaily, "day", "stage"),
        "durations": rows(StageDurationDaily, "day", "stage", "bucket"),
        "conversions": rows(ConversionDaily, "day", "stage_id", "currency"),
    }


def test_sequence_report_counts_every_milestone_exactly(history: History, api: APIClient) -> None:
    # when
    response = api.get(f"/api/v1/sequences/{history.sequence.pk}/report/?{PERIOD}")

    # then
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["sequence"] == str(history.sequence.pk)
    assert (body["from"], body["to"]) == ("2025-01-06", "2025-01-08")
    welcome, offer = body["steps"]
    assert {key: welcome[key] for key in WELCOME} == WELCOME
    assert (welcome["step"], welcome["variant"], welcome["subject"]) == ("welcome", 0, "Welcome")
    assert welcome["stage"] == str(history.stages["attention"].pk)
    assert {key: offer[key] for key in OFFER} == OFFER
    assert offer["step"] == "offer"
    totals = body["totals"]
    assert (totals["sent"], totals["delivered"], totals["opened"]) == (7, 6, 2)
    assert totals["open_rate"] == 2 / 6
    assert body["previous"] is None


def test_sequence_report_of_a_period_without_sends_is_zero_and_compares(
    history: History, api: APIClient
) -> None:
    # when the day after the offer is asked for, compared with the three days before
    response = api.get(
        f"/api/v1/sequences/{history.sequence.pk}/report/"
        "?from=2025-01-09&to=2025-01-11&compare=true"
    )

    # then nothing was sent then, and the previous period holds everything
    body = response.json()
    assert [step["sent"] for step in body["steps"]] == [0, 0]
    assert body["totals"]["open_rate"] == 0.0
    previous = body["previous"]
    assert (previous["from"], previous["to"]) == ("2025-01-06", "2025-01-08")
    assert [step["sent"] for step in previous["steps"]] == [5, 2]


def test_funnel_report_per_stage_and_goal(history: History, api: APIClient) -> None:
    # when
    response = api.get(f"/api/v1/funnels/{history.funnel.pk}/report/?{PERIOD}")

    # then
    assert response.status_code == 200, response.json()
    body = response.json()
    stages = {stage["key"]: stage for stage in body["stages"]}
    assert [stage["key"] for stage in body["stages"]] == [
        "attention",
        "interest",
        "desire",
        "action",
    ]
    attention, interest, desire, action = (stages[key] for key in stages)
    # attention: ada, bo, cy, di entered on day 0, bo again on day 1; ada and bo moved on, cy
    # bought from there; bo (second stay) and di are lost; bo, cy, di are there now.
    assert {
        key: attention[key]
        for key in (
            "entered",
            "entrants",
            "current",
            "advanced",
            "went_back",
            "converted",
            "drop_off",
            "median_time_in_stage_seconds",
            "loses_most",
        )
    } == {
        "entered": 5,
        "entrants": 4,
        "current": 3,
        "advanced": 2,
        "went_back": 0,
        "converted": 1,
        "drop_off": 2,
        # ended stays: ada 3 h, bo 24 h -> the lower middle
        "median_time_in_stage_seconds": 3 * 3600,
        "loses_most": True,
    }
    assert attention["conversion_rate"] == 1 / 5
    assert attention["drop_off_rate"] == 2 / 5
    # the welcome mail is tagged with attention
    assert {key: attention[key] for key in ("sent", "delivered")} == {"sent": 5, "delivered": 4}
    assert attention["delivery_rate"] == 4 / 5
    assert attention["open_rate"] == 2 / 4
    assert attention["click_rate"] == 1 / 4
    assert attention["unsubscribe_rate"] == 1 / 4
    # interest: ada (21 h, on to desire), bo (1 h, back to attention)
    assert (interest["entered"], interest["advanced"], interest["went_back"]) == (2, 1, 1)
    assert (interest["current"], interest["drop_off"], interest["converted"]) == (0, 1, 0)
    assert interest["median_time_in_stage_seconds"] == 3600
    assert interest["loses_most"] is False
    assert interest["sent"] == 0 and interest["open_rate"] == 0.0
    # desire: ada, who bought there; the offer mail (bo and di) is tagged with desire
    assert (desire["entered"], desire["converted"], desire["drop_off"]) == (1, 1, 0)
    assert desire["current"] == 1
    assert desire["conversion_rate"] == 1.0
    assert desire["median_time_in_stage_seconds"] is None
    assert (desire["sent"], desire["delivered"], desire["delivery_rate"]) == (2, 2, 1.0)
    assert (action["entered"], action["current"], action["sent"]) == (0, 0, 0)
    assert body["loses_most"] == str(history.stages["attention"].pk)
    # the goal: two purchases by four contacts in the funnel, 150 EUR
    assert body["goal"] == {
        "event": "purchase",
        "conversions": 2,
        "contacts": 4,
        "conversion_rate": 0.5,
        "revenue": {"value": "150.00", "currency": "EUR"},
        "revenue_by_currency": [{"value": "150.00", "currency": "EUR"}],
    }


def test_funnel_report_cohorts_by_entry_day(history: History, api: APIClient) -> None:
    # when only day 1 is asked for
    body = api.get(
        f"/api/v1/funnels/{history.funnel.pk}/report/?from=2025-01-07&to=2025-01-07&compare=1"
    ).json()

    # then only the stays begun that day: bo back in attention, bo's interest, ada's desire
    entered = {stage["key"]: stage["entered"] for stage in body["stages"]}
    assert entered == {"attention": 1, "interest": 1, "desire": 1, "action": 0}
    # both purchases happened on day 1; by then four contacts had entered the funnel
    assert (body["goal"]["conversions"], body["goal"]["contacts"]) == (2, 4)
    # no mail was sent on day 1
    assert [stage["sent"] for stage in body["stages"]] == [0, 0, 0, 0]
    # the day before: the four first entries and the welcome mail
    previous = body["previous"]
    assert [stage["entered"] for stage in previous["stages"]] == [4, 1, 0, 0]
    assert previous["goal"]["conversions"] == 0
    assert previous["stages"][0]["sent"] == 5


def test_the_rebuild_reproduces_the_live_rollups(history: History) -> None:
    # given the live rollups, kept by the receivers and the refresh
    while rollups_refresh():
        pass
    live = rollup_rows()
    assert len(live["messages"]) == 2 and len(live["stays"]) == 8
    # ended stays: attention ada 3 h and bo 24 h, interest ada 21 h (day 0), bo 1 h (day 1)
    assert sorted(
        (row["day"], row["bucket"], row["stays"], row["shortest"], row["longest"])
        for row in live["durations"]
    ) == [
        (T0.date(), bucket_of(3 * 3600), 1, 3 * 3600, 3 * 3600),
        (T0.date(), bucket_of(21 * 3600), 1, 21 * 3600, 21 * 3600),
        (T0.date(), bucket_of(24 * 3600), 1, 24 * 3600, 24 * 3600),
        (T0.date() + dt.timedelta(days=1), bucket_of(3600), 1, 3600, 3600),
    ]

    # when everything is rebuilt from the raw rows
    out = io.StringIO()
    call_command("analytics_rebuild", stdout=out)

    # then it is the same, row for row, and nothing is left to refresh
    assert rollup_rows() == live
    assert out.getvalue().startswith("2 message rows, 8 stays, ")
    assert DirtyKey.objects.count() == 0


def test_a_send_whose_announcement_was_lost_is_reconciled(history: History) -> None:
    # given a message sent by a worker that died before announcing it
    from analytics.rollups import RECONCILE_LAG, rollups_reconcile
    from campaigns.models import Message

    while rollups_refresh():
        pass
    rollups_reconcile(now=T0)  # the first pass only sets the watermark
    welcome = history.message("ada", "welcome")
    Message.objects.filter(pk=welcome.pk).update(sent_at=None)
    call_command("analytics_rebuild", stdout=io.StringIO())
    Message.objects.filter(pk=welcome.pk).update(sent_at=T0 + dt.timedelta(minutes=1))
    assert MessageDaily.objects.get(step_key="welcome").sent == 4

    # when the reconcile pass runs once the lag has passed
    marked = rollups_reconcile(now=T0 + dt.timedelta(minutes=1) + RECONCILE_LAG)
    rollups_refresh()

    # then the send counts
    assert marked == 1
    assert MessageDaily.objects.get(step_key="welcome").sent == 5


def test_reports_of_another_workspace_are_not_found(
    history: History, other_workspace: Workspace, api_client_for: Callable[..., APIClient]
) -> None:
    theirs = api_client_for(other_workspace)
    for url in (
        f"/api/v1/funnels/{history.funnel.pk}/report/",
        f"/api/v1/funnels/{history.funnel.pk}/report/export/",
        f"/api/v1/sequences/{history.sequence.pk}/report/",
        f"/api/v1/sequences/{history.sequence.pk}/report/export/",
    ):
        assert theirs.get(url).status_code == 404, url
    assert APIClient().get(f"/api/v1/funnels/{history.funnel.pk}/report/").status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2025-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2025-01-08&to=2025-01-06", "to"),
        ("from=2020-01-01&to=2025-01-01", "from"),
    ],
)
def test_a_bad_period_is_refused_naming_the_field(
    history: History, api: APIClient, query: str, field: str
) -> None:
    response = api.get(f"/api/v1/funnels/{history.funnel.pk}/report/?{query}")
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_csv_export_has_the_api_figures_and_neutralises_formulas(
    history: History, api: APIClient
) -> None:
    # given a stage whose name a spreadsheet would run as a formula
    stage_add(funnel=history.funnel, name="=HYPERLINK(1)")

    # when
    response = api.get(f"/api/v1/funnels/{history.funnel.pk}/report/export/?{PERIOD}")

    # then
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    text = b"".join(response.streaming_content).decode("utf-8").lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    header, *stage_rows = rows[: rows.index([])]
    by_stage = {row[header.index("key")]: dict(zip(header, row, strict=True)) for row in stage_rows}
    assert by_stage["attention"]["entered"] == "5"
    assert by_stage["attention"]["open_rate"] == "0.500000"
    assert by_stage["attention"]["loses_most"] == "yes"
    assert by_stage["hyperlink1"]["stage"] == "'=HYPERLINK(1)"
    goal_header, goal = rows[rows.index([]) + 1 :]
    assert dict(zip(goal_header, goal, strict=True))["revenue_EUR"] == "150.00"

    sequence_csv = api.get(f"/api/v1/sequences/{history.sequence.pk}/report/export/?{PERIOD}")
    lines = b"".join(sequence_csv.streaming_content).decode("utf-8").lstrip("\ufeff")
    sequence_rows = list(csv.DictReader(io.StringIO(lines)))
    assert [(row["step"], row["sent"]) for row in sequence_rows] == [
        ("welcome", "5"),
        ("offer", "2"),
        ("(total)", "7"),
    ]
