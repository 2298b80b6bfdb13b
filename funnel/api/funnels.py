"""REST API of the funnel app (API.md: Funnels and events)."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from contacts.models import Contact
from core.api.auth import request_workspace
from core.api.idempotency import idempotent
from core.models import ApiKey
from funnel import selectors, services
from funnel.event_input import parse_event
from funnel.models import Event, Funnel, FunnelPreset, Stage, StageRule, TransitionCause
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
            stages=[dict(stage) for stage in data.get("stages", [])],
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
        stages = [dict(stage) for stage in data["stages"]] if "stages" in data else None
        services.funnel_update(
            funnel=funnel, name=data.get("name"), goal_event=data.get("goal_event"), stages=stages
        )
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
    """The shape of one event, for the schema; items are parsed by funnel.event_input."""

    contact = serializers.CharField(max_length=320, help_text="Contact id or email address.")
    name = serializers.RegexField(r"^[A-Za-z0-9_.:-]{1,100}$", max_length=100)
    properties = serializers.DictField(required=False)
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


def _event_json(event: Event) -> dict[str, Any]:
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


class EventApi(GenericAPIView[Event]):
    serializer_class = EventSerializer

    @extend_schema(
        request=EventSerializer,
        responses={201: dict[str, Any], 200: dict[str, Any]},
        description="201 when stored; a repeated external_id answers 200 with the stored "
        "event and stores nothing. An unknown email creates a not_subscribed contact.",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        workspace = request_workspace(request)
        event_input, errors = parse_event(request.data)
        if event_input is None:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        result = services.events_record(workspace=workspace, inputs=[event_input])
        if result.errors:
            return Response(result.errors[0]["errors"], status=status.HTTP_400_BAD_REQUEST)
        if result.event_ids:
            event = Event.objects.get(pk=result.event_ids[0])
            return Response(_event_json(event), status=status.HTTP_201_CREATED)
        assert event_input.external_id is not None
        existing = services.event_by_external_id(
            workspace=workspace, external_id=event_input.external_id
        )
        assert existing is not None
        return Response(_event_json(existing), status=status.HTTP_200_OK)


class EventBatchSerializer(serializers.Serializer[Any]):
    events = EventSerializer(many=True)


class EventBatchApi(GenericAPIView[Event]):
    serializer_class = EventBatchSerializer

    @extend_schema(
        request=EventBatchSerializer,
        responses={200: dict[str, Any]},
        description="Up to 1000 events. Good items are stored, bad ones are reported by index: "
        '{"created", "duplicates", "errors": [{"index", "errors": {field: [...]}}]}.',
    )
    @idempotent
    def post(self, request: Request) -> Response:
        workspace = request_workspace(request)
        items = request.data.get("events") if isinstance(request.data, dict) else None
        if not isinstance(items, list) or not items:
            raise serializers.ValidationError({"events": ["Give a non-empty list of events."]})
        if len(items) > MAX_BATCH:
            raise serializers.ValidationError(
                {"events": [f"At most {MAX_BATCH} events per batch."]}
            )
        inputs: list[EventInput] = []
        positions: list[int] = []
        errors: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            event_input, item_errors = parse_event(item)
            if event_input is None:
                errors.append({"index": index, "errors": item_errors})
            else:
                inputs.append(event_input)
                positions.append(index)
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
