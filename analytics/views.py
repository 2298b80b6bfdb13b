"""Analytics pages: the dashboard at /, the overview of the workspace (KPIs, rates over time,
attribution) and the reports of one funnel, sequence or broadcast, with their CSV downloads.

Every figure comes from a query class of analytics.queries, the same ones the API and the CSV
exports run, so a page can never disagree with them: the views parse the request (the period
is validated by Period.parse, exactly as in the API), run the queries and hand the typed
results to analytics.presentation, which turns them into rows of formatted text for the
templates; nothing here computes a figure. The charts are drawn by analytics.charts from the
same results.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django import forms
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy, pgettext_lazy

from analytics import charts, exports
from analytics.api.common import csv_response
from analytics.charts import (
    RATE_LABELS,
    variant_letter,
)
from analytics.presentation import (
    ab_context,
    anonymous_counts,
    attribution_context,
    count_columns,
    goal_tiles,
    has_anonymous,
    kpi_tiles,
    mail_columns,
    mail_tiles,
    paths_context,
    progress_cells,
    revenue_rows,
    series_context,
    stage_rows,
    step_rows,
)
from analytics.queries.attribution import MAX_WINDOW_DAYS, AttributionQuery
from analytics.queries.base import MAX_DAYS, Period
from analytics.queries.broadcast import BroadcastReport, BroadcastReportQuery
from analytics.queries.funnel import FunnelReportQuery
from analytics.queries.kpis import KpiQuery
from analytics.queries.paths import MAX_LIMIT, ConversionPathsQuery
from analytics.queries.sequence import SequenceReportQuery
from analytics.queries.timeseries import TimeSeriesQuery
from analytics.rollups import CONVERSION_WINDOW, rollups_fresh
from campaigns.models import Broadcast, Sequence
from contacts.models import Contact, ContactStatus
from core.exceptions import ApplicationError
from core.models import Membership, Workspace
from core.permissions import workspace_view
from funnel.models import Funnel, Stage

Model = TypeVar("Model")
Result = TypeVar("Result")

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
# What a page shows when its query string does not say (the inputs show these, too).
FORM_DEFAULTS = {
    "interval": "day",
    "model": "last_click",
    "window_days": str(CONVERSION_WINDOW.days),
    "dimension": "mail",
}


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


def _fresh_rollups(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A report page: the workspace's rollups are folded once for all of its queries."""

    @functools.wraps(view)
    def fresh(request: HttpRequest, membership: Membership, *args: Any, **kwargs: Any) -> Any:
        with rollups_fresh(membership.workspace_id):
            return view(request, membership, *args, **kwargs)

    return fresh


# --- the dashboard


@workspace_view()
@_fresh_rollups
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
        "mail_tiles": mail_tiles(kpis.mail, previous.mail)[:4],
        "mail_anonymous": anonymous_counts(kpis.mail),
        "kpi_tiles": [
            tile
            for tile in kpi_tiles(kpis, previous, revenue=True)
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
@_fresh_rollups
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
                "mail_tiles": mail_tiles(kpis.mail, previous.mail if previous else None),
                "mail_anonymous": anonymous_counts(kpis.mail),
                "kpi_tiles": kpi_tiles(kpis, previous, revenue=False),
                "revenue_rows": revenue_rows(kpis),
                "revenue_event": "purchase",
                "series_export_url": _section_export("timeseries", options),
                "kpis_export_url": _section_export("kpis", options),
                "attribution_export_url": _section_export("attribution", options),
                **series_context(series, options["rates"]),
                **attribution_context(attribution, workspace),
            }
        )
    return _render_report(request, "analytics/overview.html", form, context)


# --- a funnel


@workspace_view()
@_fresh_rollups
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
                **paths_context(paths),
                "series_export_url": _section_export("timeseries", options, funnel=funnel.pk),
                "attribution_export_url": _section_export("attribution", options, funnel=funnel.pk),
                "paths_export_url": _section_export("paths", options, funnel=funnel.pk),
                "funnel_chart": charts.funnel_chart(report),
                "goal_tiles": goal_tiles(report),
                "stage_rows": stage_rows(report),
                "stage_anonymous": has_anonymous(
                    *(stage.mail for stage in report.stages),
                    *(stage.mail for stage in (report.previous.stages if report.previous else [])),
                ),
                **series_context(series, options["rates"]),
                **attribution_context(attribution, workspace),
            }
        )
    return _render_report(request, "analytics/funnel.html", form, context)


