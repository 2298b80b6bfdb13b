"""The complaint-rate guard (DESIGN: a workspace whose complaint rate over the last day exceeds
0.3 % pauses its sending and tells its owners — Gmail's limit for bulk senders).

Rate = complaints received in the last 24 hours / mails delivered (sent and not bounced) in the
last 24 hours. Below COMPLAINT_GUARD_MIN_DELIVERED delivered mails the rate says little (one
complaint among 50 mails is 2 %) and nothing pauses. While paused, marketing mail stays queued,
nothing is dropped; an admin resumes sending in the workspace settings
(core.services.workspace_sending_resume). Transactional mail (double opt-in) is not affected.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from campaigns.models import Message
from core.models import Membership, Role, Workspace

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class ComplaintRate:
    complaints: int
    delivered: int

    @property
    def rate(self) -> float:
        return self.complaints / self.delivered if self.delivered else 0.0


def complaint_rate(workspace_id: uuid.UUID | str) -> ComplaintRate:
    """Complaints and delivered mails of the workspace in the last 24 hours. Two counts, each
    on an index of its own (message_complaints, analytics_message_sent): an OR of the two
    conditions would read every message of the workspace."""
    since = timezone.now() - WINDOW
    messages = Message.objects.filter(workspace_id=workspace_id)
    return ComplaintRate(
        complaints=messages.filter(complained_at__gte=since).count(),
        delivered=messages.filter(sent_at__gte=since, bounced_at__isnull=True).count(),
    )


def complaint_guard(workspace_id: uuid.UUID | str) -> bool:
    """Pause the workspace's sending if its complaint rate is over the limit; True when this
    call paused it (its owners are mailed after commit)."""
    if Workspace.objects.filter(pk=workspace_id, sending_paused_at__isnull=False).exists():
        return False
    measured = complaint_rate(workspace_id)
    if measured.delivered < settings.COMPLAINT_GUARD_MIN_DELIVERED:
        return False
    if measured.rate <= settings.COMPLAINT_RATE_LIMIT:
        return False
    reason = _(
        "%(complaints)d complaints on %(delivered)d mails delivered in the last 24 hours "
        "(%(rate).2f %%, the limit is %(limit).1f %%)."
    ) % {
        "complaints": measured.complaints,
        "delivered": measured.delivered,
        "rate": measured.rate * 100,
        "limit": settings.COMPLAINT_RATE_LIMIT * 100,
    }
    paused = Workspace.objects.filter(pk=workspace_id, sending_paused_at__isnull=True).update(
        sending_paused_at=timezone.now(), sending_paused_reason=reason[:300]
    )
    if paused:
        logger.warning("workspace %s: sending paused: %s", workspace_id, reason)
        transaction.on_commit(lambda: _tell_owners(str(workspace_id)))
    return bool(paused)


def _tell_owners(workspace_id: str) -> None:
    workspace = Workspace.objects.get(pk=workspace_id)
    owners = Membership.objects.filter(workspace=workspace, role=Role.OWNER).select_related("user")
    for membership in owners:
        with translation.override(workspace.locale):
            subject = _("Funnelwerk paused the sending of %(workspace)s") % {
                "workspace": workspace.name
            }
            body = _(
                "Too many recipients marked mails of %(workspace)s as spam: "
                "%(reason)s\n\n"
                "Marketing mail is paused and waits in the queue; nothing is lost. Mailbox "
                "providers such as Gmail block senders above 0.3 %% complaints. Check the "
                "audience (bought or old lists?) and the content, then resume sending in the "
                "workspace settings: %(url)s\n"
            ) % {
                "workspace": workspace.name,
                "reason": workspace.sending_paused_reason,
                "url": f"{settings.PUBLIC_BASE_URL}/settings/",
            }
        send_mail(subject, body, None, [membership.user.email])
