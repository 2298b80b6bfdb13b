"""The SVG charts and number formats of analytics.charts, as pure functions of hand-made
report results: what they draw, that they escape every name, and how they round."""

from __future__ import annotations

import datetime as dt
import uuid
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from django.utils import translation

from analytics.charts import (
    MAX_MARKERS,
    ab_chart,
    ab_note,
    format_count,
    format_decimal,
    format_duration,
    format_money,
    format_p_value,
    format_rate,
    funnel_chart,
    rate_chart,
    sequence_chart,
    step_annotations,
)
from analytics.queries.base import MailFigures, Money, Period
from analytics.queries.broadcast import AbTest, AbVariant
from analytics.queries.funnel import FunnelReport, GoalFigures, StageFigures
from analytics.queries.sequence import SequenceReport, StepVariantFigures
from analytics.queries.timeseries import Point, TimeSeries
from campaigns.diagram import sequence_svg

SVG = "{http://www.w3.org/2000/svg}"
PERIOD = Period(start=dt.date(2025, 3, 3), end=dt.date(2025, 3, 5))


@pytest.fixture(autouse=True)
def _english() -> None:
    translation.activate("en")


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # noqa: S314 (our own output; parsing proves it well-formed)


def stage(
    name: str, key: str, position: int, entered: int, progressed: int, **more
) -> StageFigures:
    values = {
        "stage_id": uuid.uuid4(),
        "name": name,
        "key": key,
        "position": position,
        "entered": entered,
        "entrants": entered,
        "advanced": progressed,
        "went_back": 0,
        "converted": 0,
        "progressed": progressed,
        "current": 0,
        "median_time_in_stage_seconds": None,
        "mail": MailFigures(),
    }
    values.update(more)
    return StageFigures(**values)


def funnel(stages: list[StageFigures], name: str = "Spring", previous=None) -> FunnelReport:
    worst = max((s for s in stages if s.drop_off), key=lambda s: s.drop_off, default=None)
    flagged = [StageFigures(**{**s.__dict__, "loses_most": s is worst}) for s in stages]
    return FunnelReport(
        funnel_id=uuid.uuid4(),
        name=name,
        period=PERIOD,
        stages=flagged,
        goal=GoalFigures(event="purchase", conversions=0, contacts=0, revenue=[]),
        previous=previous,
    )


# --- numbers


def test_rates_are_rounded_half_up_to_one_decimal_and_follow_the_language() -> None:
    # Django's number_format cuts digits off; the pages must round (1/6 = 16.67 %)
    assert [format_rate(r) for r in (1 / 6, 1 / 7, 0.5, 0.00049, 0.9996, 0.0)] == [
        "16.7%",
        "14.3%",
        "50.0%",
        "0.0%",
        "100.0%",
        "0.0%",
    ]
    assert format_count(20000) == "20,000"
    assert format_count(Decimal("3")) == "3"
    assert format_money(Money(value=Decimal("1234.5"), currency="EUR")) == "1,234.50 EUR"
    assert format_money(None) == "—"
    assert format_decimal(Decimal("0.10"), 2) == "0.10"
    assert format_p_value(0.007294) == "0.0073"
    assert format_p_value(0.00001) == "< 0.0001"
    assert format_p_value(None) == "—"
    assert format_duration(3 * 3600) == "3 h"
    assert format_duration(None) == "—"
    with translation.override("de"):
        assert format_rate(1 / 6).startswith("16,7")
        assert format_count(20000) == "20.000"


# --- the funnel


