"""REST API of the contacts app (API.md: Contacts, Segments, Lists and double opt-in).

One module per resource; each defines its urlpatterns, collected here.
"""

from django.urls import URLPattern, URLResolver

from contacts.api import contacts, imports, lists, segments, signup_forms

urlpatterns: list[URLPattern | URLResolver] = [
    *contacts.urlpatterns,
    *lists.urlpatterns,
    *signup_forms.urlpatterns,
    *segments.urlpatterns,
    *imports.urlpatterns,
]
