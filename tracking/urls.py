"""The tracking URLs (served by tracking.middleware before the other middleware; these
patterns name them for reverse() and answer should the middleware be left out)."""

from django.urls import path

from tracking import views

app_name = "tracking"

urlpatterns = [
    path("t/o/<str:token>", views.open_pixel, name="open"),
    path("t/c/<str:token>", views.click_redirect, name="click"),
]
