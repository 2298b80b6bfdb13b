"""Reads for contacts, always scoped to one workspace."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Q

from contacts.models import Contact, ContactQuerySet, ContactStatus, Suppression, Tag
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


StagesProvider = Callable[[list[uuid.UUID]], dict[uuid.UUID, dict[str, str]]]
_stages_provider: StagesProvider | None = None


def register_stages_provider(provider: StagesProvider) -> None:
    """The funnel app tells contacts where each contact stands (funnel id -> stage id)."""
    global _stages_provider
    _stages_provider = provider


def contact_stages(contact_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
    """Funnel id -> current stage id for each contact; {} while no funnel app is installed."""
    if _stages_provider is None or not contact_ids:
        return {}
    return _stages_provider(contact_ids)


@dataclass(frozen=True)
class ContactFilter:
    """Validated filters of the contacts list (API and page share it)."""

    email: str = ""
    status: str = ""
    tag: str = ""
    stage: str = ""
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
    if filters.stage:
        from contacts.segments import segment_queryset

        in_stage = segment_queryset(workspace=workspace, filter={"all": [{"stage": filters.stage}]})
        contacts = contacts.filter(pk__in=in_stage.values("pk"))
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


def contact_is_mailable(contact: Contact) -> bool:
    """May this contact get marketing mail now? Subscribed and not on the suppression list
    (checked again at the moment of sending, not only when the audience was chosen)."""
    if contact.status != ContactStatus.SUBSCRIBED:
        return False
    return not Suppression.objects.filter(
        workspace_id=contact.workspace_id, email_hash=Suppression.hash_email(contact.email)
    ).exists()
