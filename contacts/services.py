"""Writes for contacts: upsert, update, status changes with proof of consent, erasure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from contacts import signals
from contacts.models import (
    SUPPRESSING_STATUSES,
    ConsentKind,
    ConsentRecord,
    ConsentText,
    Contact,
    ContactStatus,
    MailingList,
    SignupForm,
    Suppression,
    SuppressionReason,
    Tag,
)
from core.exceptions import ApplicationError, ConflictError
from core.models import Workspace
from core.services import idempotency_records_forget, outbox_forget_address

# Fields a caller may set directly; status goes through contact_change_status.
PROFILE_FIELDS = ("first_name", "last_name", "locale", "timezone", "source", "score")
# Statuses an API client or a user may ask for; the others are reached through the system
# (double opt-in makes pending, the ESP reports bounced and complained).
SETTABLE_STATUSES = (
    ContactStatus.NOT_SUBSCRIBED,
    ContactStatus.SUBSCRIBED,
    ContactStatus.UNSUBSCRIBED,
)


@dataclass(frozen=True)
class ConsentProof:
    """Proof of marketing consent given elsewhere (a shop checkout, a CRM, a paper form)."""

    text: str
    at: datetime
    ip: str | None = None
    user_agent: str = ""
    privacy_policy_url: str = ""
    source: str = ""


def consent_text_version(*, workspace: Workspace, text: str) -> ConsentText:
    """The immutable version row for this exact text. Safe to run twice."""
    digest = ConsentText.digest_of(text)
    version, _created = ConsentText.objects.get_or_create(
        workspace=workspace, digest=digest, defaults={"text": text}
    )
    return version


def consent_record_build(
    *,
    contact: Contact,
    kind: str,
    occurred_at: datetime | None = None,
    ip: str | None = None,
    user_agent: str = "",
    consent_text: str | ConsentText | None = None,
    privacy_policy_url: str = "",
    mailing_list: MailingList | None = None,
    signup_form: SignupForm | None = None,
    page_url: str = "",
    utm: Mapping[str, str] | None = None,
    source: str = "",
    recorded_by: str = "",
) -> ConsentRecord:
    """One proof of consent, not saved yet (consent_record_add appends it; a batch appends many
    with one bulk_create). A text is stored as its immutable version; the privacy-policy URL
    defaults to the workspace's."""
    if isinstance(consent_text, str):
        text = consent_text.strip()
        consent_text = (
            consent_text_version(workspace=contact.workspace, text=text) if text else None
        )
    return ConsentRecord(
        workspace_id=contact.workspace_id,
        contact=contact,
        kind=kind,
        occurred_at=occurred_at or timezone.now(),
        ip_address=ip or None,
        user_agent=user_agent[:1000],
        consent_text=consent_text,
        privacy_policy_url=privacy_policy_url or contact.workspace.privacy_policy_url,
        mailing_list=mailing_list,
        signup_form=signup_form,
        page_url=page_url[:2000],
        utm=dict(utm or {}),
        source=source[:200],
        recorded_by=(recorded_by or source)[:200],
    )


def consent_record_add(record: ConsentRecord) -> ConsentRecord:
    """Append one proof of consent built by consent_record_build (never updated afterwards)."""
    record.save(force_insert=True)
    return record


def suppression_add(*, workspace: Workspace, email: str, reason: str) -> None:
    """Put the address hash on the workspace's suppression list. Safe to run twice: an
    address already there keeps its first reason."""
    suppressions_add(addresses=[(workspace.pk, email)], reason=reason)


def suppressions_add(*, addresses: Iterable[tuple[Any, str]], reason: str) -> None:
    """suppression_add for many (workspace id, address) pairs: one INSERT ... ON CONFLICT DO
    NOTHING (get_or_create took four statements per address)."""
    Suppression.objects.bulk_create(
        [
            Suppression(
                workspace_id=workspace_id, email_hash=Suppression.hash_email(email), reason=reason
            )
            for workspace_id, email in addresses
        ],
        ignore_conflicts=True,
    )


def _set_tags(*, contact: Contact, tags: Iterable[str]) -> None:
    names = list(dict.fromkeys(tags))
    existing = {
        tag.name: tag for tag in Tag.objects.filter(workspace=contact.workspace, name__in=names)
    }
    missing = [
        Tag(workspace=contact.workspace, name=name) for name in names if name not in existing
    ]
    if missing:
        Tag.objects.bulk_create(missing, ignore_conflicts=True)
        existing = {
            tag.name: tag for tag in Tag.objects.filter(workspace=contact.workspace, name__in=names)
        }
    contact.tags.set([existing[name] for name in names])


