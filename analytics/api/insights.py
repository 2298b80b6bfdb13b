"""The reports beyond API.md's three: time series, attribution, KPIs and conversion paths,
each with its CSV export. GET /api/v1/analytics/<report>/ and .../<report>/export/."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.http import HttpResponse
from django.urls import URLPattern, URLResolver, path
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from analytics import exports
from analytics.api.common import (
    COMPARE_PARAMETER,
    CSV_RESPONSE,
    PERIOD_PARAMETERS,
    compare_of,
    csv_response,
    period_of,
)
from analytics.api.serializers import (
    AttributionSerializer,
    KpisSerializer,
    PathsSerializer,
    TimeSeriesSerializer,
)
from analytics.queries.attribution import AttributionQuery
from analytics.queries.kpis import KpiQuery
from analytics.queries.paths import ConversionPathsQuery
from analytics.queries.timeseries import TimeSeriesQuery
from analytics.rollups import CONVERSION_WINDOW
from core.api.auth import request_workspace
from core.exceptions import ApplicationError


def _uuid(request: Request, name: str, *, required: bool = False) -> uuid.UUID | None:
    raw = request.query_params.get(name)
    if not raw:
        if required:
            raise ApplicationError(_("This field is required."), field=name)
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApplicationError(_("Enter a valid id."), field=name) from None


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApplicationError(_("Enter a whole number."), field=name) from None


def _choice(request: Request, name: str, default: str) -> str:
    return request.query_params.get(name) or default


def _id_parameter(name: str, what: str) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.UUID, description=what)


def _timeseries(request: Request) -> Any:
    return TimeSeriesQuery(
        workspace=request_workspace(request),
        period=period_of(request),
        interval=_choice(request, "interval", "day"),
        sequence_id=_uuid(request, "sequence"),
        broadcast_id=_uuid(request, "broadcast"),
        stage_id=_uuid(request, "stage"),
        funnel_id=_uuid(request, "funnel"),
        compare=compare_of(request),
    ).run()


def _attribution(request: Request) -> Any:
    return AttributionQuery(
        workspace=request_workspace(request),
        period=period_of(request),
        model=_choice(request, "model", "last_click"),
        window_days=_int(request, "window_days", CONVERSION_WINDOW.days),
        dimension=_choice(request, "dimension", "mail"),
        funnel_id=_uuid(request, "funnel"),
        sequence_id=_uuid(request, "sequence"),
        broadcast_id=_uuid(request, "broadcast"),
    ).run()


def _kpis(request: Request) -> Any:
    return KpiQuery(
        workspace=request_workspace(request),
        period=period_of(request),
        sequence_id=_uuid(request, "sequence"),
        broadcast_id=_uuid(request, "broadcast"),
        event=_choice(request, "event", "purchase"),
    ).run()


def _paths(request: Request) -> Any:
    funnel_id = _uuid(request, "funnel", required=True)
    assert funnel_id is not None
    return ConversionPathsQuery(
        workspace=request_workspace(request),
        funnel_id=funnel_id,
        period=period_of(request),
        limit=_int(request, "limit", 20),
    ).run()


TIMESERIES_PARAMETERS = [
    *PERIOD_PARAMETERS,
    COMPARE_PARAMETER,
    OpenApiParameter("interval", OpenApiTypes.STR, enum=["day", "week"]),
    _id_parameter("sequence", "Only this sequence's mails."),
    _id_parameter("broadcast", "Only this broadcast's mails."),
    _id_parameter("stage", "Only the mails tagged with this stage."),
    _id_parameter("funnel", "The mails of this funnel's stages, its entries and conversions."),
]
ATTRIBUTION_PARAMETERS = [
    *PERIOD_PARAMETERS,
    OpenApiParameter("model", OpenApiTypes.STR, enum=["last_click", "first_touch", "linear"]),
    OpenApiParameter("window_days", OpenApiTypes.INT, description="1 to 90, default 5."),
    OpenApiParameter("dimension", OpenApiTypes.STR, enum=["mail", "step", "stage"]),
    _id_parameter("funnel", "Only this funnel's conversions."),
    _id_parameter("sequence", "Only the credit of this sequence."),
    _id_parameter("broadcast", "Only the credit of this broadcast."),
]
KPI_PARAMETERS = [
    *PERIOD_PARAMETERS,
    _id_parameter("sequence", "The KPIs of this sequence."),
    _id_parameter("broadcast", "The KPIs of this broadcast."),
    OpenApiParameter("event", OpenApiTypes.STR, description="Valued event, default purchase."),
]
PATHS_PARAMETERS = [
    *PERIOD_PARAMETERS,
    _id_parameter("funnel", "The funnel (required)."),
    OpenApiParameter("limit", OpenApiTypes.INT, description="Paths per list, 1 to 100."),
]


def _views(
    name: str,
    build: Callable[[Request], Any],
    serializer: type[Serializer[Any]],
    rows: Callable[[Any], Iterable[list[str]]],
    parameters: list[OpenApiParameter],
    doc: str,
) -> Iterator[URLPattern]:
    class ReportApi(GenericAPIView[Any]):
        serializer_class = serializer

        @extend_schema(parameters=parameters, description=doc)
        def get(self, request: Request) -> Response:
            return Response(serializer(build(request)).data)

    class ExportApi(GenericAPIView[Any]):
        @extend_schema(parameters=parameters, responses=CSV_RESPONSE, description=doc)
        def get(self, request: Request) -> HttpResponse:
            return csv_response(rows(build(request)), filename=f"{name}.csv")

    title = name.title().replace("-", "")
    ReportApi.__name__ = f"{title}Api"
    ExportApi.__name__ = f"{title}ExportApi"
    yield path(f"analytics/{name}/", ReportApi.as_view(), name=f"api-analytics-{name}")
    yield path(
        f"analytics/{name}/export/", ExportApi.as_view(), name=f"api-analytics-{name}-export"
    )


urlpatterns: list[URLPattern | URLResolver] = [
    *_views(
        "timeseries",
        _timeseries,
        TimeSeriesSerializer,
        exports.timeseries_rows,
        TIMESERIES_PARAMETERS,
        "Every mail rate by day or ISO week (and a funnel's entries and conversions).",
    ),
    *_views(
        "attribution",
        _attribution,
        AttributionSerializer,
        exports.attribution_rows,
        ATTRIBUTION_PARAMETERS,
        "Conversions and revenue credited to mails, steps or stages by human clicks.",
    ),
    *_views(
        "kpis",
        _kpis,
        KpisSerializer,
        exports.kpi_rows,
        KPI_PARAMETERS,
        "Cost per impression and acquisition, engagement rate, AOV, frequency and CLV.",
    ),
    *_views(
        "paths",
        _paths,
        PathsSerializer,
        exports.paths_rows,
        PATHS_PARAMETERS,
        "The most frequent touchpoint paths before a conversion and without one.",
    ),
]
