from django.urls import path

from contacts import views

urlpatterns = [
    path("", views.contact_index, name="contact-list"),
    path("new/", views.contact_create, name="contact-create"),
    path("<uuid:pk>/", views.contact_detail, name="contact-detail"),
    path("<uuid:pk>/edit/", views.contact_edit, name="contact-edit"),
    path("<uuid:pk>/delete/", views.contact_delete, name="contact-delete"),
]
