"""How the analytics pages show a report: the typed results of analytics.queries turned into
rows and tiles of formatted text for the templates (never a figure computed here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from analytics import charts
from analytics.charts import (
    RATE_LABELS,
    format_count,
    format_decimal,
    format_duration,
    format_money,
    format_p_value,
    format_rate,
    mail_rate,
    step_version_letter,
    variant_letter,
)
from analytics.queries.attribution import AttributionReport
from analytics.queries.base import MailFigures, Money
from analytics.queries.broadcast import BroadcastReport
from analytics.queries.funnel import FunnelReport
from analytics.queries.kpis import Kpis
from analytics.queries.paths import PathFigures, PathsReport
from analytics.queries.sequence import SequenceReport
from analytics.queries.timeseries import TimeSeries
from campaigns.models import Broadcast, Sequence
from core.models import Workspace
from funnel.models import Stage

# How a touchpoint of a conversion path reads (analytics.queries.paths: "<kind>:<name>").
TOUCHPOINT_KINDS = {
    "mail": gettext_lazy("Clicked"),
    "event": gettext_lazy("Event"),
    "stage": gettext_lazy("Stage"),
}


# The mail counts of a table row, in the order the tables show them.
MAIL_COUNTS = (
    ("sent", gettext_lazy("Sent")),
    ("delivered", gettext_lazy("Delivered")),
    ("bounced", gettext_lazy("Bounced")),
    ("opened", gettext_lazy("Opened")),
    ("clicked", gettext_lazy("Clicked")),
    ("machine_opened", gettext_lazy("Machine opens")),
    ("bot_clicked", gettext_lazy("Bot clicks")),
    ("unsubscribed", gettext_lazy("Unsubscribed")),
    ("complained", gettext_lazy("Complaints")),
    ("converted", gettext_lazy("Converted")),
)


# The events of anonymously tracked mails (docs/analytics.md, "Anonymous tracking mode"): their
# columns are shown only where a row has any, so personal tracking looks as before.
ANONYMOUS_COUNTS = (
    ("anonymous_opens", gettext_lazy("Anonymous opens")),
    ("anonymous_clicks", gettext_lazy("Anonymous clicks")),
    ("anonymous_machine_opens", gettext_lazy("Anonymous machine opens")),
    ("anonymous_bot_clicks", gettext_lazy("Anonymous bot clicks")),
)


@dataclass(frozen=True)
class Tile:
    """A headline figure: what, the value, and the previous period's when compared."""

    key: str
    label: str
    value: str
    previous: str | None = None
    hint: str = ""


def _mail_cells(mail: MailFigures) -> dict[str, str]:
    """The counts and the rates as the API reports them: "—" where it has null."""
    cells = {
        name: format_count(getattr(mail, name)) for name, _label in MAIL_COUNTS + ANONYMOUS_COUNTS
    }
    cells.update({rate: format_rate(mail_rate(mail, rate)) for rate in RATE_LABELS})
    return cells


def has_anonymous(*figures: MailFigures | None) -> bool:
    """Whether any of the figures counts an event of an anonymously tracked mail."""
    return any(
        getattr(mail, name)
        for mail in figures
        if mail is not None
        for name, _label in ANONYMOUS_COUNTS
    )


def count_columns(*figures: MailFigures | None) -> tuple[tuple[str, Any], ...]:
    """The count columns of a table of these figures: the anonymous ones only where any."""
    return MAIL_COUNTS + ANONYMOUS_COUNTS if has_anonymous(*figures) else MAIL_COUNTS


def anonymous_counts(mail: MailFigures) -> list[tuple[str, str, str]]:
    """The anonymous events under the mail tiles, each (field, label, count); none without any
    (personal tracking), so the line is not shown."""
    if not has_anonymous(mail):
        return []
    return [
        (name, str(label), format_count(getattr(mail, name))) for name, label in ANONYMOUS_COUNTS
    ]


def mail_columns(
    mail: MailFigures,
    previous: MailFigures | None,
    counts: tuple[tuple[str, Any], ...] = MAIL_COUNTS,
) -> dict[str, list[Any]]:
    """The cells of a table row in the order of the tables' columns: the counts and the rates,
    each (field, value, previous value or None)."""
    cells, before = _mail_cells(mail), _mail_cells(previous) if previous is not None else {}
    return {
        "counts": [(name, cells[name], before.get(name)) for name, _label in counts],
        "rates": [(rate, cells[rate], before.get(rate)) for rate in RATE_LABELS],
    }


