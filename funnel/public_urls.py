"""Public endpoints of the funnel app (no login, no API key): inbound shop webhooks."""

from django.urls import URLPattern, URLResolver

from funnel.views import public

urlpatterns: list[URLPattern | URLResolver] = [*public.urlpatterns]
