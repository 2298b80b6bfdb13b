"""Pages of the funnel app, mounted under /funnels/ (public endpoints: funnel/public_urls.py)."""

from django.urls import URLPattern, URLResolver, include, path

from funnel.views import board, integrations, webhooks

urlpatterns: list[URLPattern | URLResolver] = [
    path("", include(board.urlpatterns)),
    path("webhooks/", include(webhooks.urlpatterns)),
    path("integrations/", include(integrations.urlpatterns)),
]