def test_the_funnel_narrows_with_the_entries_and_flags_the_worst_stage() -> None:
    # given 200 -> 80 -> 20 entries; attention loses 120, interest 60, desire 20
    report = funnel(
        [
            stage("Attention", "attention", 0, 200, 80),
            stage("Interest", "interest", 1, 80, 20),
            stage("Desire", "desire", 2, 20, 0),
        ]
    )

    root = parse(funnel_chart(report))

    assert root.get("role") == "img"
    assert root.get("aria-label") == "Funnel Spring"
    assert root.find(f"{SVG}title").text == "Funnel Spring"
    assert root.find(f"{SVG}desc").text == (
        "Attention: 200 entered, 40.0% moved on, 120 lost; "
        "Interest: 80 entered, 25.0% moved on, 60 lost; "
        "Desire: 20 entered, 0.0% moved on, 20 lost. Attention loses the most people."
    )
    groups = [g for g in root.iter(f"{SVG}g") if "funnel-stage" in g.get("class", "")]
    bars = {g.get("data-stage"): g.find(f"{SVG}rect[@class='bar']") for g in groups}
    assert {key: (bar.get("x"), bar.get("width")) for key, bar in bars.items()} == {
        "attention": ("0.000%", "100.000%"),
        "interest": ("30.000%", "40.000%"),
        "desire": ("45.000%", "10.000%"),
    }
    assert [g.get("class") for g in groups] == [
        "funnel-stage loses-most",
        "funnel-stage",
        "funnel-stage",
    ]
    notes = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "loses-most-note"]
    assert notes == ["Loses the most: 120 (60.0%)"]
    between = [
        (t.text, t.get("data-rate"))
        for t in root.iter(f"{SVG}text")
        if t.get("class") == "stage-rate"
    ]
    assert between == [("↓ 40.0% moved on", "0.400000"), ("↓ 25.0% moved on", "0.250000")]
    # text stays in pixels and positions in percent: no viewBox to shrink the labels
    assert root.get("viewBox") is None and root.get("width") == "100%"


def test_the_previous_period_is_a_dashed_outline_on_the_same_scale() -> None:
    attention, interest = stage("A", "a", 0, 50, 10), stage("B", "b", 1, 10, 0)
    before = funnel(
        [
            StageFigures(**{**attention.__dict__, "entered": 100}),
            StageFigures(**{**interest.__dict__, "entered": 0}),
        ]
    )
    report = funnel([attention, interest], previous=before)

    root = parse(funnel_chart(report))

    groups = [g for g in root.iter(f"{SVG}g") if "funnel-stage" in g.get("class", "")]
    outlines = [[r.get("width") for r in g if r.get("class") == "previous-bar"] for g in groups]
    # the widest of both periods (100) is the full width; nothing to outline for 0
    assert outlines == [["100.000%"], []]
    assert groups[0].find(f"{SVG}rect[@class='bar']").get("width") == "50.000%"
    counts = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "stage-count"]
    assert counts == ["50 entered (previous: 100)", "10 entered (previous: 0)"]


def test_funnel_and_stage_names_are_escaped() -> None:
    report = funnel(
        [stage('<script>alert("x")</script>', "s", 0, 3, 1)], name="<img src=x onerror=alert(1)>"
    )

    markup = str(funnel_chart(report))

    assert "<script>" not in markup and "<img" not in markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in markup
    root = parse(markup)
    assert root.find(f"{SVG}title").text == "Funnel <img src=x onerror=alert(1)>"
    name = next(t for t in root.iter(f"{SVG}text") if t.get("class") == "stage-name")
    assert name.text == '<script>alert("x")</script>'


def test_a_funnel_without_stages_says_so() -> None:
    root = parse(funnel_chart(funnel([])))
    assert [t.text for t in root.iter(f"{SVG}text")] == ["This funnel has no stages yet."]


# --- rates over time


def day(offset: int, **counts: int) -> Point:
    start = PERIOD.start + dt.timedelta(days=offset)
    return Point(start=start, end=start, mail=MailFigures(**counts))


def test_rate_lines_leave_gaps_where_a_rate_is_undefined_and_dash_the_previous_period() -> None:
    # given day 0 with 10 delivered (5 opened), day 1 without mail, day 2 with 4 (1 opened)
    previous = TimeSeries(
        period=PERIOD.previous(),
        interval="day",
        points=[day(-3, sent=8, opened=2), day(-2, sent=8, opened=4), day(-1)],
    )
    series = TimeSeries(
        period=PERIOD,
        interval="day",
        points=[day(0, sent=10, opened=5), day(1), day(2, sent=4, opened=1)],
        previous=previous,
    )

    root = parse(rate_chart(series, ["open_rate"]))

    lines = [(p.get("class"), p.get("points")) for p in root.iter(f"{SVG}polyline")]
    # the previous period: days 0 and 1 joined (0.25, 0.5 of an axis up to 50 %); the current
    # one has no neighbours, so no line, only markers
    assert lines == [("line previous", "0.00,110.00 500.00,0.00")]
    markers = [
        (c.get("class"), c.get("data-day"), c.get("data-value"), c.find(f"{SVG}title").text)
        for c in root.iter(f"{SVG}circle")
    ]
    assert markers == [
        ("marker", "2025-03-03", "0.500000", "Mar 3: Open rate 50.0%"),
        ("marker", "2025-03-05", "0.250000", "Mar 5: Open rate 25.0%"),
    ]
    legend = [
        t.text
        for g in root.iter(f"{SVG}svg")
        for t in g.iter(f"{SVG}text")
        if "legend-item" in g.get("class", "")
    ]
    assert legend == ["Open rate", "Previous period"]
    axis = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "axis-label"]
    assert axis == ["Mar 3", "Mar 4", "Mar 5"]
    y_axis = [t.text for t in root.iter(f"{SVG}text") if "y-label" in t.get("class", "")]
    assert y_axis == ["0.0%", "12.5%", "25.0%", "37.5%", "50.0%"]
    assert root.get("aria-label") == "Open rate per day, 2025-03-03 to 2025-03-05"


