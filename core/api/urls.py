from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from core.models import ApiKey, Workspace


class WorkspaceSerializer(serializers.ModelSerializer[Workspace]):
    class Meta:
        model = Workspace
        fields = ["id", "name", "slug", "timezone", "locale"]
        read_only_fields = fields


class WorkspaceApi(GenericAPIView[Workspace]):
    """The workspace the API key belongs to: a cheap way for an integration to test its key."""

    serializer_class = WorkspaceSerializer

    @extend_schema(responses=WorkspaceSerializer)
    def get(self, request: Request) -> Response:
        assert isinstance(request.auth, ApiKey)
        return Response(WorkspaceSerializer(request.auth.workspace).data)


urlpatterns = [path("workspace/", WorkspaceApi.as_view(), name="api-workspace")]
