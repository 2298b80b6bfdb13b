"""REST API of the outgoing webhooks (API.md: Broadcasts, messages, webhooks)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.auth import request_workspace
from core.api.idempotency import idempotent
from funnel import webhooks
from funnel.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


class EndpointSerializer(serializers.ModelSerializer[WebhookEndpoint]):
    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "events",
            "enabled",
            "disabled_reason",
            "failing_since",
            "created_at",
        ]
        read_only_fields = fields


class EndpointCreatedSerializer(EndpointSerializer):
    secret = serializers.CharField(read_only=True)

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class EndpointInputSerializer(serializers.Serializer[Any]):
    url = serializers.CharField(max_length=2000)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=webhooks.EVENT_TYPES), allow_empty=False
    )
    enabled = serializers.BooleanField(required=False)


class AttemptSerializer(serializers.ModelSerializer[WebhookAttempt]):
    class Meta:
        model = WebhookAttempt
        fields = ["attempted_at", "status_code", "error", "response_excerpt", "duration_ms"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer[WebhookDelivery]):
    type = serializers.CharField(source="event_type", read_only=True)
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "type",
            "status",
            "attempts",
            "created_at",
            "delivered_at",
            "next_attempt_at",
            "payload",
            "attempt_log",
        ]
        read_only_fields = fields


def _endpoints(request: Request) -> QuerySet[WebhookEndpoint]:
    return webhooks.endpoint_list(workspace=request_workspace(request))


def _endpoint(request: Request, pk: str) -> WebhookEndpoint:
    return get_object_or_404(_endpoints(request), pk=pk)


class EndpointListApi(GenericAPIView[WebhookEndpoint]):
    serializer_class = EndpointSerializer

    @extend_schema(responses=EndpointSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(_endpoints(request))
        return self.get_paginated_response(EndpointSerializer(page, many=True).data)

    @extend_schema(
        request=EndpointInputSerializer,
        responses={201: EndpointCreatedSerializer},
        description="The answer holds the signing secret; it is never shown again.",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        payload = EndpointInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        endpoint, secret = webhooks.webhook_endpoint_create(
            workspace=request_workspace(request),
            url=payload.validated_data["url"],
            events=payload.validated_data["events"],
        )
        data = dict(EndpointSerializer(endpoint).data)
        data["secret"] = secret
        return Response(data, status=status.HTTP_201_CREATED)


class EndpointDetailApi(GenericAPIView[WebhookEndpoint]):
    serializer_class = EndpointSerializer

    @extend_schema(responses=EndpointSerializer)
    def get(self, request: Request, pk: str) -> Response:
        return Response(EndpointSerializer(_endpoint(request, pk)).data)

    @extend_schema(
        request=EndpointInputSerializer(partial=True),
        responses=EndpointSerializer,
        description='"enabled": true switches a disabled endpoint on again and clears its '
        "failure streak.",
    )
    def patch(self, request: Request, pk: str) -> Response:
        endpoint = _endpoint(request, pk)
        payload = EndpointInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        webhooks.webhook_endpoint_update(
            endpoint=endpoint,
            url=data.get("url"),
            events=data.get("events"),
            enabled=data.get("enabled"),
        )
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        webhooks.webhook_endpoint_delete(endpoint=_endpoint(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeliveryListApi(GenericAPIView[WebhookDelivery]):
    serializer_class = DeliverySerializer

    @extend_schema(
        responses=DeliverySerializer(many=True),
        description="Every delivery, newest first: attempts is how many tries were made, "
        "attempt_log lists them (newest first) with status code, error, a cleaned excerpt of "
        "the response and the duration.",
    )
    def get(self, request: Request, pk: str) -> Response:
        endpoint = _endpoint(request, pk)
        page = self.paginate_queryset(webhooks.endpoint_deliveries(endpoint=endpoint))
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


class EndpointTestApi(GenericAPIView[WebhookDelivery]):
    serializer_class = DeliverySerializer

    @extend_schema(request=None, responses={202: DeliverySerializer})
    def post(self, request: Request, pk: str) -> Response:
        delivery = webhooks.webhook_send_test(endpoint=_endpoint(request, pk))
        return Response(
            {"id": str(delivery.pk), "type": delivery.event_type, "status": "queued"},
            status=status.HTTP_202_ACCEPTED,
        )


urlpatterns: list[URLPattern | URLResolver] = [
    path("webhooks/", EndpointListApi.as_view(), name="api-webhook-list"),
    path("webhooks/<uuid:pk>/", EndpointDetailApi.as_view(), name="api-webhook-detail"),
    path(
        "webhooks/<uuid:pk>/deliveries/", DeliveryListApi.as_view(), name="api-webhook-deliveries"
    ),
    path("webhooks/<uuid:pk>/test/", EndpointTestApi.as_view(), name="api-webhook-test"),
]