def test_long_series_draw_lines_without_crowded_markers_and_label_five_days() -> None:
    count = MAX_MARKERS + 8
    start = dt.date(2025, 1, 1)
    period = Period(start=start, end=start + dt.timedelta(days=count - 1))
    points = [
        Point(
            start=start + dt.timedelta(days=n),
            end=start + dt.timedelta(days=n),
            mail=MailFigures(sent=10, opened=n % 5) if n != 30 else MailFigures(),
        )
        for n in range(count)
    ]

    root = parse(
        rate_chart(TimeSeries(period=period, interval="day", points=points), ["open_rate"])
    )

    # two runs around the day without mail, no markers
    assert len(list(root.iter(f"{SVG}polyline"))) == 2
    assert list(root.iter(f"{SVG}circle")) == []
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "axis-label"]
    # days 0, 17, 34, 52 and 69: evenly spread, the first and the last
    assert labels == ["Jan 1", "Jan 18", "Feb 4", "Feb 22", "Mar 11"]


def test_rates_unknown_under_anonymous_tracking_leave_a_gap_and_read_as_a_dash() -> None:
    # given day 1 whose people opened and clicked anonymously tracked mails (the API: null)
    series = TimeSeries(
        period=PERIOD,
        interval="day",
        points=[
            day(0, sent=10, opened=5),
            day(1, sent=10, opened=5, anonymous_opens=2, anonymous_clicks=1),
            day(2, sent=4, opened=1),
        ],
    )

    root = parse(rate_chart(series, ["open_rate", "delivery_rate"]))

    # then the open rate has a gap on day 1, the delivery rate (known) does not
    lines = {p.get("data-rate"): p.get("points") for p in root.iter(f"{SVG}polyline")}
    assert list(lines) == ["delivery_rate"]
    opens = [
        c.get("data-day") for c in root.iter(f"{SVG}circle") if c.get("data-rate") == "open_rate"
    ]
    assert opens == ["2025-03-03", "2025-03-05"]
    assert format_rate(None) == "—"


def test_unknown_rates_fall_back_to_the_default_ones() -> None:
    series = TimeSeries(period=PERIOD, interval="day", points=[day(0), day(1), day(2)])
    root = parse(rate_chart(series, ["<script>"]))
    assert "No mail was sent in this period." in root.find(f"{SVG}desc").text
    assert "<script>" not in str(rate_chart(series, ["<script>"]))


# --- A/B test


def ab(variants: list[AbVariant], *, p_value: float | None, **more) -> AbTest:
    values = {
        "metric": "open_rate",
        "sample_percent": 20,
        "wait": "PT4H",
        "decided": True,
        "winner": 1,
        "leader": 1,
        "runner_up": 0,
        "winner_by_chance": False,
        "variants": variants,
        "z": 2.68,
        "p_value": p_value,
    }
    values.update(more)
    return AbTest(**values)


