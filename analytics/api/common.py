"""What the analytics endpoints share: the period parameters, their OpenAPI description, and
CSV responses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.request import Request

from analytics.queries.base import DEFAULT_DAYS, Period
from contacts.exporting import csv_lines

PERIOD_PARAMETERS = [
    OpenApiParameter(
        "from",
        OpenApiTypes.DATE,
        description=f"First day (UTC, included). Default: {DEFAULT_DAYS} days before `to`.",
    ),
    OpenApiParameter(
        "to", OpenApiTypes.DATE, description="Last day (UTC, included). Default: today."
    ),
]
COMPARE_PARAMETER = OpenApiParameter(
    "compare",
    OpenApiTypes.BOOL,
    description="Add the same figures for the period of equal length right before (previous).",
)
CSV_RESPONSE = {(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, UTF-8")}


def period_of(request: Request) -> Period:
    """?from=&to= as a Period (400 naming the field when invalid)."""
    return Period.parse(
        start=request.query_params.get("from"),
        end=request.query_params.get("to"),
        today=timezone.now().date(),
    )


def optional_period_of(request: Request) -> Period | None:
    """?from=&to= as a Period, or None when neither is given (the report's whole life)."""
    if not request.query_params.get("from") and not request.query_params.get("to"):
        return None
    return period_of(request)


def compare_of(request: Request) -> bool:
    return request.query_params.get("compare", "").lower() in {"1", "true", "yes", "previous"}


def csv_response(rows: Iterable[list[str]], *, filename: str) -> HttpResponse:
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return cast(HttpResponse, response)
