"""GET /messages/ (API.md): the mails sent, filtered by contact, sequence or broadcast, each
with its milestones and its activity (opens, clicks and mail-service reports, machines
flagged)."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.models import Message
from core.api.auth import request_workspace
from tracking.extensions import activity_json
from tracking.models import Activity, ActivityKind, Actor


class ActivitySerializer(serializers.Serializer[Any]):
    """One open, click or mail-service report (the schema of tracking.extensions.activity_json)."""

    kind = serializers.ChoiceField(choices=ActivityKind.choices)
    actor = serializers.ChoiceField(
        choices=Actor.choices, help_text="human, machine (open), bot (click) or service (ESP)"
    )
    reason = serializers.CharField(help_text="the classification rule that flagged a machine")
    at = serializers.DateTimeField()
    url = serializers.URLField(allow_null=True)
    origin = serializers.CharField()
    detail = serializers.CharField(allow_null=True)


class MessageSerializer(serializers.ModelSerializer[Message]):
    contact = serializers.UUIDField(source="contact_id", read_only=True)
    sequence = serializers.SerializerMethodField()
    activity = serializers.SerializerMethodField()
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
            "complained_at",
            "unsubscribed_at",
            "machine_opened_at",
            "bot_clicked_at",
            "activity",
        ]
        read_only_fields = fields

    @extend_schema_field(ActivitySerializer(many=True))
    def get_activity(self, message: Message) -> list[dict[str, Any]]:
        return [activity_json(activity) for activity in message.activities.all()]

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
        messages = (
            Message.objects.filter(workspace=request_workspace(request))
            .select_related("enrollment")
            .prefetch_related(
                Prefetch("activities", queryset=Activity.objects.order_by("occurred_at"))
            )
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
