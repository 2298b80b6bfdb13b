"""GET /messages/ (API.md): the mails sent, filtered by contact, sequence or broadcast."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.models import Message
from core.api.auth import request_workspace


class MessageSerializer(serializers.ModelSerializer[Message]):
    contact = serializers.UUIDField(source="contact_id", read_only=True)
    sequence = serializers.SerializerMethodField()
    broadcast = serializers.UUIDField(source="broadcast_id", read_only=True, allow_null=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "contact",
            "sequence",
            "broadcast",
            "step_key",
            "variant",
            "subject",
            "status",
            "error",
            "sent_at",
            "delivered_at",
            "opened_at",
            "clicked_at",
            "bounced_at",
        ]
        read_only_fields = fields

    def get_sequence(self, message: Message) -> str | None:
        enrollment = message.enrollment
        return str(enrollment.sequence_id) if enrollment else None


class MessageFilterSerializer(serializers.Serializer[Any]):
    contact = serializers.UUIDField(required=False)
    sequence = serializers.UUIDField(required=False)
    broadcast = serializers.UUIDField(required=False)


class MessageListApi(GenericAPIView[Message]):
    serializer_class = MessageSerializer

    @extend_schema(parameters=[MessageFilterSerializer], responses=MessageSerializer(many=True))
    def get(self, request: Request) -> Response:
        params = MessageFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        messages = Message.objects.filter(workspace=request_workspace(request)).select_related(
            "enrollment"
        )
        if "contact" in params.validated_data:
            messages = messages.filter(contact_id=params.validated_data["contact"])
        if "sequence" in params.validated_data:
            messages = messages.filter(enrollment__sequence_id=params.validated_data["sequence"])
        if "broadcast" in params.validated_data:
            messages = messages.filter(broadcast_id=params.validated_data["broadcast"])
        page = self.paginate_queryset(messages.order_by("-created_at"))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)


urlpatterns: list[URLPattern | URLResolver] = [
    path("messages/", MessageListApi.as_view(), name="api-message-list"),
]
