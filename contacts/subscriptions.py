"""Lists, double opt-in, unsubscribing and preferences: the consent lifecycle of a contact.

Everything a person does through a link in a mail or a public form goes through here, and so
does the subscribe API. Proof of every step is written as an append-only ConsentRecord.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from contacts import signals
from contacts.models import (
    SUPPRESSING_STATUSES,
    ConsentKind,
    ConsentRecord,
    Contact,
    ContactStatus,
    MailingList,
    SignupForm,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from contacts.services import consent_record_add, consent_record_build, suppressions_add
from core.exceptions import ApplicationError
from core.models import Workspace
from core.tokens import TokenPurpose, token_make, token_read

PROFILE_FIELDS_FROM_SIGNUP = ("first_name", "last_name", "locale")


def doi_lifetime() -> timedelta:
    return timedelta(days=settings.DOUBLE_OPT_IN_LIFETIME_DAYS)


@dataclass(frozen=True)
class SignupContext:
    """Where and how a signup happened: the proof that goes into the consent record."""

    ip: str | None = None
    user_agent: str = ""
    consent_text: str = ""
    privacy_policy_url: str = ""
    page_url: str = ""
    utm: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    signup_form: SignupForm | None = None
    # True when the person themself submitted a form: only then may an address that
    # unsubscribed, bounced or complained start a new double opt-in.
    started_by_person: bool = False


@dataclass(frozen=True)
class SignupResult:
    contact: Contact
    status: str  # the subscription's status after the call: pending or subscribed
    confirmation_mailed: bool


# --- lists


def mailing_lists_with_counts(*, workspace: Workspace) -> QuerySet[MailingList]:
    """The workspace's lists with subscriber_count (confirmed subscriptions)."""
    return MailingList.objects.filter(workspace=workspace).annotate(
        subscriber_count=Count(
            "subscriptions", filter=Q(subscriptions__status=SubscriptionStatus.SUBSCRIBED)
        )
    )


def validate_confirmation_templates(templates: Any) -> dict[str, dict[str, str]]:
    """{"de": {"subject": "...", "body": "... {confirm_url} ..."}}; empty means built-in."""
    if not isinstance(templates, dict):
        raise ApplicationError(
            _("Give an object keyed by language."), field="confirmation_templates"
        )
    cleaned: dict[str, dict[str, str]] = {}
    for locale, template in templates.items():
        if locale not in dict(settings.LANGUAGES):
            raise ApplicationError(
                _("Unknown language %(locale)s.") % {"locale": locale},
                field="confirmation_templates",
            )
        if not isinstance(template, dict):
            raise ApplicationError(
                _("Each language needs subject and body."), field="confirmation_templates"
            )
        subject = str(template.get("subject", "")).strip()
        body = str(template.get("body", "")).strip()
        if not subject and not body:
            continue
        if not subject or not body:
            raise ApplicationError(
                _("Each language needs both a subject and a body."),
                field="confirmation_templates",
            )
        if "{confirm_url}" not in body:
            raise ApplicationError(
                _("The body must contain {confirm_url}, the link that confirms."),
                field="confirmation_templates",
            )
        cleaned[locale] = {"subject": subject, "body": body}
    return cleaned


@transaction.atomic
def mailing_list_create(*, workspace: Workspace, **fields: Any) -> MailingList:
    """Create a list (double opt-in unless told otherwise)."""
    name = str(fields.get("name", "")).strip()
    if not name:
        raise ApplicationError(_("A list needs a name."), field="name")
    fields["name"] = name
    if "confirmation_templates" in fields:
        fields["confirmation_templates"] = validate_confirmation_templates(
            fields["confirmation_templates"]
        )
    if MailingList.objects.filter(workspace=workspace, name=name).exists():
        raise ApplicationError(_("A list with this name exists."), field="name")
    return MailingList.objects.create(workspace=workspace, **fields)


