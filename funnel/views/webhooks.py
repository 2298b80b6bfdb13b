"""Pages for outgoing webhooks (admins only): endpoints, their delivery log, test and enable."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, URLResolver, path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from core.exceptions import ApplicationError
from core.models import Membership, Role
from core.permissions import workspace_view
from funnel import outbound_http, webhooks
from funnel.models import WebhookEndpoint

EVENT_TYPE_LABELS: dict[str, Any] = {
    "contact.created": gettext_lazy("A contact was added"),
    "contact.confirmed": gettext_lazy("A contact confirmed (double opt-in) or was subscribed"),
    "contact.unsubscribed": gettext_lazy("A contact unsubscribed, bounced or complained"),
    "contact.stage_changed": gettext_lazy("A contact moved to another funnel stage"),
    "contact.converted": gettext_lazy("A contact reached a funnel's goal"),
    "message.sent": gettext_lazy("A mail was handed to the mail provider"),
    "message.delivered": gettext_lazy("A mail was delivered"),
    "message.opened": gettext_lazy("A mail was opened"),
    "message.clicked": gettext_lazy("A link in a mail was clicked"),
    "message.bounced": gettext_lazy("A mail bounced"),
    "message.complained": gettext_lazy("A recipient marked a mail as spam"),
}
DELIVERIES_PER_PAGE = 20


class EndpointForm(forms.Form):
    url = forms.CharField(
        label=gettext_lazy("Endpoint URL"),
        max_length=2000,
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/hooks/funnelwerk"}),
        help_text=gettext_lazy("An https:// URL on a public address."),
    )
    events = forms.MultipleChoiceField(
        label=gettext_lazy("Event types"),
        choices=[(event_type, event_type) for event_type in webhooks.EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": gettext_lazy("Choose at least one event type.")},
    )

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"].strip()
        try:
            outbound_http.check_url(url)
        except outbound_http.UnsafeUrl as exc:
            raise forms.ValidationError(str(exc)) from exc
        return url


def _event_choices(form: EndpointForm) -> list[dict[str, Any]]:
    chosen = set(form["events"].value() or [])
    return [
        {
            "value": event_type,
            "label": EVENT_TYPE_LABELS[event_type],
            "checked": event_type in chosen,
        }
        for event_type in webhooks.EVENT_TYPES
    ]


def _endpoint(membership: Membership, pk: str) -> WebhookEndpoint:
    return get_object_or_404(webhooks.endpoint_list(workspace=membership.workspace), pk=pk)


@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def webhook_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    endpoints = webhooks.endpoint_list(workspace=membership.workspace)
    return render(request, "funnel/webhooks/list.html", {"endpoints": endpoints})


@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def webhook_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = EndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint, secret = webhooks.webhook_endpoint_create(
                workspace=membership.workspace,
                url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
            )
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            response = render(
                request, "funnel/webhooks/created.html", {"endpoint": endpoint, "secret": secret}
            )
            response["Cache-Control"] = "no-store"
            return response
    return render(
        request,
        "funnel/webhooks/form.html",
        {"form": form, "event_choices": _event_choices(form)},
    )


@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def webhook_detail(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    endpoint = _endpoint(membership, pk)
    deliveries = webhooks.endpoint_deliveries(endpoint=endpoint)
    page = Paginator(deliveries, DELIVERIES_PER_PAGE).get_page(request.GET.get("page"))
    event_labels = [(event_type, EVENT_TYPE_LABELS[event_type]) for event_type in endpoint.events]
    return render(
        request,
        "funnel/webhooks/detail.html",
        {"endpoint": endpoint, "page": page, "event_labels": event_labels},
    )


@require_POST
@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def webhook_test(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    endpoint = _endpoint(membership, pk)
    webhooks.webhook_send_test(endpoint=endpoint)
    messages.success(
        request, _("A test delivery is on its way. Reload to see its result in the log.")
    )
    return redirect("webhook-detail", pk=endpoint.pk)


@require_POST
@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def webhook_enable(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    endpoint = _endpoint(membership, pk)
    webhooks.webhook_endpoint_update(endpoint=endpoint, enabled=True)
    messages.success(request, _("The endpoint is enabled again."))
    return redirect("webhook-detail", pk=endpoint.pk)


@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def webhook_delete(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    endpoint = _endpoint(membership, pk)
    if request.method == "POST":
        webhooks.webhook_endpoint_delete(endpoint=endpoint)
        messages.success(request, _("Webhook endpoint deleted."))
        return redirect("webhook-list")
    return render(request, "funnel/webhooks/confirm_delete.html", {"endpoint": endpoint})


urlpatterns: list[URLPattern | URLResolver] = [
    path("", webhook_list, name="webhook-list"),
    path("new/", webhook_create, name="webhook-create"),
    path("<uuid:pk>/", webhook_detail, name="webhook-detail"),
    path("<uuid:pk>/test/", webhook_test, name="webhook-test"),
    path("<uuid:pk>/enable/", webhook_enable, name="webhook-enable"),
    path("<uuid:pk>/delete/", webhook_delete, name="webhook-delete"),
]
