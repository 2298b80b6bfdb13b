"""Public pages without login: signup forms, confirmation and unsubscribe links."""

from django.urls import URLPattern, URLResolver

from contacts.views import public

urlpatterns: list[URLPattern | URLResolver] = [*public.urlpatterns]