@transaction.atomic
def mailing_list_update(*, mailing_list: MailingList, **fields: Any) -> MailingList:
    """Change a list's name, description, double opt-in or confirmation mail."""
    if "name" in fields:
        fields["name"] = str(fields["name"]).strip()
        if not fields["name"]:
            raise ApplicationError(_("A list needs a name."), field="name")
        taken = MailingList.objects.filter(
            workspace_id=mailing_list.workspace_id, name=fields["name"]
        )
        if taken.exclude(pk=mailing_list.pk).exists():
            raise ApplicationError(_("A list with this name exists."), field="name")
    if "confirmation_templates" in fields:
        fields["confirmation_templates"] = validate_confirmation_templates(
            fields["confirmation_templates"]
        )
    for name, value in fields.items():
        setattr(mailing_list, name, value)
    mailing_list.save()
    return mailing_list


def mailing_list_delete(*, mailing_list: MailingList) -> None:
    """Delete a list and its subscriptions; refused while a signup form feeds it."""
    if mailing_list.forms.exists():
        raise ApplicationError(_("Signup forms still feed this list; delete or move them first."))
    mailing_list.delete()


# --- signing up


def _consent_record(
    *, contact: Contact, kind: str, context: SignupContext, mailing_list: MailingList | None
) -> ConsentRecord:
    return consent_record_add(
        consent_record_build(
            contact=contact,
            kind=kind,
            ip=context.ip,
            user_agent=context.user_agent,
            consent_text=context.consent_text,
            privacy_policy_url=context.privacy_policy_url,
            mailing_list=mailing_list,
            signup_form=context.signup_form,
            page_url=context.page_url,
            utm=context.utm,
            source=context.source,
        )
    )


def _is_suppressed(contact: Contact) -> bool:
    if contact.status in SUPPRESSING_STATUSES:
        return True
    return Suppression.objects.filter(
        workspace_id=contact.workspace_id, email_hash=Suppression.hash_email(contact.email)
    ).exists()


def _locked_contact(*, workspace: Workspace, email: str, profile: Mapping[str, Any]) -> Contact:
    contact = Contact.objects.select_for_update().filter(workspace=workspace, email=email).first()
    if contact is not None:
        # A public form must not overwrite what is known: fill only what is empty.
        changed = []
        for name in PROFILE_FIELDS_FROM_SIGNUP:
            if profile.get(name) and not getattr(contact, name):
                setattr(contact, name, profile[name])
                changed.append(name)
        new_attributes = {
            key: value
            for key, value in (profile.get("attributes") or {}).items()
            if key not in contact.attributes
        }
        if new_attributes:
            contact.attributes = {**contact.attributes, **new_attributes}
            changed.append("attributes")
        if changed:
            contact.save(update_fields=[*changed, "updated_at"])
        return contact
    values = {name: profile[name] for name in PROFILE_FIELDS_FROM_SIGNUP if profile.get(name)}
    try:
        with transaction.atomic():
            contact = Contact.objects.create(
                workspace=workspace,
                email=email,
                attributes=dict(profile.get("attributes") or {}),
                source=str(profile.get("source", ""))[:200],
                **values,
            )
    except IntegrityError:
        return Contact.objects.select_for_update().get(workspace=workspace, email=email)
    signals.announce(signals.contact_created, contact)
    return contact


