"""Celery tasks of core: transactional mails about accounts."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext as _

from core.mail import tag_workspace
from core.models import Invitation


@shared_task(name="core.invitation_send_email", acks_late=True, ignore_result=True)
def invitation_send_email(invitation_id: str) -> None:
    """Mail the invitation link. Does nothing for an invitation that is no longer open."""
    from core.services import invitation_token

    invitation = (
        Invitation.objects.select_related("workspace", "invited_by")
        .filter(id=invitation_id)
        .first()
    )
    if invitation is None or not invitation.is_open:
        return
    with translation.override(invitation.workspace.locale):
        context = {
            "invitation": invitation,
            "accept_url": f"{settings.PUBLIC_BASE_URL}/invitations/{invitation_token(invitation)}/",
        }
        subject = _("You are invited to %(workspace)s on Funnelwerk") % {
            "workspace": invitation.workspace.name
        }
        message = EmailMultiAlternatives(
            subject=subject,
            body=render_to_string("core/email/invitation.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[invitation.email],
        )
        message.attach_alternative(
            render_to_string("core/email/invitation.html", context), "text/html"
        )
    tag_workspace(message, invitation.workspace_id)
    message.send()


@shared_task(name="core.idempotency_records_purge", acks_late=True, ignore_result=True)
def idempotency_records_purge() -> None:
    """Delete Idempotency-Key records older than their 24-hour window."""
    from django.utils import timezone

    from core.api.idempotency import IDEMPOTENCY_WINDOW
    from core.models import IdempotencyRecord

    IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - IDEMPOTENCY_WINDOW).delete()