def _money_list(money: Iterable[Money]) -> str:
    return " · ".join(format_money(each) for each in money) or format_money(None)


def _tile(
    key: str,
    label: str,
    value: Callable[[Any], str],
    current: Any,
    previous: Any | None,
    hint: str = "",
) -> Tile:
    return Tile(
        key=key,
        label=label,
        value=value(current),
        previous=value(previous) if previous is not None else None,
        hint=hint,
    )


def mail_tiles(mail: MailFigures, previous: MailFigures | None) -> list[Tile]:
    def count(name: str) -> Callable[[MailFigures], str]:
        return lambda figures: format_count(getattr(figures, name))

    def rate(name: str) -> Callable[[MailFigures], str]:
        return lambda figures: format_rate(mail_rate(figures, name))

    return [
        _tile("sent", _("Sent"), count("sent"), mail, previous),
        _tile("delivery_rate", _("Delivery rate"), rate("delivery_rate"), mail, previous),
        _tile(
            "open_rate",
            _("Open rate"),
            rate("open_rate"),
            mail,
            previous,
            _("Unique human openers of delivered mails"),
        ),
        _tile(
            "click_rate",
            _("Click rate"),
            rate("click_rate"),
            mail,
            previous,
            _("Unique human clickers of delivered mails"),
        ),
        _tile(
            "click_to_open_rate",
            _("Click-to-open rate"),
            rate("click_to_open_rate"),
            mail,
            previous,
        ),
        _tile("unsubscribe_rate", _("Unsubscribe rate"), rate("unsubscribe_rate"), mail, previous),
        _tile("bounce_rate", _("Bounce rate"), rate("bounce_rate"), mail, previous),
        _tile("conversion_rate", _("Conversion rate"), rate("conversion_rate"), mail, previous),
    ]


def _decimal(value: Decimal | None) -> str:
    """Money per unit: two decimals unless that would hide a small cost (0.0123)."""
    if value is None:
        return "—"
    return format_decimal(value, 2 if value == value.quantize(Decimal("0.01")) else 4)


def _with_currency(value: Decimal | None, cost: Money | None) -> str:
    if value is None or cost is None:
        return "—"
    return f"{_decimal(value)} {cost.currency}"


def kpi_tiles(kpis: Kpis, previous: Kpis | None, *, revenue: bool) -> list[Tile]:
    tiles = [
        _tile(
            "engagement_rate",
            _("Engagement rate"),
            lambda k: format_rate(k.engagement_rate),
            kpis,
            previous,
            _("Contacts who opened or clicked, of those who got a mail"),
        ),
        _tile("cost", _("Cost"), lambda k: format_money(k.cost), kpis, previous),
        _tile(
            "cost_per_impression",
            _("Cost per impression"),
            lambda k: _with_currency(k.cost_per_impression, k.cost),
            kpis,
            previous,
            _("Cost per unique human opener"),
        ),
        _tile(
            "acquisitions",
            _("Acquisitions"),
            lambda k: format_count(k.acquisitions),
            kpis,
            previous,
            _("Conversions credited by the last human click within 5 days"),
        ),
        _tile(
            "cost_per_acquisition",
            _("Cost per acquisition"),
            lambda k: _with_currency(k.cost_per_acquisition, k.cost),
            kpis,
            previous,
        ),
    ]
    if revenue:
        tiles.append(
            _tile(
                "revenue",
                _("Revenue"),
                lambda k: _money_list(
                    Money(value=r.revenue, currency=r.currency) for r in k.revenue
                ),
                kpis,
                previous,
            )
        )
    return tiles


def revenue_rows(kpis: Kpis) -> list[dict[str, str]]:
    return [
        {
            "currency": row.currency,
            "revenue": format_money(Money(value=row.revenue, currency=row.currency)),
            "orders": format_count(row.orders),
            "customers": format_count(row.customers),
            "average_order_value": _with_money(row.average_order_value, row.currency),
            "transaction_frequency": format_decimal(row.transaction_frequency, 2),
            "customer_lifetime_value": _with_money(row.customer_lifetime_value, row.currency),
        }
        for row in kpis.revenue
    ]


