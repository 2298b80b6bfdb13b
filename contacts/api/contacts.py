"""REST API for contacts (API.md: Contacts). Thin: parse, call one service or selector, render."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.urls import path
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from contacts import services, validators
from contacts.gdpr import contact_export
from contacts.models import Contact, ContactStatus
from contacts.selectors import (
    CONTACT_ORDERINGS,
    ContactFilter,
    contact_get,
    contact_list,
    contact_stages,
)
from contacts.timeline import contact_timeline
from core.api.auth import request_workspace
from core.api.idempotency import idempotent
from core.models import ApiKey

T = TypeVar("T")


def django_validator(func: Callable[[Any], T]) -> Callable[[Any], T]:
    """Run one of contacts.validators and turn its error into a serializer error."""

    def run(value: Any) -> T:
        from django.core.exceptions import ValidationError

        try:
            return func(value)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc

    return run


class ContactSerializer(serializers.ModelSerializer[Contact]):
    tags = serializers.SerializerMethodField()
    stages = serializers.SerializerMethodField(
        help_text="Funnel id -> stage id of the contact's current stage in each funnel."
    )

    class Meta:
        model = Contact
        fields = [
            "id",
            "email",
            "first_name",
            "last_name",
            "locale",
            "timezone",
            "attributes",
            "tags",
            "status",
            "source",
            "score",
            "created_at",
            "confirmed_at",
            "unsubscribed_at",
            "stages",
        ]
        read_only_fields = fields

    def get_tags(self, contact: Contact) -> list[str]:
        return sorted(tag.name for tag in contact.tags.all())

    def get_stages(self, contact: Contact) -> dict[str, str]:
        # The funnel app sits above contacts and provides these; lists pass them in context
        # for the whole page at once.
        if "stages" in self.context:
            return self.context["stages"].get(contact.pk, {})
        return contact_stages([contact.pk]).get(contact.pk, {})


class ConsentSerializer(serializers.Serializer[Any]):
    text = serializers.CharField(max_length=10_000)
    ip = serializers.IPAddressField(required=False, allow_null=True)
    at = serializers.DateTimeField()


class ContactInputSerializer(serializers.Serializer[Any]):
    email = serializers.CharField(max_length=320)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    locale = serializers.CharField(
        max_length=10,
        required=False,
        allow_blank=True,
        validators=[django_validator(validators.validate_locale)],
    )
    timezone = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        validators=[django_validator(validators.validate_timezone)],
    )
    attributes = serializers.JSONField(
        required=False,
        help_text="Merged into the stored attributes; a key set to null is removed.",
    )
    tags = serializers.JSONField(
        required=False, help_text="The contact's tags: replaces the stored ones."
    )
    status = serializers.ChoiceField(choices=ContactStatus.choices, required=False)
    source = serializers.CharField(  # type: ignore[assignment]  # a field, not Field.source
        max_length=200, required=False, allow_blank=True
    )
    score = serializers.IntegerField(required=False, min_value=-1_000_000, max_value=1_000_000)
    consent = ConsentSerializer(required=False)

    def validate_email(self, value: str) -> str:
        return django_validator(validators.normalize_email)(value)

    def validate_attributes(self, value: Any) -> dict[str, Any]:
        return django_validator(validators.validate_attributes)(value)

    def validate_tags(self, value: Any) -> list[str]:
        return django_validator(validators.clean_tags)(value)

    def consent_proof(self, *, source: str) -> services.ConsentProof | None:
        consent = self.validated_data.get("consent")
        if consent is None:
            return None
        return services.ConsentProof(
            text=consent["text"], at=consent["at"], ip=consent.get("ip"), source=source
        )

    def changes(self) -> dict[str, Any]:
        return {
            key: value
            for key, value in self.validated_data.items()
            if key not in {"email", "consent"}
        }


class ContactFilterSerializer(serializers.Serializer[Any]):
    email = serializers.CharField(required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=ContactStatus.choices, required=False)
    tag = serializers.CharField(required=False, allow_blank=True)
    stage = serializers.UUIDField(required=False, help_text="Contacts now in this funnel stage.")
    search = serializers.CharField(required=False, allow_blank=True, max_length=200)
    ordering = serializers.ChoiceField(choices=sorted(CONTACT_ORDERINGS), required=False)

    def to_filter(self) -> ContactFilter:
        data = dict(self.validated_data)
        if data.get("stage"):
            data["stage"] = str(data["stage"])
        return ContactFilter(**data)


def _recorded_by(request: Request) -> str:
    api_key = request.auth
    return f"api_key:{api_key.prefix}" if isinstance(api_key, ApiKey) else "api"


class ContactListApi(GenericAPIView[Contact]):
    serializer_class = ContactSerializer

    @extend_schema(
        parameters=[ContactFilterSerializer],
        responses=ContactSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        params = ContactFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        contacts = contact_list(workspace=request_workspace(request), filters=params.to_filter())
        page = self.paginate_queryset(contacts) or []
        stages = contact_stages([contact.pk for contact in page])
        return self.get_paginated_response(
            ContactSerializer(page, many=True, context={"stages": stages}).data
        )

    @extend_schema(
        request=ContactInputSerializer,
        responses={200: ContactSerializer, 201: ContactSerializer},
        description=str(
            _("Upsert by email (case-insensitive): 201 when created, 200 when it existed.")
        ),
    )
    @idempotent
    def post(self, request: Request) -> Response:
        payload = ContactInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        recorded_by = _recorded_by(request)
        contact, created = services.contact_upsert(
            workspace=request_workspace(request),
            email=payload.validated_data["email"],
            changes=payload.changes(),
            consent=payload.consent_proof(source=recorded_by),
            recorded_by=recorded_by,
        )
        contact = contact_get(workspace=request_workspace(request), contact_id=contact.pk)
        return Response(
            ContactSerializer(contact).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ContactDetailApi(GenericAPIView[Contact]):
    serializer_class = ContactSerializer

    @extend_schema(responses=ContactSerializer)
    def get(self, request: Request, pk: str) -> Response:
        contact = contact_get(workspace=request_workspace(request), contact_id=pk)
        return Response(ContactSerializer(contact).data)

    @extend_schema(request=ContactInputSerializer(partial=True), responses=ContactSerializer)
    def patch(self, request: Request, pk: str) -> Response:
        contact = contact_get(workspace=request_workspace(request), contact_id=pk)
        payload = ContactInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        if "email" in payload.validated_data and payload.validated_data["email"] != contact.email:
            raise serializers.ValidationError(
                {"email": [_("The address identifies the contact and cannot be changed.")]}
            )
        recorded_by = _recorded_by(request)
        services.contact_update(
            contact=contact,
            changes=payload.changes(),
            consent=payload.consent_proof(source=recorded_by),
            recorded_by=recorded_by,
        )
        contact = contact_get(workspace=request_workspace(request), contact_id=pk)
        return Response(ContactSerializer(contact).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        contact = contact_get(workspace=request_workspace(request), contact_id=pk)
        services.contact_erase(contact=contact)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ContactExportApi(GenericAPIView[Contact]):
    """Everything held on the contact (GDPR art. 15)."""

    serializer_class = ContactSerializer

    @extend_schema(responses=dict[str, Any])
    def get(self, request: Request, pk: str) -> Response:
        contact = contact_get(workspace=request_workspace(request), contact_id=pk)
        return Response(contact_export(contact))


class TimelineParamsSerializer(serializers.Serializer[Any]):
    limit = serializers.IntegerField(required=False, default=200, min_value=1, max_value=1000)


class ContactTimelineApi(GenericAPIView[Contact]):
    """Events, messages, email activity and stage moves, newest first."""

    serializer_class = ContactSerializer

    @extend_schema(responses=dict[str, Any])
    def get(self, request: Request, pk: str) -> Response:
        contact = contact_get(workspace=request_workspace(request), contact_id=pk)
        params = TimelineParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        items = contact_timeline(contact, limit=params.validated_data["limit"])
        return Response({"results": [item.as_json() for item in items]})


urlpatterns = [
    path("contacts/", ContactListApi.as_view(), name="api-contact-list"),
    path("contacts/<uuid:pk>/", ContactDetailApi.as_view(), name="api-contact-detail"),
    path("contacts/<uuid:pk>/export/", ContactExportApi.as_view(), name="api-contact-export"),
    path("contacts/<uuid:pk>/timeline/", ContactTimelineApi.as_view(), name="api-contact-timeline"),
]