def test_ab_bars_share_a_round_scale_and_the_note_tells_chance_from_a_clear_lead() -> None:
    test = ab(
        [AbVariant(0, "<b>Hi</b>", 10, 10, 2), AbVariant(1, "Hey", 10, 10, 8)], p_value=0.00729
    )

    markup = str(ab_chart(test))

    root = parse(markup)
    groups = [g for g in root.iter(f"{SVG}g") if "ab-variant" in g.get("class", "")]
    assert [(g.get("class"), g.get("data-rate")) for g in groups] == [
        ("ab-variant", "0.200000"),
        ("ab-variant leader", "0.800000"),
    ]
    # the best rate (80 %) rounds up to a 100 % scale
    assert [g.find(f"{SVG}rect[@class='bar']").get("width") for g in groups] == [
        "20.000%",
        "80.000%",
    ]
    texts = [t.text for g in groups for t in g.iter(f"{SVG}text")]
    assert texts == ["Version A", "20.0% · 2 of 10", "Version B · winner", "80.0% · 8 of 10"]
    assert groups[0].find(f"{SVG}title").text == "Version A: <b>Hi</b>"
    assert "<b>" not in markup
    assert root.findall(f"{SVG}text")[-1].text == "Open rate, bars from 0 to 100.0% · p = 0.0073"
    assert ab_note(test) == "Version B leads beyond chance (p = 0.0073, below 5%)."

    close = ab([AbVariant(0, "A", 100, 100, 3), AbVariant(1, "B", 100, 100, 4)], p_value=0.7)
    widths = [
        g.find(f"{SVG}rect[@class='bar']").get("width")
        for g in parse(ab_chart(close)).iter(f"{SVG}g")
        if "ab-variant" in g.get("class", "")
    ]
    assert widths == ["60.000%", "80.000%"]  # 3 % and 4 % of a 5 % scale
    assert ab_note(close) == (
        "Version B leads, but the difference could be chance (p = 0.7000, not below 5%)."
    )
    tie = ab(
        [AbVariant(0, "A", 10, 10, 0), AbVariant(1, "B", 10, 10, 0)],
        p_value=1.0,
        winner=0,
        leader=0,
        winner_by_chance=True,
    )
    assert ab_note(tie) == (
        "No opens or clicks told the versions apart: the winner was chosen by chance."
    )
    assert ab_note(ab([AbVariant(0, "A", 10, 10, 1)], p_value=None, runner_up=None)) == (
        "There is only one version: nothing to compare."
    )


# --- the sequence diagram with rates


def test_the_diagram_carries_each_email_steps_rates_and_escapes_them() -> None:
    steps = [
        {"key": "welcome", "type": "email", "subject": "<i>Hi</i>", "html": "x", "next": "wait"},
        {"key": "wait", "type": "wait", "duration": "P1D", "next": "offer"},
        {
            "key": "offer",
            "type": "email",
            "subject": "Offer",
            "html": "x",
            "variants": [{"subject": "A"}, {"subject": "B"}],
        },
    ]
    report = SequenceReport(
        sequence_id=uuid.uuid4(),
        name="S",
        period=PERIOD,
        steps=[
            StepVariantFigures(
                "welcome",
                0,
                "<i>Hi</i>",
                None,
                True,
                MailFigures(sent=5, bounced=1, opened=2, clicked=1),
            ),
            StepVariantFigures("offer", 1, "A", None, True, MailFigures(sent=4, opened=1)),
            StepVariantFigures("offer", 2, "B", None, True, MailFigures(sent=4, opened=2)),
        ],
        totals=MailFigures(),
    )

    assert step_annotations(report) == {
        "welcome": ["5 sent · 80.0% delivered", "50.0% opened · 25.0% clicked"],
        "offer": [
            "A: 4 sent · 25.0% opened · 0.0% clicked",
            "B: 4 sent · 50.0% opened · 0.0% clicked",
        ],
    }
    markup = str(sequence_chart(steps, stage_names={}, report=report))
    assert "<i>" not in markup
    root = parse(markup)
    boxes = {g.get("data-key"): g for g in root.iter(f"{SVG}g") if g.get("data-key")}
    notes = {
        key: [t.text for a in g.iter(f"{SVG}g") if a.get("class") == "step-annotation" for t in a]
        for key, g in boxes.items()
    }
    assert notes["welcome"] == [None, "5 sent · 80.0% delivered", "50.0% opened · 25.0% clicked"]
    assert notes["wait"] == []
    # every box grows by the two lines, so the rows stay aligned
    heights = {g.find(f"{SVG}rect").get("height") for g in boxes.values()}
    assert heights == {str(78 + 2 * 17 + 6)}


def test_the_diagram_without_annotations_is_the_builders() -> None:
    steps = [{"key": "a", "type": "email", "subject": "S", "html": "x", "next": None}]
    assert sequence_svg(steps, stage_names={}, annotations={}) == sequence_svg(
        steps, stage_names={}
    )
    assert 'height="78"' in sequence_svg(steps, stage_names={})
