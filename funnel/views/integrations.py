"""Pages for shop integrations (admins only): connect a Shopify shop, see the URL to paste into
Shopify's admin, disconnect it."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core.exceptions import ApplicationError
from core.models import Membership, Role
from core.permissions import workspace_view
from funnel import shopify
from funnel.models import ShopifyIntegration


class ShopifyIntegrationForm(forms.Form):
    name = forms.CharField(
        label=gettext_lazy("Shop name"),
        max_length=150,
        widget=forms.TextInput(attrs={"placeholder": "acme.myshopify.com"}),
    )
    secret = forms.CharField(
        label=gettext_lazy("Webhook signing secret"),
        max_length=200,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=gettext_lazy(
            "Shopify admin → Settings → Notifications → Webhooks: the key shown under "
            "“Your webhooks will be signed with”."
        ),
    )
    event_name = forms.CharField(
        label=gettext_lazy("Event name"),
        max_length=100,
        initial="purchase",
        help_text=gettext_lazy("Each order becomes an event with this name."),
    )


def webhook_url(integration: ShopifyIntegration) -> str:
    """The address Shopify posts orders to."""
    return settings.PUBLIC_BASE_URL.rstrip("/") + reverse(
        "shopify-orders-create", args=[integration.pk]
    )


def _integrations(membership: Membership) -> list[ShopifyIntegration]:
    integrations = list(
        ShopifyIntegration.objects.filter(workspace=membership.workspace).order_by("name")
    )
    for integration in integrations:
        integration.webhook_url = webhook_url(integration)  # type: ignore[attr-defined]
    return integrations


@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def integration_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    return render(
        request,
        "funnel/integrations/list.html",
        {"integrations": _integrations(membership), "form": ShopifyIntegrationForm()},
    )


@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def integration_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = ShopifyIntegrationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            integration = shopify.shopify_integration_create(
                workspace=membership.workspace,
                name=form.cleaned_data["name"],
                secret=form.cleaned_data["secret"],
                event_name=form.cleaned_data["event_name"],
            )
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(
                request,
                _("%(name)s connected. Paste its URL into Shopify's webhook settings.")
                % {"name": integration.name},
            )
            return redirect("integration-list")
    return render(
        request,
        "funnel/integrations/list.html",
        {"integrations": _integrations(membership), "form": form},
    )


@workspace_view(read=Role.ADMIN, write=Role.ADMIN)
def integration_delete(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    integration = get_object_or_404(ShopifyIntegration, pk=pk, workspace=membership.workspace)
    if request.method == "POST":
        shopify.shopify_integration_delete(integration=integration)
        messages.success(request, _("%(name)s disconnected.") % {"name": integration.name})
        return redirect("integration-list")
    return render(request, "funnel/integrations/confirm_delete.html", {"integration": integration})


urlpatterns: list[URLPattern | URLResolver] = [
    path("", integration_list, name="integration-list"),
    path("new/", integration_create, name="integration-create"),
    path("<uuid:pk>/delete/", integration_delete, name="integration-delete"),
]