@workspace_view()
def funnel_report_csv(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    """The funnel report as CSV: the rows of analytics.exports, as the API's export."""
    return _report_csv(
        request,
        lambda options: FunnelReportQuery(
            workspace=membership.workspace,
            funnel_id=pk,
            period=options["period"],
            compare=options["compare"],
        ).run(),
        exports.funnel_report_rows,
        filename="funnel-report.csv",
    )


def _bad_request(form: ReportForm) -> HttpResponse:
    errors = "; ".join(str(error) for errors in form.errors.values() for error in errors)
    return HttpResponseBadRequest(errors, content_type="text/plain; charset=utf-8")


def _report_csv(
    request: HttpRequest,
    run: Callable[[dict[str, Any]], Result],
    rows: Callable[[Result], Iterable[list[str]]],
    *,
    filename: str,
    period_optional: bool = False,
) -> HttpResponse:
    """A report page's CSV download: parse the page's query string, run its query class (400
    for an invalid form, 404 for another workspace's object) and stream the export's rows."""
    form, options = _report_form(request, period_optional=period_optional)
    if options is None:
        return _bad_request(form)
    return csv_response(rows(_or_404(lambda: run(options))), filename=filename)


# --- a sequence


@workspace_view()
@_fresh_rollups
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
        counts = count_columns(report.totals, report.previous.totals if report.previous else None)
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
                "mail_tiles": mail_tiles(
                    report.totals, report.previous.totals if report.previous else None
                ),
                "mail_anonymous": anonymous_counts(report.totals),
                "kpi_tiles": kpi_tiles(kpis, previous_kpis, revenue=False),
                "step_rows": step_rows(report, stage_names, counts),
                "mail_counts": counts,
                "rate_labels": list(RATE_LABELS.items()),
                **series_context(series, options["rates"]),
                **attribution_context(attribution, workspace),
            }
        )
    return _render_report(request, "analytics/sequence.html", form, context)


@workspace_view()
def sequence_report_csv(
    request: HttpRequest, membership: Membership, pk: uuid.UUID
) -> HttpResponse:
    """The sequence report as CSV: the rows of analytics.exports, as the API's export."""
    return _report_csv(
        request,
        lambda options: SequenceReportQuery(
            workspace=membership.workspace,
            sequence_id=pk,
            period=options["period"],
            compare=options["compare"],
        ).run(),
        exports.sequence_report_rows,
        filename="sequence-report.csv",
    )


# --- a broadcast


def _broadcast_kpi_period(broadcast: Broadcast, today: dt.date) -> Period:
    """Without a chosen period the broadcast report covers its whole life; its KPIs need days,
    so they cover the days since it started (at most the longest period a report allows)."""
    started = (broadcast.started_at or broadcast.created_at).astimezone(dt.UTC).date()
    earliest = today - dt.timedelta(days=MAX_DAYS - 1)
    return Period.parse(start=max(min(started, today), earliest), end=today, today=today)


@workspace_view()
@_fresh_rollups
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
        counts = count_columns(report.mail)
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
                "progress": progress_cells(report),
                "mail_tiles": mail_tiles(report.mail, previous.mail if previous else None),
                "mail_anonymous": anonymous_counts(report.mail),
                "kpi_tiles": kpi_tiles(kpis, previous_kpis, revenue=False),
                "variant_rows": [
                    {
                        "variant": variant,
                        "version": variant_letter(variant.variant),
                        **mail_columns(variant.mail, None, counts),
                    }
                    for variant in report.variants
                ],
                "rate_labels": list(RATE_LABELS.items()),
                "mail_counts": counts,
                **ab_context(report),
            }
        )
    return _render_report(request, "analytics/broadcast.html", form, context)


@workspace_view()
def broadcast_report_csv(
    request: HttpRequest, membership: Membership, pk: uuid.UUID
) -> HttpResponse:
    """The broadcast report as CSV: the rows of analytics.exports, as the API's export."""
    return _report_csv(
        request,
        lambda options: BroadcastReportQuery(
            workspace=membership.workspace, broadcast_id=pk, period=options["period"]
        ).run(),
        exports.broadcast_report_rows,
        filename="broadcast-report.csv",
        period_optional=True,
    )


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