@transaction.atomic
def list_subscribe(
    *,
    mailing_list: MailingList,
    email: str,
    profile: Mapping[str, Any] | None = None,
    context: SignupContext,
) -> SignupResult:
    """Sign `email` up to a list.

    With double opt-in the subscription is pending and one confirmation mail goes out after
    commit, but at most one per address every CONFIRMATION_MAIL_INTERVAL_MINUTES, so that
    nobody can flood a mailbox by signing it up to many lists. An address that is already
    subscribed gets nothing new. An address that unsubscribed, bounced, complained or was erased
    is mailed only when the person started the signup (a form), never through the API.
    Every call records the signup as proof, whatever happens.
    """
    from contacts.tasks.confirmation import confirmation_send

    workspace = mailing_list.workspace
    contact = _locked_contact(workspace=workspace, email=email, profile=profile or {})
    _consent_record(
        contact=contact, kind=ConsentKind.SIGNUP, context=context, mailing_list=mailing_list
    )
    subscription, _created = Subscription.objects.select_for_update().get_or_create(
        contact=contact,
        mailing_list=mailing_list,
        defaults={"status": SubscriptionStatus.PENDING, "source": context.source[:200]},
    )
    if subscription.status == SubscriptionStatus.SUBSCRIBED:
        return SignupResult(contact=contact, status=subscription.status, confirmation_mailed=False)

    suppressed = _is_suppressed(contact)
    if suppressed and not context.started_by_person:
        return SignupResult(contact=contact, status=subscription.status, confirmation_mailed=False)

    now = timezone.now()
    if not mailing_list.double_opt_in and not suppressed:
        subscription.status = SubscriptionStatus.SUBSCRIBED
        subscription.confirmed_at = now
        subscription.save(update_fields=["status", "confirmed_at", "updated_at"])
        if contact.status != ContactStatus.SUBSCRIBED:
            contact.status = ContactStatus.SUBSCRIBED
            contact.confirmed_at = now
            contact.save(update_fields=["status", "confirmed_at", "updated_at"])
            signals.announce(signals.contact_subscribed, contact)
        return SignupResult(contact=contact, status=subscription.status, confirmation_mailed=False)

    subscription.status = SubscriptionStatus.PENDING
    subscription.requested_at = now
    subscription.save(update_fields=["status", "requested_at", "updated_at"])
    contact_fields = ["confirmation_requested_at", "updated_at"]
    contact.confirmation_requested_at = now
    if not contact.confirmation_nonce:
        contact.confirmation_nonce = secrets.token_hex(16)
        contact_fields.append("confirmation_nonce")
    if contact.status != ContactStatus.SUBSCRIBED:
        contact.status = ContactStatus.PENDING
        contact.confirmation_reminded_at = None
        contact_fields += ["status", "confirmation_reminded_at"]
    contact.save(update_fields=contact_fields)

    interval = timedelta(minutes=settings.CONFIRMATION_MAIL_INTERVAL_MINUTES)
    claimed = (
        Contact.objects.filter(pk=contact.pk)
        .filter(Q(confirmation_sent_at__isnull=True) | Q(confirmation_sent_at__lte=now - interval))
        .update(confirmation_sent_at=now)
    )
    if claimed:
        contact_id, list_id = str(contact.pk), str(mailing_list.pk)
        transaction.on_commit(lambda: confirmation_send.delay(contact_id, list_id, False))
    return SignupResult(
        contact=contact, status=SubscriptionStatus.PENDING, confirmation_mailed=bool(claimed)
    )


# --- confirming


def confirmation_token(contact: Contact) -> str:
    return token_make(
        purpose=TokenPurpose.CONFIRM, value=f"{contact.pk}:{contact.confirmation_nonce}"
    )


def contact_from_confirmation_token(token: str) -> Contact | None:
    """The contact a confirmation link is for, while it is valid: not tampered, not used, not
    older than the double opt-in lifetime, and with something left to confirm. Else None."""
    value = token_read(purpose=TokenPurpose.CONFIRM, token=token, max_age=doi_lifetime())
    if value is None or ":" not in value:
        return None
    contact_id, nonce = value.split(":", 1)
    if not nonce:
        return None
    contact = (
        Contact.objects.select_related("workspace")
        .filter(pk=contact_id, confirmation_nonce=nonce)
        .first()
    )
    if contact is None or not _fresh_pending(contact).exists():
        return None
    return contact


def _fresh_pending(contact: Contact) -> QuerySet[Subscription]:
    """The contact's pending subscriptions whose own request is still within its lifetime."""
    return Subscription.objects.filter(
        contact=contact,
        status=SubscriptionStatus.PENDING,
        requested_at__gt=timezone.now() - doi_lifetime(),
    )


