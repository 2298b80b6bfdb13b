"""POST /sequences/{id}/simulate/ (API.md): the timeline a contact would get, on a virtual
clock. It changes nothing, so read-only API keys may call it although it is a POST.

core.api.permissions.HasWorkspaceApiKey lets a read-only key use the safe methods only (GET,
HEAD, OPTIONS) and answers 403 to its POSTs; this view replaces it with AnyWorkspaceApiKey,
which requires a valid key of either access.
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.models import Sequence
from campaigns.simulation import simulate
from contacts.models import Contact
from core.api.auth import request_workspace
from core.models import ApiKey


class AnyWorkspaceApiKey(BasePermission):
    """A valid API key of any access: for POSTs that only compute (they change nothing)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ApiKey)


class SimulationInputSerializer(serializers.Serializer[Any]):
    contact = serializers.UUIDField(required=False, allow_null=True)
    profile = serializers.JSONField(required=False, allow_null=True)
    reactions = serializers.JSONField(required=False, allow_null=True)
    start = serializers.DateTimeField(required=False, allow_null=True)


class SimulatedItemSerializer(serializers.Serializer[Any]):
    at = serializers.DateTimeField()
    local = serializers.CharField()
    step = serializers.CharField()
    kind = serializers.CharField()
    detail = serializers.CharField()


class TimelineSerializer(serializers.Serializer[Any]):
    timeline = SimulatedItemSerializer(many=True)


class SequenceSimulateApi(GenericAPIView[Sequence]):
    serializer_class = SimulationInputSerializer
    permission_classes = [AnyWorkspaceApiKey]

    @extend_schema(request=SimulationInputSerializer, responses={200: TimelineSerializer})
    def post(self, request: Request, pk: str) -> Response:
        workspace = request_workspace(request)
        sequence = get_object_or_404(
            Sequence.objects.select_related("workspace"), workspace=workspace, pk=pk
        )
        payload = SimulationInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        contact = None
        if data.get("contact"):
            contact = get_object_or_404(Contact, workspace=workspace, pk=data["contact"])
        timeline = simulate(
            sequence=sequence,
            contact=contact,
            profile=data.get("profile"),
            reactions=data.get("reactions") or [],
            start=data.get("start"),
        )
        return Response(TimelineSerializer({"timeline": [item.__dict__ for item in timeline]}).data)


urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "sequences/<uuid:pk>/simulate/",
        SequenceSimulateApi.as_view(),
        name="api-sequence-simulate",
    ),
]