def _merge_attributes(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _apply_changes(*, contact: Contact, changes: Mapping[str, Any]) -> list[str]:
    updated = []
    for field in PROFILE_FIELDS:
        if field in changes and getattr(contact, field) != changes[field]:
            setattr(contact, field, changes[field])
            updated.append(field)
    if "attributes" in changes:
        attributes = _merge_attributes(contact.attributes, changes["attributes"])
        if attributes != contact.attributes:
            contact.attributes = attributes
            updated.append("attributes")
    return updated


@transaction.atomic
def contact_change_status(
    *,
    contact: Contact,
    status: str,
    consent: ConsentProof | None = None,
    recorded_by: str = "",
) -> Contact:
    """Move a contact to `status`, keeping proof and suppression in step.

    subscribed needs `consent` and is refused for an address that unsubscribed, bounced,
    complained or was erased (only a new double opt-in by the person lifts that).
    unsubscribed suppresses the address and tells the apps above to stop mailing.
    Running it twice with the same status changes nothing the second time.
    """
    if status not in SETTABLE_STATUSES:
        raise ApplicationError(
            _("The status %(status)s is set by Funnelwerk itself, not by request.")
            % {"status": status},
            field="status",
        )
    if status == contact.status:
        return contact
    if status == ContactStatus.SUBSCRIBED:
        if consent is None or not consent.text.strip():
            raise ApplicationError(
                _(
                    "A contact becomes subscribed only with proof of consent: "
                    "give consent with text, ip and at."
                ),
                field="consent",
            )
        suppressed = Suppression.objects.filter(
            workspace_id=contact.workspace_id, email_hash=Suppression.hash_email(contact.email)
        ).exists()
        if contact.status in SUPPRESSING_STATUSES or suppressed:
            raise ConflictError(
                _(
                    "This address unsubscribed, bounced or complained; only a new double opt-in "
                    "started by the person can subscribe it again."
                ),
                field="status",
            )
        consent_record_add(
            consent_record_build(
                contact=contact,
                kind=ConsentKind.RECORDED,
                occurred_at=consent.at,
                ip=consent.ip,
                user_agent=consent.user_agent,
                consent_text=consent.text,
                privacy_policy_url=consent.privacy_policy_url,
                source=consent.source,
                recorded_by=recorded_by,
            )
        )
        contact.status = ContactStatus.SUBSCRIBED
        contact.confirmed_at = consent.at
        contact.save(update_fields=["status", "confirmed_at", "updated_at"])
        signals.announce(signals.contact_subscribed, contact)
    elif status == ContactStatus.UNSUBSCRIBED:
        from contacts.subscriptions import contact_unsubscribe_all

        contact_unsubscribe_all(contact=contact, source=recorded_by or "api")
        contact.refresh_from_db()
    else:  # not_subscribed: consent withdrawn or never given, without suppressing the address
        if contact.status in SUPPRESSING_STATUSES:
            raise ConflictError(
                _("This contact unsubscribed, bounced or complained and stays so."),
                field="status",
            )
        contact.status = ContactStatus.NOT_SUBSCRIBED
        contact.save(update_fields=["status", "updated_at"])
        signals.unsubscribed_announce(workspace_id=contact.workspace_id, contact_ids=[contact.pk])
    return contact


@transaction.atomic
def contact_update(
    *,
    contact: Contact,
    changes: Mapping[str, Any],
    consent: ConsentProof | None = None,
    recorded_by: str = "",
) -> Contact:
    """Apply validated changes: profile fields, attributes (merged; null removes a key),
    tags (replaced) and status (through contact_change_status). Safe to run twice.
    """
    updated = _apply_changes(contact=contact, changes=changes)
    if updated:
        contact.save(update_fields=[*updated, "updated_at"])
    if "tags" in changes:
        _set_tags(contact=contact, tags=changes["tags"])
    if "status" in changes:
        contact_change_status(
            contact=contact, status=changes["status"], consent=consent, recorded_by=recorded_by
        )
    return contact


@transaction.atomic
def contact_upsert(
    *,
    workspace: Workspace,
    email: str,
    changes: Mapping[str, Any],
    consent: ConsentProof | None = None,
    recorded_by: str = "",
) -> tuple[Contact, bool]:
    """Create the contact with this (normalised) address or update the one that exists.

    Returns (contact, created). Two concurrent calls for one address make one contact: the
    loser of the race updates the winner's row. Never sends a mail.
    """
    contact = Contact.objects.select_for_update().filter(workspace=workspace, email=email).first()
    created = False
    if contact is None:
        try:
            with transaction.atomic():
                contact = Contact.objects.create(workspace=workspace, email=email)
            created = True
        except IntegrityError:
            contact = Contact.objects.select_for_update().get(workspace=workspace, email=email)
    contact_update(contact=contact, changes=changes, consent=consent, recorded_by=recorded_by)
    if created:
        signals.announce(signals.contact_created, contact)
    return contact, created


@transaction.atomic
def contact_erase(*, contact: Contact) -> None:
    """Erase the contact's personal data (GDPR art. 17); the address hash stays suppressed.

    Everything hanging off the contact goes with it, and so do the copies of the address
    elsewhere: kept API responses and the local outbox. Safe to run twice.
    """
    suppression_add(
        workspace=contact.workspace, email=contact.email, reason=SuppressionReason.ERASED
    )
    workspace_id, contact_id = str(contact.workspace_id), str(contact.pk)
    idempotency_records_forget(workspace_id=workspace_id, resource_id=contact_id)
    outbox_forget_address(email=contact.email)
    # Import error reports name rows, never addresses; uploaded files are deleted after
    # IMPORT_FILE_RETENTION_DAYS (contacts.import_files_purge).
    signals.unsubscribed_announce(workspace_id=workspace_id, contact_ids=[contact_id])
    Contact.objects.filter(pk=contact.pk).delete()
    signals.contact_erased.send(sender=Contact, workspace_id=workspace_id, contact_id=contact_id)
