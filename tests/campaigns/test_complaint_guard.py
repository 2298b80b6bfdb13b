"""The complaint-rate guard: above 0.3 % complaints in a day a workspace's marketing mail
pauses (queued, never dropped), its owners are told, and an admin resumes it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from campaigns.milestones import milestones_set
from campaigns.models import Message, MessageStatus
from campaigns.sending import messages_retry_due, messages_send
from contacts.models import Contact, ContactStatus
from core.models import Role, Workspace
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


def _sent(workspace: Workspace, count: int) -> list[Message]:
    contacts = Contact.objects.bulk_create(
        Contact(workspace=workspace, email=f"r{n}@example.org", status=ContactStatus.SUBSCRIBED)
        for n in range(count)
    )
    an_hour_ago = timezone.now() - timedelta(hours=1)
    return Message.objects.bulk_create(
        Message(
            workspace=workspace,
            contact=contact,
            subject="News",
            status=MessageStatus.SENT,
            sent_at=an_hour_ago,
            esp_accepted_at=an_hour_ago,
        )
        for contact in contacts
    )


def _complaints(messages: list[Message], count: int, capture) -> None:
    with capture(execute=True):
        milestones_set("complained", {m.pk: timezone.now() for m in messages[:count]})


def test_over_the_limit_sending_pauses_and_the_owners_are_told(
    workspace, owner, django_capture_on_commit_callbacks
):
    messages = _sent(workspace, 300)
    _complaints(messages, 1, django_capture_on_commit_callbacks)  # 0.33 %
    workspace.refresh_from_db()
    assert workspace.sending_paused_at is not None
    assert "1 complaints on 300 mails" in workspace.sending_paused_reason
    assert [m.to for m in mail.outbox] == [[owner.user.email]]
    assert "paused" in mail.outbox[0].subject


@pytest.mark.parametrize(("sent", "complaints"), [(500, 1), (100, 1)])
def test_at_or_below_the_limit_or_with_few_mails_nothing_pauses(
    workspace, owner, sent, complaints, django_capture_on_commit_callbacks
):
    # 0.2 % of 500; 1 % of only 100 delivered (below the minimum sample)
    _complaints(_sent(workspace, sent), complaints, django_capture_on_commit_callbacks)
    workspace.refresh_from_db()
    assert workspace.sending_paused_at is None
    assert mail.outbox == []


def test_paused_mail_waits_queued_and_goes_out_after_the_resume(
    workspace, owner, logged_in, member_of, django_capture_on_commit_callbacks
):
    _complaints(_sent(workspace, 300), 1, django_capture_on_commit_callbacks)
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED)
    waiting = Message.objects.create(
        workspace=workspace, contact=contact, subject="Later", status=MessageStatus.QUEUED
    )
    Message.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - timedelta(hours=1))

    result = messages_send(message_ids=[str(waiting.pk)])
    assert (result.sent, result.paused) == (0, 1)
    waiting.refresh_from_db()
    assert waiting.status == MessageStatus.QUEUED
    assert str(waiting.pk) not in messages_retry_due(limit=100)

    # an editor may not resume; an admin may
    editor = logged_in(member_of(workspace, Role.EDITOR))
    assert editor.post("/settings/sending/resume/").status_code == 403
    admin = logged_in(owner)
    page = admin.get("/settings/")
    assert b'data-testid="sending-resume"' in page.content
    assert admin.post("/settings/sending/resume/").status_code == 302
    workspace.refresh_from_db()
    assert workspace.sending_paused_at is None
    assert messages_retry_due(limit=100) == [str(waiting.pk)]
    Workspace.objects.filter(pk=workspace.pk).update(postal_address="Hauptstr. 1, Berlin")
    assert messages_send(message_ids=[str(waiting.pk)]).paused == 0
