"""REST API of the campaigns app (API.md: Sequences, Broadcasts, messages)."""

from django.urls import URLPattern, URLResolver

from campaigns.api import broadcasts, sequences, simulation

urlpatterns: list[URLPattern | URLResolver] = [
    *sequences.urlpatterns,
    *simulation.urlpatterns,
    *broadcasts.urlpatterns,
]
