"""Lists and double opt-in (API.md): CRUD, subscribe, unsubscribe."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import Throttled
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from contacts import subscriptions, validators
from contacts.api.contacts import django_validator
from contacts.models import Contact, MailingList, SubscriptionStatus
from core.api.auth import request_workspace
from core.api.idempotency import idempotent
from core.ratelimit import Rate, rate_limit_hit


class MailingListSerializer(serializers.ModelSerializer[MailingList]):
    subscriber_count = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = MailingList
        fields = [
            "id",
            "name",
            "description",
            "double_opt_in",
            "subscriber_count",
            "confirmation_templates",
            "created_at",
        ]
        read_only_fields = ["id", "subscriber_count", "created_at"]


class MailingListInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=150)
    description = serializers.CharField(required=False, allow_blank=True)
    double_opt_in = serializers.BooleanField(required=False, default=True)
    confirmation_templates = serializers.JSONField(required=False)


class SubscribeSerializer(serializers.Serializer[Any]):
    email = serializers.CharField(max_length=320)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    attributes = serializers.JSONField(required=False)
    locale = serializers.CharField(
        max_length=10,
        required=False,
        allow_blank=True,
        validators=[django_validator(validators.validate_locale)],
    )
    consent_text = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    ip = serializers.IPAddressField(required=False, allow_null=True)
    source = serializers.CharField(  # type: ignore[assignment]  # a field, not Field.source
        required=False, allow_blank=True, max_length=200
    )

    def validate_email(self, value: str) -> str:
        return django_validator(validators.normalize_email)(value)

    def validate_attributes(self, value: Any) -> dict[str, Any]:
        return django_validator(validators.validate_attributes)(value)


class UnsubscribeSerializer(serializers.Serializer[Any]):
    email = serializers.CharField(max_length=320)

    def validate_email(self, value: str) -> str:
        return django_validator(validators.normalize_email)(value)


def _lists(request: Request) -> Any:
    return subscriptions.mailing_lists_with_counts(workspace=request_workspace(request))


class MailingListListApi(GenericAPIView[MailingList]):
    serializer_class = MailingListSerializer

    @extend_schema(responses=MailingListSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(_lists(request).order_by("name"))
        return self.get_paginated_response(MailingListSerializer(page, many=True).data)

    @extend_schema(request=MailingListInputSerializer, responses={201: MailingListSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        payload = MailingListInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        mailing_list = subscriptions.mailing_list_create(
            workspace=request_workspace(request), **payload.validated_data
        )
        created = _lists(request).get(pk=mailing_list.pk)
        return Response(MailingListSerializer(created).data, status=status.HTTP_201_CREATED)


class MailingListDetailApi(GenericAPIView[MailingList]):
    serializer_class = MailingListSerializer

    @extend_schema(responses=MailingListSerializer)
    def get(self, request: Request, pk: str) -> Response:
        return Response(MailingListSerializer(get_object_or_404(_lists(request), pk=pk)).data)

    @extend_schema(
        request=MailingListInputSerializer(partial=True), responses=MailingListSerializer
    )
    def patch(self, request: Request, pk: str) -> Response:
        mailing_list = get_object_or_404(_lists(request), pk=pk)
        payload = MailingListInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        subscriptions.mailing_list_update(mailing_list=mailing_list, **payload.validated_data)
        return Response(MailingListSerializer(_lists(request).get(pk=pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: str) -> Response:
        subscriptions.mailing_list_delete(mailing_list=get_object_or_404(_lists(request), pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SubscribeApi(GenericAPIView[MailingList]):
    serializer_class = SubscribeSerializer

    @extend_schema(
        request=SubscribeSerializer,
        responses={202: dict[str, str], 200: dict[str, str]},
        description="Double opt-in lists answer 202 and mail a confirmation (at most one per "
        "address every 10 minutes); lists without double opt-in subscribe at once (200). "
        "Never mails a suppressed address.",
    )
    @idempotent
    def post(self, request: Request, pk: str) -> Response:
        mailing_list = get_object_or_404(_lists(request), pk=pk)
        payload = SubscribeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        if data.get("ip"):
            rate = Rate.parse(settings.SIGNUP_RATE_LIMIT_PER_IP)
            if rate_limit_hit(scope="subscribe-api", key=data["ip"], rate=rate):
                raise Throttled(wait=rate.seconds)
        result = subscriptions.list_subscribe(
            mailing_list=mailing_list,
            email=data["email"],
            profile={
                key: data[key]
                for key in ("first_name", "last_name", "attributes", "locale")
                if key in data
            }
            | {"source": data.get("source", "api")},
            context=subscriptions.SignupContext(
                ip=data.get("ip"),
                consent_text=data.get("consent_text", ""),
                source=data.get("source") or "api",
            ),
        )
        subscribed = result.status == SubscriptionStatus.SUBSCRIBED
        return Response(
            {"contact": str(result.contact.pk), "status": result.status},
            status=status.HTTP_200_OK if subscribed else status.HTTP_202_ACCEPTED,
        )


class UnsubscribeApi(GenericAPIView[MailingList]):
    serializer_class = UnsubscribeSerializer

    @extend_schema(request=UnsubscribeSerializer, responses={200: dict[str, str]})
    def post(self, request: Request, pk: str) -> Response:
        mailing_list = get_object_or_404(_lists(request), pk=pk)
        payload = UnsubscribeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        contact = Contact.objects.filter(
            workspace=mailing_list.workspace, email=payload.validated_data["email"]
        ).first()
        if contact is not None:
            subscriptions.contact_leave_lists(
                contact=contact, mailing_lists=[mailing_list], source="api"
            )
        # The same answer for unknown addresses: the API reveals no more than it must.
        return Response({"status": "unsubscribed"})


urlpatterns: list[URLPattern | URLResolver] = [
    path("lists/", MailingListListApi.as_view(), name="api-list-list"),
    path("lists/<uuid:pk>/", MailingListDetailApi.as_view(), name="api-list-detail"),
    path("lists/<uuid:pk>/subscribe/", SubscribeApi.as_view(), name="api-list-subscribe"),
    path("lists/<uuid:pk>/unsubscribe/", UnsubscribeApi.as_view(), name="api-list-unsubscribe"),
]
