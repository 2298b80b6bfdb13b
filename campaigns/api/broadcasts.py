"""Broadcasts (API.md): CRUD, send (202), pause and resume. The report,
GET /broadcasts/{id}/report/, is served by analytics (analytics/api/reports.py): it reads
the rollups and judges the A/B test, which campaigns may not import."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from django.urls import URLPattern, URLResolver, path
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import broadcasts
from campaigns.models import Broadcast
from contacts.models import MailingList, Segment
from core.api.auth import request_workspace
from core.api.idempotency import idempotent
from core.exceptions import ApplicationError


class BroadcastSerializer(serializers.ModelSerializer[Broadcast]):
    list = serializers.UUIDField(source="mailing_list_id", read_only=True, allow_null=True)
    segment = serializers.UUIDField(source="segment_id", read_only=True, allow_null=True)

    class Meta:
        model = Broadcast
        fields = [
            "id",
            "name",
            "list",
            "segment",
            "subject",
            "html",
            "variants",
            "send_at",
            "local_time",
            "ab_test",
            "utm",
            "status",
            "audience_count",
            "started_at",
            "finished_at",
            "winner",
            "winner_by_chance",
            "created_at",
        ]
        read_only_fields = fields


class BroadcastInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=150)
    list = serializers.UUIDField(required=False, allow_null=True)
    segment = serializers.UUIDField(required=False, allow_null=True)
    subject = serializers.CharField(max_length=300)
    html = serializers.CharField()
    variants = serializers.JSONField(required=False)
    send_at = serializers.DateTimeField(required=False, allow_null=True)
    local_time = serializers.BooleanField(required=False)
    ab_test = serializers.JSONField(required=False, allow_null=True)
    utm = serializers.JSONField(
        required=False, help_text="UTM parameters added to the links of its mails."
    )

    def service_arguments(self, request: Request) -> dict[str, Any]:
        data = dict(self.validated_data)
        workspace = request_workspace(request)
        if "list" in data:
            list_id = data.pop("list")
            found = MailingList.objects.filter(workspace=workspace, pk=list_id).first()
            if list_id and found is None:
                raise ApplicationError("No such list.", field="list")
            data["mailing_list"] = found
        if "segment" in data:
            segment_id = data.pop("segment")
            segment = Segment.objects.filter(workspace=workspace, pk=segment_id).first()
            if segment_id and segment is None:
                raise ApplicationError("No such segment.", field="segment")
            data["segment"] = segment
        return data


def _broadcasts(request: Request) -> Any:
    return Broadcast.objects.filter(workspace=request_workspace(request)).select_related(
        "workspace", "segment__workspace"
    )


class BroadcastListApi(GenericAPIView[Broadcast]):
    serializer_class = BroadcastSerializer

    @extend_schema(responses=BroadcastSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(_broadcasts(request).order_by("-created_at"))
        return self.get_paginated_response(BroadcastSerializer(page, many=True).data)

    @extend_schema(request=BroadcastInputSerializer, responses={201: BroadcastSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        payload = BroadcastInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        broadcast = broadcasts.broadcast_create(
            workspace=request_workspace(request), **payload.service_arguments(request)
        )
        return Response(BroadcastSerializer(broadcast).data, status=status.HTTP_201_CREATED)


class BroadcastDetailApi(GenericAPIView[Broadcast]):
    serializer_class = BroadcastSerializer

    @extend_schema(responses=BroadcastSerializer)
    def get(self, request: Request, pk: str) -> Response:
        return Response(BroadcastSerializer(get_object_or_404(_broadcasts(request), pk=pk)).data)

    @extend_schema(request=BroadcastInputSerializer(partial=True), responses=BroadcastSerializer)
    def patch(self, request: Request, pk: str) -> Response:
        broadcast = get_object_or_404(_broadcasts(request), pk=pk)
        payload = BroadcastInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        broadcast = broadcasts.broadcast_update(
            broadcast=broadcast, **payload.service_arguments(request)
        )
        return Response(BroadcastSerializer(broadcast).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        broadcasts.broadcast_delete(broadcast=get_object_or_404(_broadcasts(request), pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BroadcastSendApi(GenericAPIView[Broadcast]):
    serializer_class = BroadcastSerializer

    @extend_schema(request=None, responses={202: BroadcastSerializer})
    def post(self, request: Request, pk: str) -> Response:
        broadcast = get_object_or_404(_broadcasts(request), pk=pk)
        broadcast = broadcasts.broadcast_start(broadcast=broadcast, now=timezone.now())
        return Response(BroadcastSerializer(broadcast).data, status=status.HTTP_202_ACCEPTED)


class BroadcastPauseApi(GenericAPIView[Broadcast]):
    serializer_class = BroadcastSerializer

    @extend_schema(request=None, responses=BroadcastSerializer)
    def post(self, request: Request, pk: str) -> Response:
        broadcast = get_object_or_404(_broadcasts(request), pk=pk)
        return Response(BroadcastSerializer(broadcasts.broadcast_pause(broadcast=broadcast)).data)


class BroadcastResumeApi(GenericAPIView[Broadcast]):
    serializer_class = BroadcastSerializer

    @extend_schema(request=None, responses=BroadcastSerializer)
    def post(self, request: Request, pk: str) -> Response:
        broadcast = get_object_or_404(_broadcasts(request), pk=pk)
        return Response(BroadcastSerializer(broadcasts.broadcast_resume(broadcast=broadcast)).data)


urlpatterns: list[URLPattern | URLResolver] = [
    path("broadcasts/", BroadcastListApi.as_view(), name="api-broadcast-list"),
    path("broadcasts/<uuid:pk>/", BroadcastDetailApi.as_view(), name="api-broadcast-detail"),
    path("broadcasts/<uuid:pk>/send/", BroadcastSendApi.as_view(), name="api-broadcast-send"),
    path("broadcasts/<uuid:pk>/pause/", BroadcastPauseApi.as_view(), name="api-broadcast-pause"),
    path("broadcasts/<uuid:pk>/resume/", BroadcastResumeApi.as_view(), name="api-broadcast-resume"),
]