@transaction.atomic
def contact_confirm(*, contact: Contact, ip: str | None, user_agent: str) -> list[MailingList]:
    """Confirm every pending subscription of the contact (the person clicked the link).

    Lifts a suppression: this is the new double opt-in started by the person that DESIGN.md
    requires for an address to come back. The link stops working (its nonce is rotated).
    Returns the lists confirmed; running it twice confirms nothing the second time.
    """
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    pending = list(_fresh_pending(contact).select_for_update().select_related("mailing_list"))
    if not pending:
        return []
    now = timezone.now()
    for subscription in pending:
        signup = (
            ConsentRecord.objects.filter(
                contact=contact, kind=ConsentKind.SIGNUP, mailing_list=subscription.mailing_list
            )
            .select_related("consent_text", "signup_form")
            .first()
        )
        consent_record_add(
            consent_record_build(
                contact=contact,
                kind=ConsentKind.CONFIRMATION,
                occurred_at=now,
                ip=ip,
                user_agent=user_agent,
                consent_text=signup.consent_text if signup else None,
                privacy_policy_url=signup.privacy_policy_url if signup else "",
                mailing_list=subscription.mailing_list,
                signup_form=signup.signup_form if signup else None,
                source="double_opt_in",
            )
        )
    Subscription.objects.filter(pk__in=[s.pk for s in pending]).update(
        status=SubscriptionStatus.SUBSCRIBED, confirmed_at=now, unsubscribed_at=None, updated_at=now
    )
    Suppression.objects.filter(
        workspace_id=contact.workspace_id, email_hash=Suppression.hash_email(contact.email)
    ).delete()
    contact.status = ContactStatus.SUBSCRIBED
    contact.confirmed_at = now
    contact.unsubscribed_at = None
    contact.confirmation_nonce = ""
    contact.save(
        update_fields=[
            "status",
            "confirmed_at",
            "unsubscribed_at",
            "confirmation_nonce",
            "updated_at",
        ]
    )
    signals.announce(signals.contact_subscribed, contact)
    return [subscription.mailing_list for subscription in pending]


def confirmed_redirect_url(contact: Contact) -> str:
    """Where the form that signed the contact up wants confirmed people to go ('' for ours)."""
    record = (
        ConsentRecord.objects.filter(contact=contact, kind=ConsentKind.CONFIRMATION)
        .exclude(signup_form__isnull=True)
        .select_related("signup_form")
        .first()
    )
    return record.signup_form.confirmed_url if record and record.signup_form else ""


@transaction.atomic
def confirmations_expire() -> int:
    """End double opt-in requests older than their lifetime, each on its own: the pending
    subscription becomes expired (also for contacts subscribed to other lists), and a pending
    contact with no request left becomes not_subscribed again, its link dead.
    Returns how many subscriptions expired."""
    now = timezone.now()
    expired = Subscription.objects.filter(
        status=SubscriptionStatus.PENDING, requested_at__lte=now - doi_lifetime()
    ).update(status=SubscriptionStatus.EXPIRED, updated_at=now)
    Contact.objects.filter(status=ContactStatus.PENDING).exclude(
        subscriptions__status=SubscriptionStatus.PENDING
    ).update(status=ContactStatus.NOT_SUBSCRIBED, confirmation_nonce="", updated_at=now)
    return expired


def confirmation_reminders_due() -> list[str]:
    """Claim the pending contacts that get their one reminder now; returns their ids."""
    now = timezone.now()
    remind_after = timedelta(hours=settings.DOUBLE_OPT_IN_REMINDER_AFTER_HOURS)
    if settings.DOUBLE_OPT_IN_REMINDER_AFTER_HOURS <= 0:
        return []
    candidates = Contact.objects.filter(
        status=ContactStatus.PENDING,
        confirmation_reminded_at__isnull=True,
        confirmation_sent_at__lte=now - remind_after,
        confirmation_requested_at__gt=now - doi_lifetime(),
    ).values_list("pk", flat=True)[:500]
    claimed = []
    for contact_id in candidates:
        if Contact.objects.filter(pk=contact_id, confirmation_reminded_at__isnull=True).update(
            confirmation_reminded_at=now
        ):
            claimed.append(str(contact_id))
    return claimed