def _with_money(value: Decimal | None, currency: str) -> str:
    return format_money(Money(value=value, currency=currency)) if value is not None else "—"


def _credit_label(key: tuple[str, ...], names: dict[str, str], varied: set[str]) -> str:
    """A credited source for people, from its key (analytics.queries.attribution): a stage,
    a broadcast (with its version when it had an A/B test), or a sequence's step (with its
    version when the step had variants)."""
    kind, source, *rest = key
    name = names.get(source, source)
    if kind == "stage":
        return names.get(source, "") or _("(no stage)")
    if kind == "broadcast":
        if rest and source in varied:
            return _("%(name)s · version %(letter)s") % {
                "name": name,
                "letter": variant_letter(int(rest[0])),
            }
        return name
    label = f"{name} · {rest[0]}" if rest else name
    if len(rest) > 1 and int(rest[1]) > 0:
        label = _("%(name)s · version %(letter)s") % {
            "name": label,
            "letter": step_version_letter(int(rest[1])),
        }
    return label


def _attribution_rows(report: AttributionReport, workspace: Workspace) -> list[dict[str, str]]:
    ids = {credit.key[1] for credit in report.credits if credit.key[1]}
    names: dict[str, str] = {}
    varied: set[str] = set()
    for pk, name in Sequence.objects.filter(workspace=workspace, pk__in=ids).values_list(
        "pk", "name"
    ):
        names[str(pk)] = name
    for pk, name, variants in Broadcast.objects.filter(workspace=workspace, pk__in=ids).values_list(
        "pk", "name", "variants"
    ):
        names[str(pk)] = name
        if variants:
            varied.add(str(pk))
    for pk, name in Stage.objects.filter(funnel__workspace=workspace, pk__in=ids).values_list(
        "pk", "name"
    ):
        names[str(pk)] = name
    rows = []
    for credit in report.credits:
        conversions = credit.conversions
        rows.append(
            {
                "label": _credit_label(credit.key, names, varied),
                "conversions": format_count(conversions)
                if conversions == conversions.to_integral_value()
                else format_decimal(conversions, 2),
                "revenue": _money_list(credit.revenue_money),
                "interactions": format_count(credit.interactions),
                "conversion_rate": format_rate(credit.conversion_rate),
            }
        )
    return rows


def attribution_context(report: AttributionReport, workspace: Workspace) -> dict[str, Any]:
    sources = {"mail": _("Mail"), "step": _("Step or broadcast"), "stage": _("Stage")}
    return {
        "attribution": report,
        "attribution_source_label": sources.get(report.dimension, report.dimension),
        "attribution_rows": _attribution_rows(report, workspace),
        "attribution_totals": {
            "conversions": format_count(report.conversions),
            "attributed": format_count(report.attributed),
            "unattributed": format_count(report.unattributed),
            "interactions": format_count(report.interactions),
            "conversion_rate": format_rate(report.conversion_rate),
        },
    }


def series_context(series: TimeSeries, rates: list[str]) -> dict[str, Any]:
    points = [*series.points, *(series.previous.points if series.previous else [])]
    return {
        "series": series,
        "rate_chart": charts.rate_chart(series, rates),
        # Some rate is unknown (the API's null): the chart's note says why it has a gap.
        "series_unknown": any(
            mail_rate(point.mail, rate) is None for point in points for rate in RATE_LABELS
        ),
    }


def _touchpoint(step: str) -> dict[str, str]:
    kind, _sep, name = step.partition(":")
    return {"kind": kind, "label": str(TOUCHPOINT_KINDS.get(kind, kind)), "name": name}


def _path_rows(paths: list[PathFigures]) -> list[dict[str, Any]]:
    return [
        {
            "steps": [_touchpoint(step) for step in path.steps],
            "journeys": format_count(path.journeys),
            "conversions": format_count(path.conversions),
            "without_conversion": format_count(path.without_conversion),
            "conversion_rate": format_rate(path.conversion_rate),
        }
        for path in paths
    ]


