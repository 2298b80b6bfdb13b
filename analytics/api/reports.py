"""The report endpoints of API.md (funnel, sequence, broadcast) and their CSV exports. Each one
parses the request, runs one query class of analytics.queries and renders its typed result."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from analytics import exports
from analytics.api.common import (
    COMPARE_PARAMETER,
    CSV_RESPONSE,
    PERIOD_PARAMETERS,
    compare_of,
    csv_response,
    optional_period_of,
    period_of,
)
from analytics.api.serializers import (
    BroadcastReportSerializer,
    FunnelReportSerializer,
    SequenceReportSerializer,
)
from analytics.queries.broadcast import BroadcastReport, BroadcastReportQuery
from analytics.queries.funnel import FunnelReport, FunnelReportQuery
from analytics.queries.sequence import SequenceReport, SequenceReportQuery
from core.api.auth import request_workspace


def _funnel_report(request: Request, pk: str) -> FunnelReport:
    return FunnelReportQuery(
        workspace=request_workspace(request),
        funnel_id=pk,
        period=period_of(request),
        compare=compare_of(request),
    ).run()


def _sequence_report(request: Request, pk: str) -> SequenceReport:
    return SequenceReportQuery(
        workspace=request_workspace(request),
        sequence_id=pk,
        period=period_of(request),
        compare=compare_of(request),
    ).run()


def _broadcast_report(request: Request, pk: str) -> BroadcastReport:
    return BroadcastReportQuery(
        workspace=request_workspace(request),
        broadcast_id=pk,
        period=optional_period_of(request),
    ).run()


class FunnelReportApi(GenericAPIView[Any]):
    """Per stage: entered, current, advanced, converted, drop-off, median time in the stage and
    the rates of the mails tagged with it; the goal's conversions and revenue; the stage that
    loses the most people (docs/analytics.md)."""

    serializer_class = FunnelReportSerializer

    @extend_schema(parameters=[*PERIOD_PARAMETERS, COMPARE_PARAMETER])
    def get(self, request: Request, pk: str) -> Response:
        return Response(FunnelReportSerializer(_funnel_report(request, pk)).data)


class FunnelReportExportApi(GenericAPIView[Any]):
    """The funnel report as CSV."""

    @extend_schema(parameters=[*PERIOD_PARAMETERS, COMPARE_PARAMETER], responses=CSV_RESPONSE)
    def get(self, request: Request, pk: str) -> HttpResponse:
        report = _funnel_report(request, pk)
        return csv_response(exports.funnel_report_rows(report), filename="funnel-report.csv")


class SequenceReportApi(GenericAPIView[Any]):
    """Per email step and variant: sent, delivered, opened, clicked, bounced, unsubscribed,
    complained, converted, the rates, machine opens and bot clicks; and the totals."""

    serializer_class = SequenceReportSerializer

    @extend_schema(parameters=[*PERIOD_PARAMETERS, COMPARE_PARAMETER])
    def get(self, request: Request, pk: str) -> Response:
        return Response(SequenceReportSerializer(_sequence_report(request, pk)).data)


class SequenceReportExportApi(GenericAPIView[Any]):
    """The sequence report as CSV."""

    @extend_schema(parameters=[*PERIOD_PARAMETERS, COMPARE_PARAMETER], responses=CSV_RESPONSE)
    def get(self, request: Request, pk: str) -> HttpResponse:
        report = _sequence_report(request, pk)
        return csv_response(exports.sequence_report_rows(report), filename="sequence-report.csv")


class BroadcastReportApi(GenericAPIView[Any]):
    """Progress, the mail figures of the broadcast and of each variant, and the A/B test with
    its significance. Without from/to: every mail of the broadcast."""

    serializer_class = BroadcastReportSerializer

    @extend_schema(parameters=PERIOD_PARAMETERS)
    def get(self, request: Request, pk: str) -> Response:
        return Response(BroadcastReportSerializer(_broadcast_report(request, pk)).data)


class BroadcastReportExportApi(GenericAPIView[Any]):
    """The broadcast report as CSV."""

    @extend_schema(parameters=PERIOD_PARAMETERS, responses=CSV_RESPONSE)
    def get(self, request: Request, pk: str) -> HttpResponse:
        report = _broadcast_report(request, pk)
        return csv_response(exports.broadcast_report_rows(report), filename="broadcast-report.csv")


urlpatterns: list[URLPattern | URLResolver] = [
    path("funnels/<uuid:pk>/report/", FunnelReportApi.as_view(), name="api-funnel-report"),
    path(
        "funnels/<uuid:pk>/report/export/",
        FunnelReportExportApi.as_view(),
        name="api-funnel-report-export",
    ),
    path("sequences/<uuid:pk>/report/", SequenceReportApi.as_view(), name="api-sequence-report"),
    path(
        "sequences/<uuid:pk>/report/export/",
        SequenceReportExportApi.as_view(),
        name="api-sequence-report-export",
    ),
    path("broadcasts/<uuid:pk>/report/", BroadcastReportApi.as_view(), name="api-broadcast-report"),
    path(
        "broadcasts/<uuid:pk>/report/export/",
        BroadcastReportExportApi.as_view(),
        name="api-broadcast-report-export",
    ),
]
