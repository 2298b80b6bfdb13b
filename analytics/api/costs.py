"""Campaign costs (GET/POST /campaign-costs/, GET/PATCH/DELETE /campaign-costs/{id}/): money
spent on a sequence or a broadcast, the base of the cost KPIs."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, URLResolver, path
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from analytics import services
from analytics.models import CampaignCost
from campaigns.models import Broadcast, Sequence
from core.api.auth import request_workspace
from core.api.idempotency import idempotent
from core.exceptions import ApplicationError


class CampaignCostSerializer(serializers.ModelSerializer[CampaignCost]):
    sequence = serializers.UUIDField(source="sequence_id", allow_null=True, read_only=True)
    broadcast = serializers.UUIDField(source="broadcast_id", allow_null=True, read_only=True)

    class Meta:
        model = CampaignCost
        fields = ["id", "sequence", "broadcast", "amount", "currency", "spent_on", "note"]
        read_only_fields = fields


class CampaignCostInputSerializer(serializers.Serializer[Any]):
    sequence = serializers.UUIDField(required=False, allow_null=True)
    broadcast = serializers.UUIDField(required=False, allow_null=True)
    amount = serializers.DecimalField(max_digits=14, decimal_places=2)
    currency = serializers.CharField(max_length=3)
    spent_on = serializers.DateField()
    note = serializers.CharField(max_length=200, required=False, allow_blank=True)


def _costs(request: Request) -> QuerySet[CampaignCost]:
    return CampaignCost.objects.filter(workspace=request_workspace(request))


class CampaignCostListApi(GenericAPIView[CampaignCost]):
    serializer_class = CampaignCostSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("sequence", OpenApiTypes.UUID),
            OpenApiParameter("broadcast", OpenApiTypes.UUID),
        ],
        responses=CampaignCostSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        costs = _costs(request)
        for name in ("sequence", "broadcast"):
            value = request.query_params.get(name)
            if value:
                field = serializers.UUIDField()
                try:
                    costs = costs.filter(**{f"{name}_id": field.to_internal_value(value)})
                except serializers.ValidationError as error:
                    raise serializers.ValidationError({name: error.detail}) from None
        page = self.paginate_queryset(costs.order_by("-spent_on", "-created_at"))
        return self.get_paginated_response(CampaignCostSerializer(page, many=True).data)

    @extend_schema(request=CampaignCostInputSerializer, responses={201: CampaignCostSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        payload = CampaignCostInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        workspace = request_workspace(request)
        campaigns: dict[str, Any] = {}
        for name, model in (("sequence", Sequence), ("broadcast", Broadcast)):
            campaign_id = data.pop(name, None)
            if campaign_id:
                campaign = model.objects.filter(workspace=workspace, pk=campaign_id).first()
                if campaign is None:
                    raise ApplicationError(_("No such %(field)s.") % {"field": name}, field=name)
                campaigns[name] = campaign
        cost = services.campaign_cost_create(workspace=workspace, **data, **campaigns)
        return Response(CampaignCostSerializer(cost).data, status=status.HTTP_201_CREATED)


class CampaignCostDetailApi(GenericAPIView[CampaignCost]):
    serializer_class = CampaignCostSerializer

    @extend_schema(responses=CampaignCostSerializer)
    def get(self, request: Request, pk: str) -> Response:
        return Response(CampaignCostSerializer(get_object_or_404(_costs(request), pk=pk)).data)

    @extend_schema(
        request=CampaignCostInputSerializer(partial=True), responses=CampaignCostSerializer
    )
    def patch(self, request: Request, pk: str) -> Response:
        cost = get_object_or_404(_costs(request), pk=pk)
        payload = CampaignCostInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        changes = {
            key: value
            for key, value in payload.validated_data.items()
            if key not in ("sequence", "broadcast")
        }
        cost = services.campaign_cost_update(cost=cost, **changes)
        return Response(CampaignCostSerializer(cost).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        services.campaign_cost_delete(cost=get_object_or_404(_costs(request), pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns: list[URLPattern | URLResolver] = [
    path("campaign-costs/", CampaignCostListApi.as_view(), name="api-campaign-cost-list"),
    path(
        "campaign-costs/<uuid:pk>/",
        CampaignCostDetailApi.as_view(),
        name="api-campaign-cost-detail",
    ),
]
