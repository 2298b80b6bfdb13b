"""CSV exports of the reports: the rows of each typed report result, every text cell made safe
for spreadsheets (contacts.exporting.csv_safe: names and subjects are typed by people).

Used by the API's export endpoints and the pages' download links alike. The mail rates are
the API's: a rate it reports as null (unknown under anonymous tracking) is an empty cell, and
the anonymous event counts have their own columns (0 for personal tracking).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from analytics.queries.attribution import AttributionReport
from analytics.queries.base import MailFigures
from analytics.queries.broadcast import BroadcastReport
from analytics.queries.funnel import FunnelReport
from analytics.queries.kpis import Kpis
from analytics.queries.paths import PathsReport
from analytics.queries.sequence import SequenceReport
from analytics.queries.timeseries import TimeSeries
from contacts.exporting import csv_safe

MAIL_COLUMNS = [
    "sent",
    "delivered",
    "bounced",
    "opened",
    "clicked",
    "unsubscribed",
    "complained",
    "converted",
    "machine_opens",
    "bot_clicks",
    "delivery_rate",
    "open_rate",
    "click_rate",
    "click_to_open_rate",
    "bounce_rate",
    "unsubscribe_rate",
    "complaint_rate",
    "conversion_rate",
    "anonymous_opens",
    "anonymous_clicks",
    "anonymous_machine_opens",
    "anonymous_bot_clicks",
]


def _rate(value: float) -> str:
    return f"{value:.6f}"


def _rate_or_empty(value: float | None) -> str:
    """A rate the API may report as null (unknown under anonymous tracking): an empty cell."""
    return "" if value is None else _rate(value)


def _anonymous_cells(mail: MailFigures) -> list[str]:
    return [
        str(mail.anonymous_opens),
        str(mail.anonymous_clicks),
        str(mail.anonymous_machine_opens),
        str(mail.anonymous_bot_clicks),
    ]


def mail_cells(mail: MailFigures) -> list[str]:
    counts = [
        mail.sent,
        mail.delivered,
        mail.bounced,
        mail.opened,
        mail.clicked,
        mail.unsubscribed,
        mail.complained,
        mail.converted,
        mail.machine_opened,
        mail.bot_clicked,
    ]
    # The API's values: the rates over unique openers or clickers are unknown (empty) where
    # anonymously tracked mails were opened or clicked by people.
    rates = [
        mail.delivery_rate,
        mail.open_rate_or_none,
        mail.click_rate_or_none,
        mail.click_to_open_rate_or_none,
        mail.bounce_rate,
        mail.unsubscribe_rate,
        mail.complaint_rate,
        mail.conversion_rate_or_none,
    ]
    return [
        *[str(count) for count in counts],
        *[_rate_or_empty(rate) for rate in rates],
        *_anonymous_cells(mail),
    ]


FUNNEL_COLUMNS = [
    "from",
    "to",
    "stage",
    "key",
    "position",
    "entered",
    "current",
    "advanced",
    "converted",
    "conversion_rate",
    "drop_off",
    "drop_off_rate",
    "median_time_in_stage_seconds",
    "loses_most",
    "sent",
    "delivered",
    "delivery_rate",
    "open_rate",
    "click_rate",
    "unsubscribe_rate",
    "anonymous_opens",
    "anonymous_clicks",
    "anonymous_machine_opens",
    "anonymous_bot_clicks",
]
GOAL_COLUMNS = ["from", "to", "goal_event", "conversions", "contacts", "conversion_rate"]


def funnel_report_rows(report: FunnelReport) -> Iterator[list[str]]:
    """One row per stage (and per stage of the previous period when compared), then a blank
    row and the goal with its revenue per currency."""
    yield list(FUNNEL_COLUMNS)
    reports = [report, *([report.previous] if report.previous else [])]
    for each in reports:
        for stage in each.stages:
            yield [
                each.period.start.isoformat(),
                each.period.end.isoformat(),
                csv_safe(stage.name),
                csv_safe(stage.key),
                str(stage.position),
                str(stage.entered),
                str(stage.current),
                str(stage.advanced),
                str(stage.converted),
                _rate(stage.conversion_rate),
                str(stage.drop_off),
                _rate(stage.drop_off_rate),
                ""
                if stage.median_time_in_stage_seconds is None
                else str(stage.median_time_in_stage_seconds),
                "yes" if stage.loses_most else "",
                str(stage.mail.sent),
                str(stage.mail.delivered),
                _rate(stage.mail.delivery_rate),
                _rate_or_empty(stage.mail.open_rate_or_none),
                _rate_or_empty(stage.mail.click_rate_or_none),
                _rate(stage.mail.unsubscribe_rate),
                *_anonymous_cells(stage.mail),
            ]
    yield []
    currencies = sorted({money.currency for each in reports for money in each.goal.revenue})
    yield GOAL_COLUMNS + [f"revenue_{currency}" for currency in currencies]
    for each in reports:
        revenue = {money.currency: money.value for money in each.goal.revenue}
        yield [
            each.period.start.isoformat(),
            each.period.end.isoformat(),
            csv_safe(each.goal.event),
            str(each.goal.conversions),
            str(each.goal.contacts),
            _rate(each.goal.conversion_rate),
            *[str(revenue.get(currency, "0.00")) for currency in currencies],
        ]


def sequence_report_rows(report: SequenceReport) -> Iterator[list[str]]:
    """One row per step and variant, then the totals."""
    yield ["from", "to", "step", "variant", "subject", *MAIL_COLUMNS]
    reports = [report, *([report.previous] if report.previous else [])]
    for each in reports:
        period = [each.period.start.isoformat(), each.period.end.isoformat()]
        for step in each.steps:
            yield [
                *period,
                csv_safe(step.step_key),
                str(step.variant),
                csv_safe(step.subject),
                *mail_cells(step.mail),
            ]
        yield [*period, "(total)", "", "", *mail_cells(each.totals)]


def broadcast_report_rows(report: BroadcastReport) -> Iterator[list[str]]:
    """One row per variant, then the whole broadcast; A/B rate and p-value when tested."""
    ab_rates = {v.variant: v.rate for v in report.ab_test.variants} if report.ab_test else {}
    yield ["variant", "subject", *MAIL_COLUMNS, "ab_sample_rate", "winner"]
    for variant in report.variants:
        yield [
            str(variant.variant),
            csv_safe(variant.subject),
            *mail_cells(variant.mail),
            _rate(ab_rates[variant.variant]) if variant.variant in ab_rates else "",
            "yes" if report.winner == variant.variant else "",
        ]
    yield ["(total)", csv_safe(report.name), *mail_cells(report.mail), "", ""]
    if report.ab_test is not None and report.ab_test.p_value is not None:
        yield []
        yield ["ab_metric", "z", "p_value", "decided_by_chance"]
        yield [
            report.ab_test.metric,
            f"{report.ab_test.z:.6f}",
            f"{report.ab_test.p_value:.6f}",
            "yes" if report.ab_test.decided_by_chance else "no",
        ]


def timeseries_rows(series: TimeSeries) -> Iterator[list[str]]:
    """One row per bucket (and per bucket of the previous period when compared)."""
    yield ["start", "end", "entered", "conversions", *MAIL_COLUMNS]
    for each in [series, *([series.previous] if series.previous else [])]:
        for point in each.points:
            yield [
                point.start.isoformat(),
                point.end.isoformat(),
                str(point.entered),
                str(point.conversions),
                *mail_cells(point.mail),
            ]


def attribution_rows(report: AttributionReport) -> Iterator[list[str]]:
    """One row per credited source, revenue per currency in its own column."""
    currencies = sorted({currency for credit in report.credits for currency in credit.revenue})
    yield [
        "source",
        "conversions",
        "interactions",
        "conversion_rate",
        *[f"revenue_{currency}" for currency in currencies],
    ]
    for credit in report.credits:
        revenue = {money.currency: money.value for money in credit.revenue_money}
        yield [
            csv_safe(credit.label),
            str(credit.conversions.quantize(Decimal("0.0001"))),
            str(credit.interactions),
            _rate(credit.conversion_rate),
            *[str(revenue.get(currency, "0.00")) for currency in currencies],
        ]
    yield [
        "(total)",
        str(report.attributed),
        str(report.interactions),
        _rate(report.conversion_rate),
        *["" for _currency in currencies],
    ]


def kpi_rows(kpis: Kpis) -> Iterator[list[str]]:
    """KPI name and value, one per row."""
    yield ["kpi", "value", "currency"]
    currency = kpis.cost.currency if kpis.cost else ""
    yield ["cost", str(kpis.cost.value) if kpis.cost else "", currency]
    yield ["impressions", str(kpis.impressions), ""]
    yield ["cost_per_impression", _optional(kpis.cost_per_impression), currency]
    yield ["acquisitions", str(kpis.acquisitions), ""]
    yield ["cost_per_acquisition", _optional(kpis.cost_per_acquisition), currency]
    yield ["engagement_rate", _rate(kpis.engagement_rate), ""]
    for revenue in kpis.revenue:
        yield ["revenue", str(revenue.revenue), revenue.currency]
        yield ["average_order_value", _optional(revenue.average_order_value), revenue.currency]
        yield ["transaction_frequency", _rate(revenue.transaction_frequency), ""]
        yield [
            "customer_lifetime_value",
            _optional(revenue.customer_lifetime_value),
            revenue.currency,
        ]


def paths_rows(report: PathsReport) -> Iterator[list[str]]:
    """Converting paths, then paths without a conversion; steps joined with " > "."""
    yield ["kind", "path", "journeys", "conversions", "conversion_rate"]
    for kind, paths in (
        ("converting", report.converting),
        ("non_converting", report.non_converting),
    ):
        for path in paths:
            yield [
                kind,
                csv_safe(" > ".join(path.steps)),
                str(path.journeys),
                str(path.conversions),
                _rate(path.conversion_rate),
            ]


def _optional(value: Decimal | None) -> str:
    return "" if value is None else str(value)