# --- leaving


def unsubscribe_token(contact: Contact) -> str:
    """The contact's unsubscribe and preference link token: valid forever, unforgeable."""
    return token_make(purpose=TokenPurpose.UNSUBSCRIBE, value=str(contact.pk))


def unsubscribe_url(contact: Contact) -> str:
    return f"{settings.PUBLIC_BASE_URL}/u/{unsubscribe_token(contact)}/"


def contact_from_unsubscribe_token(token: str) -> Contact | None:
    contact_id = token_read(purpose=TokenPurpose.UNSUBSCRIBE, token=token)
    if contact_id is None:
        return None
    return Contact.objects.select_related("workspace").filter(pk=contact_id).first()


def contact_mark_undeliverable(*, contact: Contact, status: str, source: str) -> bool:
    """The mail service reported a hard bounce (status "bounced") or a complaint ("complained")
    for one contact: see contacts_mark_undeliverable. Returns False when nothing changed."""
    return bool(contacts_mark_undeliverable(contacts=[contact], status=status, source=source))


@transaction.atomic
def contacts_mark_undeliverable(
    *, contacts: Iterable[Contact], status: str, source: str
) -> list[Contact]:
    """The mail service reported hard bounces (status "bounced") or complaints ("complained"):
    suppress the addresses, set the status and stop all mail to them. Many contacts at once
    (the reports of one ESP batch): a few statements for all of them, not per contact.

    A complaint also withdraws consent: every list subscription ends (contacts_unsubscribe_all,
    with a consent record naming `source`). A bounce announces contact_unsubscribed itself, on
    which the engine ends enrollments and cancels messages not yet handed over. Complained is
    final; bounced gives way to complained. Returns the contacts that changed (safe to run
    twice); their objects carry the new status. Lock the contacts (select_for_update) when
    several reports may race.
    """
    if status not in (ContactStatus.BOUNCED, ContactStatus.COMPLAINED):
        raise ValueError(f"not an undeliverable status: {status!r}")
    changed = [
        contact
        for contact in contacts
        if contact.status != ContactStatus.COMPLAINED and contact.status != status
    ]
    if not changed:
        return []
    suppressions_add(
        addresses=[(contact.workspace_id, contact.email) for contact in changed],
        reason=SuppressionReason.COMPLAINED
        if status == ContactStatus.COMPLAINED
        else SuppressionReason.BOUNCED,
    )
    now = timezone.now()
    Contact.objects.filter(pk__in=[contact.pk for contact in changed]).update(
        status=status, updated_at=now
    )
    for contact in changed:
        contact.status, contact.updated_at = status, now
    if status == ContactStatus.COMPLAINED:
        contacts_unsubscribe_all(contacts=changed, source=f"{source} complaint")
    else:
        _unsubscribed_announce(changed)
    return changed


def contact_unsubscribe_all(
    *, contact: Contact, ip: str | None = None, user_agent: str = "", source: str
) -> bool:
    """Unsubscribe one contact from everything: see contacts_unsubscribe_all. Returns False
    when there was nothing to do (safe to run twice)."""
    return bool(
        contacts_unsubscribe_all(contacts=[contact], ip=ip, user_agent=user_agent, source=source)
    )


