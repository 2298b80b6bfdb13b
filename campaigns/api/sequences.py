"""Sequences (API.md): CRUD with the step graph, activate and pause, enrollments."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import services
from campaigns.models import Enrollment, Reentry, Sequence, SequenceStatus
from contacts.models import Contact
from core.api.auth import request_workspace
from core.api.idempotency import idempotent
from funnel.models import Funnel


class SequenceSerializer(serializers.ModelSerializer[Sequence]):
    funnel = serializers.UUIDField(source="funnel_id", allow_null=True, read_only=True)

    class Meta:
        model = Sequence
        fields = [
            "id",
            "name",
            "funnel",
            "status",
            "trigger",
            "exit_on",
            "reentry",
            "send_window",
            "steps",
            "utm",
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class SequenceInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=150)
    funnel = serializers.UUIDField(required=False, allow_null=True)
    trigger = serializers.JSONField(required=False)
    exit_on = serializers.JSONField(required=False)
    reentry = serializers.ChoiceField(choices=Reentry.choices, required=False)
    send_window = serializers.JSONField(required=False, allow_null=True)
    steps = serializers.JSONField(required=False)
    utm = serializers.JSONField(
        required=False, help_text="UTM parameters added to the links of its mails."
    )

    def service_arguments(self, request: Request) -> dict[str, Any]:
        data = dict(self.validated_data)
        if "funnel" in data:
            funnel_id = data.pop("funnel")
            data["funnel"] = (
                get_object_or_404(Funnel, workspace=request_workspace(request), pk=funnel_id)
                if funnel_id
                else None
            )
        return data


def _sequences(request: Request) -> Any:
    return Sequence.objects.filter(workspace=request_workspace(request))


class SequenceListApi(GenericAPIView[Sequence]):
    serializer_class = SequenceSerializer

    @extend_schema(responses=SequenceSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(_sequences(request).order_by("name"))
        return self.get_paginated_response(SequenceSerializer(page, many=True).data)

    @extend_schema(request=SequenceInputSerializer, responses={201: SequenceSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        payload = SequenceInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        sequence = services.sequence_create(
            workspace=request_workspace(request), **payload.service_arguments(request)
        )
        return Response(SequenceSerializer(sequence).data, status=status.HTTP_201_CREATED)


class SequenceDetailApi(GenericAPIView[Sequence]):
    serializer_class = SequenceSerializer

    @extend_schema(responses=SequenceSerializer)
    def get(self, request: Request, pk: str) -> Response:
        return Response(SequenceSerializer(get_object_or_404(_sequences(request), pk=pk)).data)

    @extend_schema(request=SequenceInputSerializer(partial=True), responses=SequenceSerializer)
    def patch(self, request: Request, pk: str) -> Response:
        sequence = get_object_or_404(_sequences(request), pk=pk)
        payload = SequenceInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        sequence = services.sequence_update(sequence=sequence, **payload.service_arguments(request))
        return Response(SequenceSerializer(sequence).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        get_object_or_404(_sequences(request), pk=pk).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


def _status_view(new_status: str) -> type[GenericAPIView[Sequence]]:
    class SequenceStatusApi(GenericAPIView[Sequence]):
        serializer_class = SequenceSerializer

        @extend_schema(request=None, responses=SequenceSerializer)
        def post(self, request: Request, pk: str) -> Response:
            sequence = get_object_or_404(_sequences(request), pk=pk)
            sequence = services.sequence_set_status(sequence=sequence, status=new_status)
            return Response(SequenceSerializer(sequence).data)

    SequenceStatusApi.__name__ = f"Sequence{new_status.title()}Api"
    return SequenceStatusApi


class EnrollmentSerializer(serializers.ModelSerializer[Enrollment]):
    contact = serializers.UUIDField(source="contact_id", read_only=True)
    step = serializers.CharField(source="current_step", read_only=True)

    class Meta:
        model = Enrollment
        fields = [
            "id",
            "contact",
            "status",
            "step",
            "next_run_at",
            "entered_at",
            "finished_at",
            "exit_reason",
        ]
        read_only_fields = fields


class EnrollmentInputSerializer(serializers.Serializer[Any]):
    contact = serializers.UUIDField()


class EnrollmentListApi(GenericAPIView[Enrollment]):
    serializer_class = EnrollmentSerializer

    @extend_schema(responses=EnrollmentSerializer(many=True))
    def get(self, request: Request, pk: str) -> Response:
        sequence = get_object_or_404(_sequences(request), pk=pk)
        enrollments = Enrollment.objects.filter(sequence=sequence).order_by("-entered_at")
        page = self.paginate_queryset(enrollments)
        return self.get_paginated_response(EnrollmentSerializer(page, many=True).data)

    @extend_schema(request=EnrollmentInputSerializer, responses={201: EnrollmentSerializer})
    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        sequence = get_object_or_404(_sequences(request), pk=pk)
        payload = EnrollmentInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        contact = Contact.objects.filter(
            workspace=sequence.workspace, pk=payload.validated_data["contact"]
        ).first()
        if contact is None:
            raise serializers.ValidationError({"contact": ["No such contact."]})
        enrollment = services.enrollment_create(sequence=sequence, contact=contact, reason="api")
        if enrollment is None:
            return Response(
                {"detail": "The contact runs through this sequence already or may not re-enter."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(EnrollmentSerializer(enrollment).data, status=status.HTTP_201_CREATED)


urlpatterns: list[URLPattern | URLResolver] = [
    path("sequences/", SequenceListApi.as_view(), name="api-sequence-list"),
    path("sequences/<uuid:pk>/", SequenceDetailApi.as_view(), name="api-sequence-detail"),
    path(
        "sequences/<uuid:pk>/activate/",
        _status_view(SequenceStatus.ACTIVE).as_view(),
        name="api-sequence-activate",
    ),
    path(
        "sequences/<uuid:pk>/pause/",
        _status_view(SequenceStatus.PAUSED).as_view(),
        name="api-sequence-pause",
    ),
    path(
        "sequences/<uuid:pk>/enrollments/",
        EnrollmentListApi.as_view(),
        name="api-sequence-enrollments",
    ),
]
