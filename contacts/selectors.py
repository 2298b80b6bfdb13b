"""Reads for contacts, always scoped to one workspace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Q

from contacts.models import Contact, ContactQuerySet, Tag
from contacts.validators import normalize_email
from core.models import Workspace

# Sort keys a request may ask for; nothing else reaches order_by.
CONTACT_ORDERINGS = {
    "created_at": "created_at",
    "-created_at": "-created_at",
    "email": "email",
    "-email": "-email",
    "last_name": "last_name",
    "-last_name": "-last_name",
    "score": "score",
    "-score": "-score",
}
DEFAULT_CONTACT_ORDERING = "-created_at"


@dataclass(frozen=True)
class ContactFilter:
    """Validated filters of the contacts list (API and page share it)."""

    email: str = ""
    status: str = ""
    tag: str = ""
    search: str = ""
    ordering: str = DEFAULT_CONTACT_ORDERING


def contact_list(*, workspace: Workspace, filters: ContactFilter | None = None) -> ContactQuerySet:
    """The workspace's contacts matching `filters`, with their tags prefetched."""
    filters = filters or ContactFilter()
    contacts = Contact.objects.for_workspace(workspace).prefetch_related("tags")
    if filters.email:
        contacts = contacts.filter(email=_stored_form(filters.email))
    if filters.status:
        contacts = contacts.filter(status=filters.status)
    if filters.tag:
        contacts = contacts.filter(tags__name=filters.tag)
    if filters.search:
        term = filters.search.strip()
        contacts = contacts.filter(
            Q(email__icontains=term) | Q(first_name__icontains=term) | Q(last_name__icontains=term)
        )
    ordering = CONTACT_ORDERINGS.get(filters.ordering, DEFAULT_CONTACT_ORDERING)
    return contacts.order_by(ordering, "pk")


def _stored_form(email: str) -> str:
    """The address as contacts store it, so ?email= finds what POST stored."""
    try:
        return normalize_email(email)
    except ValidationError:
        return email.strip().lower()


def contact_get(*, workspace: Workspace, contact_id: uuid.UUID | str) -> Contact:
    """One contact of this workspace; Contact.DoesNotExist for any other id."""
    return Contact.objects.for_workspace(workspace).prefetch_related("tags").get(pk=contact_id)


def tag_names(*, workspace: Workspace) -> list[str]:
    return list(Tag.objects.filter(workspace=workspace).values_list("name", flat=True))
