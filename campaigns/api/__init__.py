"""REST API of the campaigns app (API.md: Sequences, Broadcasts, messages)."""

from django.urls import URLPattern, URLResolver

from campaigns.api import messages, sequences

urlpatterns: list[URLPattern | URLResolver] = [*sequences.urlpatterns, *messages.urlpatterns]
