"""REST API for CSV imports (API.md: POST /contacts/import/, GET /imports/{id}/). Thin views."""

from __future__ import annotations

import json
from typing import Any

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts import importing
from contacts.models import ContactImport, MailingList
from core.api.auth import request_workspace
from core.api.idempotency import idempotent
from core.models import ApiKey, Workspace

MAX_ERRORS_SHOWN = 1000


def _recorded_by(request: Request) -> str:
    api_key = request.auth
    return f"api_key:{api_key.prefix}" if isinstance(api_key, ApiKey) else "api"


@extend_schema_field(OpenApiTypes.STR)
class JsonTextField(serializers.Field[Any, Any, str, Any]):
    """A form field carrying JSON (multipart bodies have no nested values)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise serializers.ValidationError("This is not valid JSON.") from exc

    def to_representation(self, value: Any) -> str:
        return json.dumps(value)


class ImportStartSerializer(serializers.Serializer[Any]):
    file = serializers.FileField(help_text="The CSV file: UTF-8 (with or without BOM) or Latin-1.")
    mapping = JsonTextField(
        required=False,
        help_text='JSON object column -> field, e.g. {"E-Mail": "email", "Vorname": '
        '"first_name", "Stadt": "attributes.city"}; without it the columns are guessed '
        "from their names.",
    )
    tags = JsonTextField(required=False, help_text="JSON list of tags added to every row.")
    list = serializers.UUIDField(
        required=False, help_text="A list the rows with consent are subscribed to."
    )

    def mailing_list(self, workspace: Workspace) -> MailingList | None:
        list_id = self.validated_data.get("list")
        if list_id is None:
            return None
        mailing_list = MailingList.objects.filter(workspace=workspace, pk=list_id).first()
        if mailing_list is None:
            raise serializers.ValidationError({"list": ["Unknown list."]})
        return mailing_list


class ImportErrorSerializer(serializers.Serializer[Any]):
    row = serializers.IntegerField()
    message = serializers.CharField()


class ImportSerializer(serializers.ModelSerializer[ContactImport]):
    class Meta:
        model = ContactImport
        fields = ["id", "status", "total", "processed", "created", "updated", "failed"]
        read_only_fields = fields


class ImportStartedSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    status = serializers.CharField()


ImportStateSerializer = inline_serializer(
    name="ImportState",
    fields={
        "id": serializers.UUIDField(),
        "status": serializers.CharField(),
        "total": serializers.IntegerField(),
        "processed": serializers.IntegerField(),
        "created": serializers.IntegerField(),
        "updated": serializers.IntegerField(),
        "failed": serializers.IntegerField(),
        "errors": ImportErrorSerializer(many=True),
        "errors_truncated": serializers.BooleanField(),
    },
)


class ContactImportApi(APIView):
    @extend_schema(
        request={"multipart/form-data": ImportStartSerializer},
        responses={202: ImportStartedSerializer},
        description="Upload a CSV and start importing it; poll GET /imports/{id}/.",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        payload = ImportStartSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        workspace = request_workspace(request)
        contact_import = importing.contact_import_start(
            workspace=workspace,
            uploaded_file=payload.validated_data["file"],
            created_by=_recorded_by(request),
            mapping=payload.validated_data.get("mapping"),
            tags=payload.validated_data.get("tags") or [],
            mailing_list=payload.mailing_list(workspace),
        )
        return Response(
            {"id": str(contact_import.pk), "status": contact_import.status},
            status=status.HTTP_202_ACCEPTED,
        )


class ImportDetailApi(APIView):
    @extend_schema(responses=ImportStateSerializer)
    def get(self, request: Request, pk: str) -> Response:
        contact_import = importing.contact_import_get(
            workspace=request_workspace(request), import_id=pk
        )
        errors, truncated = importing.contact_import_errors(contact_import, limit=MAX_ERRORS_SHOWN)
        body = ImportSerializer(contact_import).data
        body["errors"] = [{"row": error.row, "message": error.message} for error in errors]
        body["errors_truncated"] = truncated
        return Response(body)


urlpatterns = [
    path("contacts/import/", ContactImportApi.as_view(), name="api-contact-import"),
    path("imports/<uuid:pk>/", ImportDetailApi.as_view(), name="api-import-detail"),
]
