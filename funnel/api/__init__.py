"""REST API of the funnel app (API.md: Funnels and events, Webhooks); one module per resource."""

from django.urls import URLPattern, URLResolver

from funnel.api import funnels, webhooks

urlpatterns: list[URLPattern | URLResolver] = [*funnels.urlpatterns, *webhooks.urlpatterns]
