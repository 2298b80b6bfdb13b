"""REST API of the tracking app (API.md: GET /messages/ with each mail's activity)."""

from django.urls import URLPattern, URLResolver

from tracking.api import messages

urlpatterns: list[URLPattern | URLResolver] = [*messages.urlpatterns]
