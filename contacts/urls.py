"""Pages of the contacts app, mounted under /contacts/ (public pages: contacts/public_urls.py)."""

from django.urls import URLPattern, URLResolver, include, path

from contacts.views import contacts, imports, lists, segments, signup_forms

urlpatterns: list[URLPattern | URLResolver] = [
    path("", contacts.contact_index, name="contact-list"),
    path("new/", contacts.contact_create, name="contact-create"),
    path("<uuid:pk>/", contacts.contact_detail, name="contact-detail"),
    path("<uuid:pk>/edit/", contacts.contact_edit, name="contact-edit"),
    path("<uuid:pk>/delete/", contacts.contact_delete, name="contact-delete"),
    path("<uuid:pk>/export.json", contacts.contact_export_json, name="contact-export"),
    path("lists/", include(lists.urlpatterns)),
    path("forms/", include(signup_forms.urlpatterns)),
    path("segments/", include(segments.urlpatterns)),
    path("imports/", include(imports.urlpatterns)),
]
