"""Double opt-in mails: the confirmation, its one reminder, and expiry of stale requests."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from contacts.mails import confirmation_message
from contacts.models import ContactStatus, MailingList, SubscriptionStatus
from contacts.subscriptions import (
    confirmation_reminders_due,
    confirmation_token,
    confirmations_expire,
    contact_from_confirmation_token,
)

logger = logging.getLogger(__name__)


@shared_task(name="contacts.confirmation_send", acks_late=True, ignore_result=True)
def confirmation_send(contact_id: str, list_id: str, reminder: bool = False) -> None:
    """Mail the confirmation link, if the contact still has something to confirm.

    Transactional: never held back by frequency caps. A second run sends a second mail only
    if the first never reached the transport (the worker died before acknowledging).
    """
    from contacts.models import Contact

    contact = Contact.objects.select_related("workspace").filter(pk=contact_id).first()
    if contact is None or not contact.confirmation_nonce:
        return
    token = confirmation_token(contact)
    if contact_from_confirmation_token(token) is None:
        return
    mailing_list = MailingList.objects.filter(pk=list_id, workspace=contact.workspace).first()
    if mailing_list is None:
        pending = contact.subscriptions.filter(status=SubscriptionStatus.PENDING).first()
        if pending is None:
            return
        mailing_list = pending.mailing_list
    confirm_url = f"{settings.PUBLIC_BASE_URL}/confirm/{token}/"
    confirmation_message(
        contact=contact, mailing_list=mailing_list, confirm_url=confirm_url, reminder=reminder
    ).send()


@shared_task(name="contacts.confirmations_maintain", acks_late=True, ignore_result=True)
def confirmations_maintain() -> None:
    """Beat: send each unconfirmed contact its one reminder; expire requests past their life."""
    from contacts.models import Contact

    expired = confirmations_expire()
    if expired:
        logger.info("Expired %d unconfirmed double opt-ins", expired)
    for contact_id in confirmation_reminders_due():
        contact = Contact.objects.filter(pk=contact_id, status=ContactStatus.PENDING).first()
        if contact is None:
            continue
        pending = contact.subscriptions.filter(status=SubscriptionStatus.PENDING).first()
        if pending is not None:
            confirmation_send.delay(contact_id, str(pending.mailing_list_id), True)