@transaction.atomic
def contacts_unsubscribe_all(
    *, contacts: Iterable[Contact], ip: str | None = None, user_agent: str = "", source: str
) -> list[Contact]:
    """Unsubscribe from everything, at once and before any further send.

    Ends every list subscription, records the withdrawal (a consent record each), suppresses
    the addresses and sends contact_unsubscribed, on which the sending apps end enrollments
    and cancel messages not yet handed to the ESP. The contacts are read again, locked, so
    the caller's objects are not changed. Returns the contacts there was something to do for
    (an unsubscribed contact without open subscriptions is left alone: safe to run twice).
    """
    ids = [contact.pk for contact in contacts]
    locked = list(
        Contact.objects.select_for_update()
        .select_related("workspace")
        .filter(pk__in=ids)
        .order_by("pk")
    )
    now = timezone.now()
    open_subscriptions = Subscription.objects.filter(
        contact_id__in=ids,
        status__in=[SubscriptionStatus.SUBSCRIBED, SubscriptionStatus.PENDING],
    )
    ended = set(open_subscriptions.values_list("contact_id", flat=True))
    open_subscriptions.update(
        status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=now, updated_at=now
    )
    acting = [
        contact
        for contact in locked
        if contact.status != ContactStatus.UNSUBSCRIBED or contact.pk in ended
    ]
    if not acting:
        return []
    ConsentRecord.objects.bulk_create(
        consent_record_build(
            contact=contact,
            kind=ConsentKind.UNSUBSCRIBE,
            occurred_at=now,
            ip=ip,
            user_agent=user_agent,
            source=source,
        )
        for contact in acting
    )
    suppressions_add(
        addresses=[(contact.workspace_id, contact.email) for contact in acting],
        reason=SuppressionReason.UNSUBSCRIBED,
    )
    for contact in acting:
        if contact.status not in (ContactStatus.BOUNCED, ContactStatus.COMPLAINED):
            contact.status = ContactStatus.UNSUBSCRIBED
        contact.unsubscribed_at = now
        contact.confirmation_nonce = ""
        contact.updated_at = now
    Contact.objects.bulk_update(
        acting, ["status", "unsubscribed_at", "confirmation_nonce", "updated_at"]
    )
    _unsubscribed_announce(acting)
    return acting


def _unsubscribed_announce(contacts: Iterable[Contact]) -> None:
    """contact_unsubscribed once per workspace for these contacts."""
    by_workspace: dict[Any, list[Any]] = {}
    for contact in contacts:
        by_workspace.setdefault(contact.workspace_id, []).append(contact.pk)
    for workspace_id, contact_ids in by_workspace.items():
        signals.unsubscribed_announce(workspace_id=workspace_id, contact_ids=contact_ids)


@transaction.atomic
def contact_leave_lists(
    *,
    contact: Contact,
    mailing_lists: Iterable[MailingList],
    ip: str | None = None,
    user_agent: str = "",
    source: str,
) -> None:
    """End the subscriptions to these lists. Leaving the last list one was on is leaving
    everything (contact_unsubscribe_all): a person who chose no list wants no mail."""
    list_ids = [mailing_list.pk for mailing_list in mailing_lists]
    now = timezone.now()
    leaving = list(
        Subscription.objects.select_for_update()
        .select_related("mailing_list")
        .filter(
            contact=contact,
            mailing_list_id__in=list_ids,
            status__in=[SubscriptionStatus.SUBSCRIBED, SubscriptionStatus.PENDING],
        )
    )
    if not leaving:
        return
    remaining = Subscription.objects.filter(
        contact=contact, status__in=[SubscriptionStatus.SUBSCRIBED, SubscriptionStatus.PENDING]
    ).exclude(mailing_list_id__in=list_ids)
    if not remaining.exists():
        contact_unsubscribe_all(contact=contact, ip=ip, user_agent=user_agent, source=source)
        return
    for subscription in leaving:
        consent_record_add(
            consent_record_build(
                contact=contact,
                kind=ConsentKind.PREFERENCE_CHANGE,
                occurred_at=now,
                ip=ip,
                user_agent=user_agent,
                mailing_list=subscription.mailing_list,
                source=source,
            )
        )
    Subscription.objects.filter(pk__in=[s.pk for s in leaving]).update(
        status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=now, updated_at=now
    )


def contact_active_subscriptions(contact: Contact) -> QuerySet[Subscription]:
    return (
        Subscription.objects.filter(
            contact=contact,
            status__in=[SubscriptionStatus.SUBSCRIBED, SubscriptionStatus.PENDING],
        )
        .select_related("mailing_list")
        .order_by("mailing_list__name")
    )
