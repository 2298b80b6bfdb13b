"""REST API for segments (API.md: Segments). Thin: parse, call one service or selector, render."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.urls import path
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from contacts import segments
from contacts.api.contacts import ContactSerializer
from contacts.models import Contact, Segment
from contacts.selectors import contact_stages
from core.api.auth import request_workspace
from core.api.idempotency import idempotent

FILTER_HELP = (
    '{"all": [...]} or {"any": [...]} (nestable, at most 5 deep and 100 conditions) of '
    'conditions: {"field": "email|first_name|last_name|locale|timezone|source|score|status|'
    'created_at|confirmed_at|attributes.<key>", "op": "eq|neq|contains|in|gt|lt|exists", '
    '"value"} · {"tag": name} · {"status": s} · {"list": id} · {"stage": id} · '
    '{"event": name, "within": "P30D"} · {"opened": "P30D"} · {"clicked": "P30D"}.'
)


class SegmentSerializer(serializers.ModelSerializer[Segment]):
    count = serializers.SerializerMethodField(
        help_text="Contacts in the segment now; null while its filter cannot be evaluated."
    )

    class Meta:
        model = Segment
        fields = ["id", "name", "filter", "count"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.INT)
    def get_count(self, segment: Segment) -> int | None:
        counts: dict[uuid.UUID, int | None] = self.context["counts"]
        return counts.get(segment.pk)


class SegmentInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=150)
    filter = serializers.JSONField(help_text=FILTER_HELP)

    def validate_filter(self, value: Any) -> dict[str, Any]:
        try:
            return segments.segment_filter_validate(value)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc


def _render(segment: Segment, *, status_code: int = status.HTTP_200_OK) -> Response:
    counts = segments.segment_counts(workspace=segment.workspace, segments=[segment])
    return Response(SegmentSerializer(segment, context={"counts": counts}).data, status=status_code)


class SegmentListApi(GenericAPIView[Segment]):
    serializer_class = SegmentSerializer

    @extend_schema(responses=SegmentSerializer(many=True))
    def get(self, request: Request) -> Response:
        workspace = request_workspace(request)
        page = self.paginate_queryset(segments.segment_list(workspace=workspace))
        assert page is not None
        counts = segments.segment_counts(workspace=workspace, segments=page)
        return self.get_paginated_response(
            SegmentSerializer(page, many=True, context={"counts": counts}).data
        )

    @extend_schema(
        request=SegmentInputSerializer,
        responses={201: SegmentSerializer},
        description=str(_("Save a segment. An invalid filter answers 400 naming where it breaks.")),
    )
    @idempotent
    def post(self, request: Request) -> Response:
        payload = SegmentInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        segment = segments.segment_create(
            workspace=request_workspace(request),
            name=payload.validated_data["name"],
            filter=payload.validated_data["filter"],
        )
        return _render(segment, status_code=status.HTTP_201_CREATED)


class SegmentDetailApi(GenericAPIView[Segment]):
    serializer_class = SegmentSerializer

    @extend_schema(responses=SegmentSerializer)
    def get(self, request: Request, pk: str) -> Response:
        segment = segments.segment_get(workspace=request_workspace(request), segment_id=pk)
        return _render(segment)

    @extend_schema(request=SegmentInputSerializer(partial=True), responses=SegmentSerializer)
    def patch(self, request: Request, pk: str) -> Response:
        segment = segments.segment_get(workspace=request_workspace(request), segment_id=pk)
        payload = SegmentInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        segment = segments.segment_update(
            segment=segment,
            name=payload.validated_data.get("name"),
            filter=payload.validated_data.get("filter"),
        )
        return _render(segment)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        segment = segments.segment_get(workspace=request_workspace(request), segment_id=pk)
        segments.segment_delete(segment=segment)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SegmentContactsApi(GenericAPIView[Contact]):
    serializer_class = ContactSerializer

    @extend_schema(responses=ContactSerializer(many=True))
    def get(self, request: Request, pk: str) -> Response:
        segment = segments.segment_get(workspace=request_workspace(request), segment_id=pk)
        members = segments.segment_members(segment).prefetch_related("tags")
        page = self.paginate_queryset(members) or []
        stages = contact_stages([contact.pk for contact in page])
        return self.get_paginated_response(
            ContactSerializer(page, many=True, context={"stages": stages}).data
        )


urlpatterns = [
    path("segments/", SegmentListApi.as_view(), name="api-segment-list"),
    path("segments/<uuid:pk>/", SegmentDetailApi.as_view(), name="api-segment-detail"),
    path(
        "segments/<uuid:pk>/contacts/",
        SegmentContactsApi.as_view(),
        name="api-segment-contacts",
    ),
]
