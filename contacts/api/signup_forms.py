"""Signup forms (API.md: GET/POST /forms/ · GET/PATCH/DELETE /forms/{id}/)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from contacts import signup_forms
from contacts.models import MailingList, SignupForm
from core.api.auth import request_workspace
from core.api.idempotency import idempotent


class FormFieldSerializer(serializers.Serializer[Any]):
    # `label` and `required` are also attributes of every DRF field; declared fields are taken
    # off the class by DRF's metaclass, so these names are safe at run time.
    name = serializers.CharField()
    label = serializers.CharField(required=False, allow_blank=True)  # type: ignore[assignment]
    required = serializers.BooleanField(required=False, default=False)  # type: ignore[assignment]


class SignupFormSerializer(serializers.ModelSerializer[SignupForm]):
    consent_text = serializers.CharField(source="consent_text.text", read_only=True)
    url = serializers.SerializerMethodField()
    embed_html = serializers.SerializerMethodField()

    class Meta:
        model = SignupForm
        fields = [
            "id",
            "name",
            "consent_text",
            "privacy_policy_url",
            "success_url",
            "confirmed_url",
            "locale",
            "url",
            "embed_html",
        ]
        read_only_fields = fields

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # "fields" is the name API.md gives the form's fields, and also DRF's own attribute
        # for a serializer's fields: it can only be added here, not declared on the class.
        declared = super().get_fields()
        added: dict[str, serializers.Field[Any, Any, Any, Any]] = {
            "list": serializers.UUIDField(source="mailing_list_id", read_only=True),
            "fields": serializers.SerializerMethodField(method_name="get_form_fields"),
        }
        return {"id": declared.pop("id"), "name": declared.pop("name"), **added, **declared}

    def get_form_fields(self, signup_form: SignupForm) -> list[dict[str, Any]]:
        return [{"name": "email", "label": "Email", "required": True}, *signup_form.fields]

    def get_url(self, signup_form: SignupForm) -> str:
        return signup_forms.hosted_url(signup_form)

    def get_embed_html(self, signup_form: SignupForm) -> str:
        return signup_forms.embed_html(signup_form)


class SignupFormInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=150)
    list = serializers.UUIDField()
    consent_text = serializers.CharField(max_length=10_000)
    privacy_policy_url = serializers.URLField()
    success_url = serializers.URLField(required=False, allow_blank=True)
    confirmed_url = serializers.URLField(required=False, allow_blank=True)
    locale = serializers.ChoiceField(choices=settings.LANGUAGES, required=False)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()  # "fields": see SignupFormSerializer.get_fields
        fields["fields"] = FormFieldSerializer(many=True, required=False)
        return fields

    def service_arguments(self, request: Request) -> dict[str, Any]:
        data = dict(self.validated_data)
        if "list" in data:
            data["mailing_list"] = get_object_or_404(
                MailingList.objects.filter(workspace=request_workspace(request)),
                pk=data.pop("list"),
            )
        if "fields" in data:
            data["fields"] = [dict(spec) for spec in data["fields"]]
        return data


def _forms(request: Request) -> Any:
    return SignupForm.objects.filter(workspace=request_workspace(request)).select_related(
        "consent_text", "workspace"
    )


class SignupFormListApi(GenericAPIView[SignupForm]):
    serializer_class = SignupFormSerializer

    @extend_schema(responses=SignupFormSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(_forms(request).order_by("name"))
        return self.get_paginated_response(SignupFormSerializer(page, many=True).data)

    @extend_schema(request=SignupFormInputSerializer, responses={201: SignupFormSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        payload = SignupFormInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        signup_form = signup_forms.signup_form_create(
            workspace=request_workspace(request), **payload.service_arguments(request)
        )
        return Response(SignupFormSerializer(signup_form).data, status=status.HTTP_201_CREATED)


class SignupFormDetailApi(GenericAPIView[SignupForm]):
    serializer_class = SignupFormSerializer

    @extend_schema(responses=SignupFormSerializer)
    def get(self, request: Request, pk: str) -> Response:
        return Response(SignupFormSerializer(get_object_or_404(_forms(request), pk=pk)).data)

    @extend_schema(request=SignupFormInputSerializer(partial=True), responses=SignupFormSerializer)
    def patch(self, request: Request, pk: str) -> Response:
        signup_form = get_object_or_404(_forms(request), pk=pk)
        payload = SignupFormInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        signup_forms.signup_form_update(
            signup_form=signup_form, **payload.service_arguments(request)
        )
        return Response(SignupFormSerializer(_forms(request).get(pk=pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        get_object_or_404(_forms(request), pk=pk).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns: list[URLPattern | URLResolver] = [
    path("forms/", SignupFormListApi.as_view(), name="api-form-list"),
    path("forms/<uuid:pk>/", SignupFormDetailApi.as_view(), name="api-form-detail"),
]
