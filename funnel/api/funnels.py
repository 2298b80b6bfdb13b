"""REST API of the funnel app (API.md: Funnels and events)."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from contacts.models import Contact
from contacts.validators import normalize_email
from core.api.auth import request_workspace
from core.api.idempotency import idempotent
from core.models import ApiKey
from funnel import selectors, services
from funnel.models import Funnel, FunnelPreset, Stage, StageRule, TransitionCause
from funnel.services import MAX_BATCH, EventInput


class StageSerializer(serializers.ModelSerializer[Stage]):
    class Meta:
        model = Stage
        fields = ["id", "name", "position", "key"]


class FunnelSerializer(serializers.ModelSerializer[Funnel]):
    stages = StageSerializer(many=True, read_only=True)

    class Meta:
        model = Funnel
        fields = ["id", "name", "preset", "goal_event", "stages", "created_at"]
        read_only_fields = fields


class StageInputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(required=False)
    name = serializers.CharField(max_length=100)
    key = serializers.SlugField(max_length=60, required=False)


class FunnelInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=150)
    preset = serializers.ChoiceField(choices=FunnelPreset.choices, required=False, allow_null=True)
    goal_event = serializers.CharField(max_length=100, required=False, allow_blank=True)
    stages = StageInputSerializer(many=True, required=False)


def _funnels(request: Request) -> Any:
    return selectors.funnel_list(workspace=request_workspace(request))


def _funnel(request: Request, pk: str) -> Funnel:
    return get_object_or_404(_funnels(request), pk=pk)


def _render(request: Request, funnel: Funnel, code: int = status.HTTP_200_OK) -> Response:
    return Response(FunnelSerializer(_funnel(request, str(funnel.pk))).data, status=code)


class FunnelListApi(GenericAPIView[Funnel]):
    serializer_class = FunnelSerializer

    @extend_schema(responses=FunnelSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(_funnels(request).order_by("name"))
        return self.get_paginated_response(FunnelSerializer(page, many=True).data)

    @extend_schema(request=FunnelInputSerializer, responses={201: FunnelSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        payload = FunnelInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        preset = data.get("preset")
        if preset and data.get("stages"):
            raise serializers.ValidationError({"stages": ["Give a preset or stages, not both."]})
        funnel = services.funnel_create(
            workspace=request_workspace(request),
            name=data["name"],
            preset=preset,
            goal_event=data.get("goal_event", ""),
            stage_names=[stage["name"] for stage in data.get("stages", [])],
        )
        return _render(request, funnel, status.HTTP_201_CREATED)


class FunnelDetailApi(GenericAPIView[Funnel]):
    serializer_class = FunnelSerializer

    @extend_schema(responses=FunnelSerializer)
    def get(self, request: Request, pk: str) -> Response:
        return Response(FunnelSerializer(_funnel(request, pk)).data)

    @extend_schema(
        request=FunnelInputSerializer(partial=True),
        responses=FunnelSerializer,
        description="stages (if given) become the funnel's stages in that order: stages with "
        "an id are renamed and moved, keeping their history; new ones are added; left-out "
        "ones are deleted (409 when contacts are in them or passed through them).",
    )
    def patch(self, request: Request, pk: str) -> Response:
        funnel = _funnel(request, pk)
        payload = FunnelInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        services.funnel_update(
            funnel=funnel, name=data.get("name"), goal_event=data.get("goal_event")
        )
        if "stages" in data:
            services.funnel_set_stages(funnel=funnel, stages=[dict(s) for s in data["stages"]])
        return _render(request, funnel)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        _funnel(request, pk).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class RuleSerializer(serializers.ModelSerializer[StageRule]):
    move_to = serializers.UUIDField(source="move_to_id")

    class Meta:
        model = StageRule
        fields = ["id", "when", "move_to", "position", "created_at"]
        read_only_fields = ["id", "position", "created_at"]


class RuleInputSerializer(serializers.Serializer[Any]):
    when = serializers.JSONField()
    move_to = serializers.UUIDField()


def _stage(funnel: Funnel, stage_id: Any, field: str) -> Stage:
    stage = Stage.objects.filter(funnel=funnel, pk=stage_id).first()
    if stage is None:
        raise serializers.ValidationError({field: ["No such stage in this funnel."]})
    return stage


class RuleListApi(GenericAPIView[StageRule]):
    serializer_class = RuleSerializer

    @extend_schema(responses=RuleSerializer(many=True))
    def get(self, request: Request, pk: str) -> Response:
        rules = selectors.funnel_rules(funnel=_funnel(request, pk))
        page = self.paginate_queryset(rules)
        return self.get_paginated_response(RuleSerializer(page, many=True).data)

    @extend_schema(request=RuleInputSerializer, responses={201: RuleSerializer})
    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        funnel = _funnel(request, pk)
        payload = RuleInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        rule = services.rule_create(
            funnel=funnel,
            when=payload.validated_data["when"],
            move_to=_stage(funnel, payload.validated_data["move_to"], "move_to"),
        )
        return Response(RuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class RuleDetailApi(GenericAPIView[StageRule]):
    serializer_class = RuleSerializer

    def _rule(self, request: Request, pk: str, rule_id: str) -> StageRule:
        return get_object_or_404(
            StageRule.objects.select_related("funnel"), funnel=_funnel(request, pk), pk=rule_id
        )

    @extend_schema(request=RuleInputSerializer(partial=True), responses=RuleSerializer)
    def patch(self, request: Request, pk: str, rule_id: str) -> Response:
        rule = self._rule(request, pk, rule_id)
        payload = RuleInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        services.rule_update(
            rule=rule,
            when=data.get("when"),
            move_to=_stage(rule.funnel, data["move_to"], "move_to") if "move_to" in data else None,
        )
        return Response(RuleSerializer(rule).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str, rule_id: str) -> Response:
        self._rule(request, pk, rule_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class MoveSerializer(serializers.Serializer[Any]):
    stage = serializers.UUIDField()
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class MoveApi(GenericAPIView[Funnel]):
    serializer_class = MoveSerializer

    @extend_schema(request=MoveSerializer, responses={200: dict[str, Any]})
    def post(self, request: Request, pk: str, contact_id: str) -> Response:
        funnel = _funnel(request, pk)
        contact = get_object_or_404(Contact, workspace=funnel.workspace, pk=contact_id)
        payload = MoveSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        stage = _stage(funnel, payload.validated_data["stage"], "stage")
        api_key = request.auth
        transition = services.contact_move(
            funnel=funnel,
            contact=contact,
            stage=stage,
            cause=TransitionCause.API,
            cause_detail=f"api_key:{api_key.prefix}" if isinstance(api_key, ApiKey) else "api",
            reason=payload.validated_data.get("reason", ""),
        )
        return Response(
            {
                "contact": str(contact.pk),
                "funnel": str(funnel.pk),
                "stage": str(stage.pk),
                "moved": transition is not None,
            }
        )


class EventSerializer(serializers.Serializer[Any]):
    contact = serializers.CharField(max_length=320, help_text="Contact id or email address.")
    name = serializers.RegexField(r"^[A-Za-z0-9_.:-]{1,100}$", max_length=100)
    properties = serializers.DictField(required=False, default=dict)
    value = serializers.DecimalField(
        max_digits=14, decimal_places=2, required=False, allow_null=True
    )
    currency = serializers.RegexField(r"^[A-Za-z]{3}$", required=False, allow_blank=True)
    occurred_at = serializers.DateTimeField(required=False)
    external_id = serializers.CharField(max_length=200, required=False, allow_blank=True)
    source = serializers.CharField(  # type: ignore[assignment]  # a field, not Field.source
        max_length=100, required=False, allow_blank=True
    )
    channel = serializers.CharField(max_length=50, required=False, allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("value") is not None and not attrs.get("currency"):
            raise serializers.ValidationError({"currency": ["Give the currency of the value."]})
        return attrs

    def to_input(self) -> EventInput:
        data = self.validated_data
        contact_ref = data["contact"].strip()
        contact_id, email = None, ""
        try:
            contact_id = uuid.UUID(contact_ref)
        except ValueError:
            email = contact_ref
        return EventInput(
            name=data["name"],
            contact_id=contact_id,
            email=email,
            properties=data.get("properties") or {},
            value=data.get("value"),
            currency=data.get("currency", ""),
            occurred_at=data.get("occurred_at"),
            external_id=data.get("external_id") or None,
            source=data.get("source", ""),
            channel=data.get("channel", ""),
        )

    def validate_contact(self, value: str) -> str:
        value = value.strip()
        if "@" in value:
            try:
                return normalize_email(value)
            except ValidationError as exc:
                raise serializers.ValidationError(exc.messages) from exc
        return value


class EventApi(GenericAPIView[Funnel]):
    serializer_class = EventSerializer

    @extend_schema(request=EventSerializer, responses={201: dict[str, Any], 200: dict[str, Any]})
    def post(self, request: Request) -> Response:
        workspace = request_workspace(request)
        payload = EventSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        result = services.events_record(workspace=workspace, inputs=[payload.to_input()])
        if result.errors:
            return Response(result.errors[0]["errors"], status=status.HTTP_400_BAD_REQUEST)
        if result.events:
            event = result.events[0]
            return Response(_event_json(event), status=status.HTTP_201_CREATED)
        existing = services.event_by_external_id(
            workspace=workspace, external_id=payload.validated_data["external_id"]
        )
        assert existing is not None
        return Response(_event_json(existing), status=status.HTTP_200_OK)


def _event_json(event: Any) -> dict[str, Any]:
    return {
        "id": str(event.pk),
        "contact": str(event.contact_id),
        "name": event.name,
        "properties": event.properties,
        "value": None if event.value is None else str(event.value),
        "currency": event.currency,
        "occurred_at": event.occurred_at.isoformat(),
        "external_id": event.external_id,
        "source": event.source,
        "channel": event.channel,
    }


class EventBatchSerializer(serializers.Serializer[Any]):
    events = serializers.ListField(
        child=serializers.DictField(), max_length=MAX_BATCH, allow_empty=False
    )


class EventBatchApi(GenericAPIView[Funnel]):
    serializer_class = EventBatchSerializer

    @extend_schema(
        request=EventBatchSerializer,
        responses={200: dict[str, Any]},
        description="Up to 1000 events. Good items are stored, bad ones are reported by index: "
        '{"created", "duplicates", "errors": [{"index", "errors": {field: [...]}}]}.',
    )
    def post(self, request: Request) -> Response:
        workspace = request_workspace(request)
        payload = EventBatchSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        inputs: list[EventInput] = []
        positions: list[int] = []
        errors: list[dict[str, Any]] = []
        for index, item in enumerate(payload.validated_data["events"]):
            event = EventSerializer(data=item)
            if event.is_valid():
                inputs.append(event.to_input())
                positions.append(index)
            else:
                errors.append({"index": index, "errors": event.errors})
        result = services.events_record(workspace=workspace, inputs=inputs)
        errors += [
            {"index": positions[error["index"]], "errors": error["errors"]}
            for error in result.errors
        ]
        errors.sort(key=lambda error: error["index"])
        return Response(
            {"created": result.created, "duplicates": result.duplicates, "errors": errors}
        )


urlpatterns: list[URLPattern | URLResolver] = [
    path("funnels/", FunnelListApi.as_view(), name="api-funnel-list"),
    path("funnels/<uuid:pk>/", FunnelDetailApi.as_view(), name="api-funnel-detail"),
    path("funnels/<uuid:pk>/rules/", RuleListApi.as_view(), name="api-funnel-rules"),
    path(
        "funnels/<uuid:pk>/rules/<uuid:rule_id>/", RuleDetailApi.as_view(), name="api-funnel-rule"
    ),
    path(
        "funnels/<uuid:pk>/contacts/<uuid:contact_id>/move/",
        MoveApi.as_view(),
        name="api-funnel-move",
    ),
    path("events/", EventApi.as_view(), name="api-event"),
    path("events/batch/", EventBatchApi.as_view(), name="api-event-batch"),
]
