"""Analytics pages: the dashboard at /, the overview of the workspace (KPIs, rates over time,
attribution) and the reports of one funnel, sequence or broadcast, with their CSV downloads.

Every figure comes from a query class of analytics.queries, the same ones the API and the CSV
exports run, so a page can never disagree with them: the views parse the request (the period
is validated by Period.parse, exactly as in the API), run the queries and turn the typed
results into rows of formatted text for the templates. They format; they never compute a
figure. The charts are drawn by analytics.charts from the same results.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django import forms
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext_lazy

from analytics import charts, exports
from analytics.api.common import csv_response
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
from analytics.queries.attribution import MAX_WINDOW_DAYS, AttributionQuery, AttributionReport
from analytics.queries.base import MAX_DAYS, MailFigures, Money, Period
from analytics.queries.broadcast import BroadcastReport, BroadcastReportQuery
from analytics.queries.funnel import FunnelReport, FunnelReportQuery
from analytics.queries.kpis import KpiQuery, Kpis
from analytics.queries.paths import MAX_LIMIT, ConversionPathsQuery, PathFigures, PathsReport
from analytics.queries.sequence import SequenceReport, SequenceReportQuery
from analytics.queries.timeseries import TimeSeries, TimeSeriesQuery
from analytics.rollups import CONVERSION_WINDOW
from campaigns.models import Broadcast, Sequence
from contacts.models import Contact, ContactStatus
from core.exceptions import ApplicationError
from core.models import Membership, Workspace
from core.permissions import workspace_view
from funnel.models import Funnel, Stage

Model = TypeVar("Model")

ATTRIBUTION_MODELS = [
    ("last_click", gettext_lazy("Last click")),
    ("first_touch", gettext_lazy("First click")),
    ("linear", gettext_lazy("Linear (shared evenly)")),
]
ATTRIBUTION_DIMENSIONS = [
    ("mail", gettext_lazy("Mails")),
    ("step", gettext_lazy("Steps and broadcasts")),
    ("stage", gettext_lazy("Funnel stages")),
]
INTERVALS = [("day", gettext_lazy("Days")), ("week", gettext_lazy("Weeks"))]
FORM_ID = "report-form"
PATHS_SHOWN = 10
# How a touchpoint of a conversion path reads (analytics.queries.paths: "<kind>:<name>").
TOUCHPOINT_KINDS = {
    "mail": gettext_lazy("Clicked"),
    "event": gettext_lazy("Event"),
    "stage": gettext_lazy("Stage"),
}
# What a page shows when its query string does not say (the inputs show these, too).
FORM_DEFAULTS = {
    "interval": "day",
    "model": "last_click",
    "window_days": str(CONVERSION_WINDOW.days),
    "dimension": "mail",
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


def _today() -> dt.date:
    """Today as the rollups count days: in UTC (the API's default period ends the same day)."""
    return timezone.now().date()


def _in_form(widget: forms.Widget) -> forms.Widget:
    # Controls that sit next to their chart still belong to the one GET form of the page.
    widget.attrs["form"] = FORM_ID
    return widget


class ReportForm(forms.Form):
    """The query string of a report page: ?from=&to= (ISO days, like the API), compare, the
    interval and rates of the chart, and the attribution model and window.

    The period is parsed by Period.parse, the API's own parser, so a page refuses exactly the
    periods the API refuses, with the same message, next to the field it names."""

    compare = forms.BooleanField(
        label=gettext_lazy("Compare with the previous period"), required=False
    )
    interval = forms.ChoiceField(
        label=gettext_lazy("Per"), choices=INTERVALS, required=False, widget=forms.Select
    )
    rates = forms.MultipleChoiceField(
        label=gettext_lazy("Rates"),
        choices=list(RATE_LABELS.items()),
        required=False,
        widget=_in_form(forms.CheckboxSelectMultiple()),
    )
    model = forms.ChoiceField(
        label=gettext_lazy("Model"),
        choices=ATTRIBUTION_MODELS,
        required=False,
        widget=_in_form(forms.Select()),
    )
    window_days = forms.IntegerField(
        label=gettext_lazy("Window (days)"),
        min_value=1,
        max_value=MAX_WINDOW_DAYS,
        required=False,
        widget=_in_form(forms.NumberInput(attrs={"class": "narrow"})),
    )
    dimension = forms.ChoiceField(
        label=gettext_lazy("Credit to"),
        choices=ATTRIBUTION_DIMENSIONS,
        required=False,
        widget=_in_form(forms.Select()),
    )

    def __init__(self, data: QueryDict, *, today: dt.date, period_optional: bool = False) -> None:
        super().__init__(data)
        self.today = today
        self.period_optional = period_optional
        date = {"type": "date", "max": today.isoformat()}
        # "from" is a Python keyword: these two cannot be declared as class attributes.
        self.fields = {
            "from": forms.CharField(
                label=pgettext_lazy("period", "From"),
                required=False,
                widget=forms.DateInput(attrs=date),
            ),
            "to": forms.CharField(
                label=pgettext_lazy("period", "To"),
                required=False,
                widget=forms.DateInput(attrs=date),
            ),
            **self.fields,
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("from"), cleaned.get("to")
        cleaned["period"] = None
        if not (self.period_optional and not start and not end):
            try:
                cleaned["period"] = Period.parse(start=start, end=end, today=self.today)
            except ApplicationError as exc:
                self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        cleaned["interval"] = cleaned.get("interval") or "day"
        cleaned["rates"] = cleaned.get("rates") or list(charts.DEFAULT_RATES)
        cleaned["model"] = cleaned.get("model") or "last_click"
        cleaned["window_days"] = cleaned.get("window_days") or CONVERSION_WINDOW.days
        cleaned["dimension"] = cleaned.get("dimension") or "mail"
        return cleaned


def _report_form(
    request: HttpRequest, *, period_optional: bool = False
) -> tuple[ReportForm, dict[str, Any] | None]:
    """The bound form (the default period filled in, so the date fields show what is shown)
    and its cleaned data, or None when it is invalid."""
    today = _today()
    data = request.GET.copy()
    if not period_optional and not data.get("from") and not data.get("to"):
        default = Period.parse(today=today)
        data["from"], data["to"] = default.start.isoformat(), default.end.isoformat()
    for name, value in FORM_DEFAULTS.items():
        if not data.get(name):
            data[name] = value
    form = ReportForm(data, today=today, period_optional=period_optional)
    return form, (form.cleaned_data if form.is_valid() else None)


def _export_query(options: dict[str, Any] | None) -> str:
    """The query string of the CSV link: the period and the comparison of the page."""
    query = QueryDict(mutable=True)
    if options is not None and options["period"] is not None:
        query["from"] = options["period"].start.isoformat()
        query["to"] = options["period"].end.isoformat()
        if options["compare"]:
            query["compare"] = "true"
    return query.urlencode()


def _section_export(
    report: str, options: dict[str, Any], *, period: Period | None = None, **scope: uuid.UUID
) -> str:
    """The CSV link of a section of a page (time series, attribution, KPIs, paths): the same
    query as the section, with its scope (funnel, sequence or broadcast)."""
    chosen = period or options["period"]
    query = QueryDict(mutable=True)
    query.update(
        {
            "from": chosen.start.isoformat(),
            "to": chosen.end.isoformat(),
            "interval": options["interval"],
            "model": options["model"],
            "window_days": str(options["window_days"]),
            "dimension": options["dimension"],
            **{name: str(value) for name, value in scope.items()},
        }
    )
    if options["compare"]:
        query["compare"] = "true"
    return f"{reverse('report-section-csv', args=[report])}?{query.urlencode()}"


def _or_404(lookup: Callable[[], Model]) -> Model:
    """Run a query class (or lookup) of the workspace: another workspace's object is a 404."""
    try:
        return lookup()
    except (
        Funnel.DoesNotExist,
        Sequence.DoesNotExist,
        Broadcast.DoesNotExist,
        Stage.DoesNotExist,
    ) as exc:
        raise Http404 from exc


# --- rows of formatted figures for the templates


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


def _has_anonymous(*figures: MailFigures | None) -> bool:
    """Whether any of the figures counts an event of an anonymously tracked mail."""
    return any(
        getattr(mail, name)
        for mail in figures
        if mail is not None
        for name, _label in ANONYMOUS_COUNTS
    )


def _count_columns(*figures: MailFigures | None) -> tuple[tuple[str, Any], ...]:
    """The count columns of a table of these figures: the anonymous ones only where any."""
    return MAIL_COUNTS + ANONYMOUS_COUNTS if _has_anonymous(*figures) else MAIL_COUNTS


def _anonymous_counts(mail: MailFigures) -> list[tuple[str, str, str]]:
    """The anonymous events under the mail tiles, each (field, label, count); none without any
    (personal tracking), so the line is not shown."""
    if not _has_anonymous(mail):
        return []
    return [
        (name, str(label), format_count(getattr(mail, name))) for name, label in ANONYMOUS_COUNTS
    ]


def _mail_columns(
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


def _mail_tiles(mail: MailFigures, previous: MailFigures | None) -> list[Tile]:
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


def _kpi_tiles(kpis: Kpis, previous: Kpis | None, *, revenue: bool) -> list[Tile]:
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


def _revenue_rows(kpis: Kpis) -> list[dict[str, str]]:
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


def _attribution_context(report: AttributionReport, workspace: Workspace) -> dict[str, Any]:
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


def _series_context(series: TimeSeries, rates: list[str]) -> dict[str, Any]:
    points = [*series.points, *(series.previous.points if series.previous else [])]
    return {
        "series": series,
        "rate_chart": charts.rate_chart(series, rates),
        # Some rate is unknown (the API's null): the chart's note says why it has a gap.
        "series_unknown": any(
            mail_rate(point.mail, rate) is None for point in points for rate in RATE_LABELS
        ),
    }


def _render_report(
    request: HttpRequest,
    template: str,
    form: ReportForm,
    context: dict[str, Any],
) -> HttpResponse:
    context.update(
        {
            "form": form,
            "form_id": FORM_ID,
            "period": form.cleaned_data.get("period")
            if form.is_bound and not form.errors
            else None,
            "max_days": MAX_DAYS,
        }
    )
    return render(request, template, context, status=400 if form.errors else 200)


# --- the dashboard


@workspace_view()
def dashboard(request: HttpRequest, membership: Membership) -> HttpResponse:
    """The workspace at a glance: contacts by status, the headline mail figures and KPIs of the
    last 30 days against the 30 before, the open and click rates per day, and the reports."""
    workspace = membership.workspace
    counts = dict(
        Contact.objects.for_workspace(workspace)
        .values_list("status")
        .annotate(count=Count("pk"))
        .values_list("status", "count")
    )
    status_counts = [(value, label, counts.get(value, 0)) for value, label in ContactStatus.choices]
    period = Period.parse(today=_today())
    kpis = KpiQuery(workspace=workspace, period=period).run()
    previous = KpiQuery(workspace=workspace, period=period.previous()).run()
    series = TimeSeriesQuery(workspace=workspace, period=period, compare=True).run()
    context = {
        "status_counts": status_counts,
        "contact_count": sum(counts.values()),
        "period": period,
        "mail_tiles": _mail_tiles(kpis.mail, previous.mail)[:4],
        "mail_anonymous": _anonymous_counts(kpis.mail),
        "kpi_tiles": [
            tile
            for tile in _kpi_tiles(kpis, previous, revenue=True)
            if tile.key in ("engagement_rate", "acquisitions", "revenue")
        ],
        "rate_chart": charts.rate_chart(series, ("open_rate", "click_rate")),
        **_report_links(workspace),
    }
    return render(request, "analytics/dashboard.html", context)


def _report_links(workspace: Workspace) -> dict[str, Any]:
    return {
        "funnels": list(Funnel.objects.filter(workspace=workspace).order_by("name")),
        "sequences": list(Sequence.objects.filter(workspace=workspace).order_by("name")),
        "broadcasts": list(Broadcast.objects.filter(workspace=workspace).order_by("-created_at")),
    }


# --- the overview: KPIs, rates over time and attribution of the whole workspace


@workspace_view()
def overview(request: HttpRequest, membership: Membership) -> HttpResponse:
    """The whole workspace over a period: mail figures, KPIs with revenue, rates over time and
    attribution, and the way to each funnel's, sequence's and broadcast's report."""
    workspace = membership.workspace
    form, options = _report_form(request)
    context: dict[str, Any] = _report_links(workspace)
    if options is not None:
        period = options["period"]
        kpis = KpiQuery(workspace=workspace, period=period).run()
        previous = (
            KpiQuery(workspace=workspace, period=period.previous()).run()
            if options["compare"]
            else None
        )
        series = TimeSeriesQuery(
            workspace=workspace,
            period=period,
            interval=options["interval"],
            compare=options["compare"],
        ).run()
        attribution = AttributionQuery(
            workspace=workspace,
            period=period,
            model=options["model"],
            window_days=options["window_days"],
            dimension=options["dimension"],
        ).run()
        context.update(
            {
                "kpis": kpis,
                "mail_tiles": _mail_tiles(kpis.mail, previous.mail if previous else None),
                "mail_anonymous": _anonymous_counts(kpis.mail),
                "kpi_tiles": _kpi_tiles(kpis, previous, revenue=False),
                "revenue_rows": _revenue_rows(kpis),
                "revenue_event": "purchase",
                "series_export_url": _section_export("timeseries", options),
                "kpis_export_url": _section_export("kpis", options),
                "attribution_export_url": _section_export("attribution", options),
                **_series_context(series, options["rates"]),
                **_attribution_context(attribution, workspace),
            }
        )
    return _render_report(request, "analytics/overview.html", form, context)


# --- a funnel


@workspace_view()
def funnel_report(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    """Where the funnel narrows and why: the goal, the narrowing bars, stages and their mails,
    the rates over time, attribution to stages and the conversion paths (API.md's funnel
    report and the reports of docs/analytics.md, for one funnel)."""
    workspace = membership.workspace
    funnel = _or_404(lambda: Funnel.objects.get(workspace=workspace, pk=pk))
    form, options = _report_form(request)
    context: dict[str, Any] = {"funnel": funnel, "export_query": _export_query(options)}
    if options is not None:
        period = options["period"]
        report = _or_404(
            lambda: FunnelReportQuery(
                workspace=workspace, funnel_id=funnel.pk, period=period, compare=options["compare"]
            ).run()
        )
        series = TimeSeriesQuery(
            workspace=workspace,
            period=period,
            interval=options["interval"],
            funnel_id=funnel.pk,
            compare=options["compare"],
        ).run()
        attribution = AttributionQuery(
            workspace=workspace,
            period=period,
            model=options["model"],
            window_days=options["window_days"],
            dimension="stage",
            funnel_id=funnel.pk,
        ).run()
        paths = ConversionPathsQuery(
            workspace=workspace, funnel_id=funnel.pk, period=period, limit=PATHS_SHOWN
        ).run()
        context.update(
            {
                "report": report,
                **_paths_context(paths),
                "series_export_url": _section_export("timeseries", options, funnel=funnel.pk),
                "attribution_export_url": _section_export("attribution", options, funnel=funnel.pk),
                "paths_export_url": _section_export("paths", options, funnel=funnel.pk),
                "funnel_chart": charts.funnel_chart(report),
                "goal_tiles": _goal_tiles(report),
                "stage_rows": _stage_rows(report),
                "stage_anonymous": _has_anonymous(
                    *(stage.mail for stage in report.stages),
                    *(stage.mail for stage in (report.previous.stages if report.previous else [])),
                ),
                **_series_context(series, options["rates"]),
                **_attribution_context(attribution, workspace),
            }
        )
    return _render_report(request, "analytics/funnel.html", form, context)


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


def _paths_context(report: PathsReport) -> dict[str, Any]:
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


def _goal_tiles(report: FunnelReport) -> list[Tile]:
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


def _stage_rows(report: FunnelReport) -> list[dict[str, Any]]:
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


@workspace_view()
def funnel_report_csv(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    """The funnel report as CSV: the rows of analytics.exports, as the API's export."""
    form, options = _report_form(request)
    if options is None:
        return _bad_request(form)
    report = _or_404(
        lambda: FunnelReportQuery(
            workspace=membership.workspace,
            funnel_id=pk,
            period=options["period"],
            compare=options["compare"],
        ).run()
    )
    return csv_response(exports.funnel_report_rows(report), filename="funnel-report.csv")


def _bad_request(form: ReportForm) -> HttpResponse:
    errors = "; ".join(str(error) for errors in form.errors.values() for error in errors)
    return HttpResponseBadRequest(errors, content_type="text/plain; charset=utf-8")


# --- a sequence


@workspace_view()
def sequence_report(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    """Every step and version of a sequence: the builder's diagram with each step's rates, the
    counts and rates apart (machines and bots shown, never in a rate), rates over time, costs
    and the conversions credited to its mails."""
    workspace = membership.workspace
    sequence = _or_404(
        lambda: Sequence.objects.select_related("funnel").get(workspace=workspace, pk=pk)
    )
    form, options = _report_form(request)
    context: dict[str, Any] = {"sequence": sequence, "export_query": _export_query(options)}
    if options is not None:
        period = options["period"]
        report = _or_404(
            lambda: SequenceReportQuery(
                workspace=workspace,
                sequence_id=sequence.pk,
                period=period,
                compare=options["compare"],
            ).run()
        )
        series = TimeSeriesQuery(
            workspace=workspace,
            period=period,
            interval=options["interval"],
            sequence_id=sequence.pk,
            compare=options["compare"],
        ).run()
        kpis = KpiQuery(workspace=workspace, period=period, sequence_id=sequence.pk).run()
        previous_kpis = (
            KpiQuery(workspace=workspace, period=period.previous(), sequence_id=sequence.pk).run()
            if options["compare"]
            else None
        )
        attribution = AttributionQuery(
            workspace=workspace,
            period=period,
            model=options["model"],
            window_days=options["window_days"],
            dimension="mail",
            sequence_id=sequence.pk,
        ).run()
        counts = _count_columns(report.totals, report.previous.totals if report.previous else None)
        stage_names = {
            str(stage_id): name
            for stage_id, name in Stage.objects.filter(funnel__workspace=workspace).values_list(
                "pk", "name"
            )
        }
        context.update(
            {
                "report": report,
                "series_export_url": _section_export("timeseries", options, sequence=sequence.pk),
                "kpis_export_url": _section_export("kpis", options, sequence=sequence.pk),
                "attribution_export_url": _section_export(
                    "attribution", options, sequence=sequence.pk
                ),
                "diagram": charts.sequence_chart(
                    sequence.steps or [], stage_names=stage_names, report=report
                ),
                "mail_tiles": _mail_tiles(
                    report.totals, report.previous.totals if report.previous else None
                ),
                "mail_anonymous": _anonymous_counts(report.totals),
                "kpi_tiles": _kpi_tiles(kpis, previous_kpis, revenue=False),
                "step_rows": _step_rows(report, stage_names, counts),
                "mail_counts": counts,
                "rate_labels": list(RATE_LABELS.items()),
                **_series_context(series, options["rates"]),
                **_attribution_context(attribution, workspace),
            }
        )
    return _render_report(request, "analytics/sequence.html", form, context)


def _step_rows(
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
                **_mail_columns(step.mail, before.mail if before is not None else None, counts),
            }
        )
    rows.append(
        {
            "step": None,
            **_mail_columns(
                report.totals, report.previous.totals if report.previous else None, counts
            ),
        }
    )
    return rows


@workspace_view()
def sequence_report_csv(
    request: HttpRequest, membership: Membership, pk: uuid.UUID
) -> HttpResponse:
    """The sequence report as CSV: the rows of analytics.exports, as the API's export."""
    form, options = _report_form(request)
    if options is None:
        return _bad_request(form)
    report = _or_404(
        lambda: SequenceReportQuery(
            workspace=membership.workspace,
            sequence_id=pk,
            period=options["period"],
            compare=options["compare"],
        ).run()
    )
    return csv_response(exports.sequence_report_rows(report), filename="sequence-report.csv")


# --- a broadcast


def _broadcast_kpi_period(broadcast: Broadcast, today: dt.date) -> Period:
    """Without a chosen period the broadcast report covers its whole life; its KPIs need days,
    so they cover the days since it started (at most the longest period a report allows)."""
    started = (broadcast.started_at or broadcast.created_at).astimezone(dt.UTC).date()
    earliest = today - dt.timedelta(days=MAX_DAYS - 1)
    return Period.parse(start=max(min(started, today), earliest), end=today, today=today)


@workspace_view()
def broadcast_report(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    """A broadcast's progress, figures per version and its A/B test with the significance the
    query computed. Without dates it covers every mail of the broadcast, as the API does."""
    workspace = membership.workspace
    broadcast = _or_404(lambda: Broadcast.objects.get(workspace=workspace, pk=pk))
    form, options = _report_form(request, period_optional=True)
    context: dict[str, Any] = {"broadcast": broadcast, "export_query": _export_query(options)}
    if options is not None:
        period: Period | None = options["period"]

        def report_of(chosen: Period | None) -> BroadcastReport:
            return BroadcastReportQuery(
                workspace=workspace, broadcast_id=broadcast.pk, period=chosen
            ).run()

        report = _or_404(lambda: report_of(period))
        previous = (
            report_of(period.previous()) if period is not None and options["compare"] else None
        )
        counts = _count_columns(report.mail)
        kpi_period = period or _broadcast_kpi_period(broadcast, _today())
        kpis = KpiQuery(workspace=workspace, period=kpi_period, broadcast_id=broadcast.pk).run()
        previous_kpis = (
            KpiQuery(
                workspace=workspace, period=kpi_period.previous(), broadcast_id=broadcast.pk
            ).run()
            if previous is not None
            else None
        )
        context.update(
            {
                "report": report,
                "previous_report": previous,
                "kpis_export_url": _section_export(
                    "kpis", options, period=kpi_period, broadcast=broadcast.pk
                ),
                "kpi_period": kpi_period,
                "progress": _progress_cells(report),
                "mail_tiles": _mail_tiles(report.mail, previous.mail if previous else None),
                "mail_anonymous": _anonymous_counts(report.mail),
                "kpi_tiles": _kpi_tiles(kpis, previous_kpis, revenue=False),
                "variant_rows": [
                    {
                        "variant": variant,
                        "version": variant_letter(variant.variant),
                        **_mail_columns(variant.mail, None, counts),
                    }
                    for variant in report.variants
                ],
                "rate_labels": list(RATE_LABELS.items()),
                "mail_counts": counts,
                **_ab_context(report),
            }
        )
    return _render_report(request, "analytics/broadcast.html", form, context)


def _progress_cells(report: BroadcastReport) -> dict[str, str]:
    return {
        "audience": format_count(report.audience),
        "queued": format_count(report.queued),
        "sent": format_count(report.mail.sent),
        "failed": format_count(report.failed),
        "cancelled": format_count(report.cancelled),
        "percent": format_count(report.percent),
    }


def _ab_context(report: BroadcastReport) -> dict[str, Any]:
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


@workspace_view()
def broadcast_report_csv(
    request: HttpRequest, membership: Membership, pk: uuid.UUID
) -> HttpResponse:
    """The broadcast report as CSV: the rows of analytics.exports, as the API's export."""
    form, options = _report_form(request, period_optional=True)
    if options is None:
        return _bad_request(form)
    report = _or_404(
        lambda: BroadcastReportQuery(
            workspace=membership.workspace, broadcast_id=pk, period=options["period"]
        ).run()
    )
    return csv_response(exports.broadcast_report_rows(report), filename="broadcast-report.csv")


# --- the CSV of a section: time series, attribution, KPIs, conversion paths

SECTION_ROWS: dict[str, Callable[[Any], Iterable[list[str]]]] = {
    "timeseries": exports.timeseries_rows,
    "attribution": exports.attribution_rows,
    "kpis": exports.kpi_rows,
    "paths": exports.paths_rows,
}
SCOPES = ("funnel", "sequence", "broadcast")


def _scope_of(request: HttpRequest) -> dict[str, uuid.UUID]:
    """?funnel= / ?sequence= / ?broadcast= as ids; a malformed one finds nothing (404)."""
    scope = {}
    for name in SCOPES:
        raw = request.GET.get(name)
        if raw:
            try:
                scope[f"{name}_id"] = uuid.UUID(raw)
            except ValueError as exc:
                raise Http404 from exc
    return scope


def _section(
    report: str, workspace: Workspace, options: dict[str, Any], scope: dict[str, Any]
) -> Any:
    period = options["period"]
    if report == "timeseries":
        return TimeSeriesQuery(
            workspace=workspace,
            period=period,
            interval=options["interval"],
            compare=options["compare"],
            **scope,
        ).run()
    if report == "attribution":
        return AttributionQuery(
            workspace=workspace,
            period=period,
            model=options["model"],
            window_days=options["window_days"],
            dimension=options["dimension"],
            **scope,
        ).run()
    if report == "kpis":
        if "funnel_id" in scope:
            raise Http404
        return KpiQuery(workspace=workspace, period=period, **scope).run()
    if "funnel_id" not in scope or len(scope) > 1:
        raise Http404
    return ConversionPathsQuery(
        workspace=workspace, funnel_id=scope["funnel_id"], period=period, limit=MAX_LIMIT
    ).run()


@workspace_view()
def section_csv(request: HttpRequest, membership: Membership, report: str) -> HttpResponse:
    """A section of a report page as CSV: the rows of analytics.exports for the same query
    class and parameters as the section (and as the API's export of that report)."""
    if report not in SECTION_ROWS:
        raise Http404
    form, options = _report_form(request)
    if options is None:
        return _bad_request(form)
    scope = _scope_of(request)
    try:
        result = _or_404(lambda: _section(report, membership.workspace, options, scope))
    except ApplicationError as exc:
        return HttpResponseBadRequest(exc.message, content_type="text/plain; charset=utf-8")
    return csv_response(SECTION_ROWS[report](result), filename=f"{report}.csv")