def paths_context(report: PathsReport) -> dict[str, Any]:
    return {
        "paths": report,
        "paths_totals": {
            "journeys": format_count(report.journeys),
            "conversions": format_count(report.conversions),
            "conversion_rate": format_rate(report.conversion_rate),
        },
        "converting_paths": _path_rows(report.converting),
        "non_converting_paths": _path_rows(report.non_converting),
    }


def goal_tiles(report: FunnelReport) -> list[Tile]:
    goal, previous = report.goal, report.previous.goal if report.previous else None
    return [
        _tile(
            "conversions", _("Conversions"), lambda g: format_count(g.conversions), goal, previous
        ),
        _tile(
            "goal_conversion_rate",
            _("Conversion rate"),
            lambda g: format_rate(g.conversion_rate),
            goal,
            previous,
            _("Conversions per contact who was in the funnel by the end of the period"),
        ),
        _tile("revenue", _("Revenue"), lambda g: _money_list(g.revenue), goal, previous),
        _tile(
            "contacts",
            _("Contacts in the funnel"),
            lambda g: format_count(g.contacts),
            goal,
            previous,
        ),
    ]


def stage_rows(report: FunnelReport) -> list[dict[str, Any]]:
    previous = {
        stage.stage_id: stage for stage in (report.previous.stages if report.previous else [])
    }
    rows = []
    for stage in report.stages:
        cells = {
            "entered": format_count(stage.entered),
            "current": format_count(stage.current),
            "advanced": format_count(stage.advanced),
            "advance_rate": format_rate(stage.advance_rate),
            "converted": format_count(stage.converted),
            "conversion_rate": format_rate(stage.conversion_rate),
            "drop_off": format_count(stage.drop_off),
            "drop_off_rate": format_rate(stage.drop_off_rate),
            "median_time_in_stage": format_duration(stage.median_time_in_stage_seconds),
        }
        before = previous.get(stage.stage_id)
        rows.append(
            {
                "stage": stage,
                "cells": cells,
                "mail": _mail_cells(stage.mail),
                "previous": {
                    "entered": format_count(before.entered),
                    "advance_rate": format_rate(before.advance_rate),
                    "conversion_rate": format_rate(before.conversion_rate),
                    "drop_off": format_count(before.drop_off),
                    "mail": _mail_cells(before.mail),
                }
                if before is not None
                else None,
            }
        )
    return rows


def step_rows(
    report: SequenceReport, stage_names: dict[str, str], counts: tuple[tuple[str, Any], ...]
) -> list[dict[str, Any]]:
    previous = {
        (step.step_key, step.variant): step
        for step in (report.previous.steps if report.previous else [])
    }
    rows = []
    for step in report.steps:
        before = previous.get((step.step_key, step.variant))
        rows.append(
            {
                "step": step,
                "version": step_version_letter(step.variant),
                "stage": stage_names.get(step.stage_id or "", ""),
                **mail_columns(step.mail, before.mail if before is not None else None, counts),
            }
        )
    rows.append(
        {
            "step": None,
            **mail_columns(
                report.totals, report.previous.totals if report.previous else None, counts
            ),
        }
    )
    return rows


def progress_cells(report: BroadcastReport) -> dict[str, str]:
    return {
        "audience": format_count(report.audience),
        "queued": format_count(report.queued),
        "sent": format_count(report.mail.sent),
        "failed": format_count(report.failed),
        "cancelled": format_count(report.cancelled),
        "percent": format_count(report.percent),
    }


def ab_context(report: BroadcastReport) -> dict[str, Any]:
    ab_test = report.ab_test
    if ab_test is None:
        return {"ab_test": None}
    return {
        "ab_test": ab_test,
        "ab_chart": charts.ab_chart(ab_test),
        "ab_note": charts.ab_note(ab_test),
        "ab_metric": RATE_LABELS.get(ab_test.metric, ab_test.metric),
        "ab_p_value": format_p_value(ab_test.p_value),
        "ab_z": format_decimal(ab_test.z, 3),
        "ab_winner": variant_letter(ab_test.winner) if ab_test.winner is not None else None,
        "ab_rows": [
            {
                "version": variant_letter(variant.variant),
                "variant": variant,
                "sent": format_count(variant.sent),
                "delivered": format_count(variant.delivered),
                "successes": format_count(variant.successes),
                "rate": format_rate(variant.rate),
            }
            for variant in ab_test.variants
        ],
    }
