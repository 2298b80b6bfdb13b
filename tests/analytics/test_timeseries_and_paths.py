"""Time series by day and week, and conversion paths, over the known history of conftest.py."""

from __future__ import annotations

import csv
import io

import pytest
from rest_framework.test import APIClient

from tests.analytics.conftest import History

pytestmark = pytest.mark.django_db

PERIOD = "from=2025-01-06&to=2025-01-08"


def test_daily_series_of_a_sequence(history: History, api: APIClient) -> None:
    body = api.get(f"/api/v1/analytics/timeseries/?{PERIOD}&sequence={history.sequence.pk}").json()
    points = body["points"]
    assert [(p["start"], p["end"], p["sent"]) for p in points] == [
        ("2025-01-06", "2025-01-06", 5),
        ("2025-01-07", "2025-01-07", 0),
        ("2025-01-08", "2025-01-08", 2),
    ]
    day0 = points[0]
    assert (day0["delivered"], day0["opened"], day0["clicked"]) == (4, 2, 1)
    assert (day0["open_rate"], day0["click_rate"], day0["bounce_rate"]) == (0.5, 0.25, 0.2)
    assert (day0["machine_opens"], day0["bot_clicks"], day0["unsubscribe_rate"]) == (1, 1, 0.25)
    assert points[1]["open_rate"] == 0.0


def test_weekly_series_of_a_funnel_with_its_entries_and_conversions(
    history: History, api: APIClient
) -> None:
    # 2025-01-06 is a Monday: one week, cut to the period
    body = api.get(
        f"/api/v1/analytics/timeseries/?{PERIOD}&interval=week&funnel={history.funnel.pk}"
    ).json()
    (week,) = body["points"]
    assert (week["start"], week["end"]) == ("2025-01-06", "2025-01-08")
    # the welcome (attention) and offer (desire) mails; 8 stays begun; 2 purchases
    assert (week["sent"], week["delivered"], week["entered"], week["conversions"]) == (7, 6, 8, 2)

    daily = api.get(
        f"/api/v1/analytics/timeseries/?{PERIOD}&funnel={history.funnel.pk}&compare=1"
    ).json()
    assert [(p["entered"], p["conversions"]) for p in daily["points"]] == [
        (5, 0),
        (3, 2),
        (0, 0),
    ]
    assert [p["sent"] for p in daily["previous"]["points"]] == [0, 0, 0]

    export = api.get(f"/api/v1/analytics/timeseries/export/?{PERIOD}&funnel={history.funnel.pk}")
    rows = list(
        csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode().lstrip("\ufeff")))
    )
    assert [(row["start"], row["entered"], row["sent"]) for row in rows] == [
        ("2025-01-06", "5", "5"),
        ("2025-01-07", "3", "0"),
        ("2025-01-08", "0", "2"),
    ]


def test_series_parameters_are_checked(history: History, api: APIClient) -> None:
    assert list(api.get("/api/v1/analytics/timeseries/?interval=hour").json()) == ["interval"]
    both = f"sequence={history.sequence.pk}&funnel={history.funnel.pk}"
    assert list(api.get(f"/api/v1/analytics/timeseries/?{both}").json()) == ["scope"]
    unknown = "/api/v1/analytics/timeseries/?sequence=00000000-0000-0000-0000-000000000000"
    assert api.get(unknown).status_code == 404


def test_conversion_paths(history: History, api: APIClient) -> None:
    body = api.get(f"/api/v1/analytics/paths/?{PERIOD}&funnel={history.funnel.pk}").json()

    # ada, bo, cy and di moved in the funnel; ada and cy bought
    assert (body["journeys"], body["conversions"], body["conversion_rate"]) == (4, 2, 0.5)
    assert [
        (path["steps"], path["journeys"], path["conversions"]) for path in body["converting"]
    ] == [
        # cy bought in attention; di stayed there without buying
        (["stage:Attention"], 2, 1),
        # ada: entered, clicked the welcome mail, moved on twice, bought
        (
            [
                "stage:Attention",
                "mail:Welcome / welcome",
                "stage:Interest",
                "stage:Desire",
            ],
            1,
            1,
        ),
    ]
    assert [
        (path["steps"], path["without_conversion"], path["conversion_rate"])
        for path in body["non_converting"]
    ] == [
        (["stage:Attention"], 1, 0.5),
        (["stage:Attention", "stage:Interest", "stage:Attention"], 1, 0.0),
    ]
    assert list(api.get(f"/api/v1/analytics/paths/?{PERIOD}").json()) == ["funnel"]
    assert list(api.get(f"/api/v1/analytics/paths/?funnel={history.funnel.pk}&limit=0").json()) == [
        "limit"
    ]
