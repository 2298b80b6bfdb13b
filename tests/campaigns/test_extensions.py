"""The campaigns app's contributions to contacts: opened/clicked segments, timeline, export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from campaigns.models import Message, MessageStatus
from contacts.gdpr import contact_export
from contacts.segments import segment_queryset
from contacts.timeline import contact_timeline
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def sent_message(contact, **milestones) -> Message:
    return Message.objects.create(
        workspace=contact.workspace,
        contact=contact,
        subject="Spring news",
        status=MessageStatus.SENT,
        sent_at=NOW - timedelta(days=3),
        **milestones,
    )


def test_opened_and_clicked_segments_count_human_activity_within_the_period(workspace):
    # given one contact who opened 3 days ago, one who clicked 40 days ago, one who did nothing
    opener = ContactFactory(workspace=workspace)
    old_clicker = ContactFactory(workspace=workspace)
    idle = ContactFactory(workspace=workspace)
    sent_message(opener, opened_at=NOW - timedelta(days=3))
    sent_message(
        old_clicker, opened_at=NOW - timedelta(days=40), clicked_at=NOW - timedelta(days=40)
    )
    sent_message(idle)

    with time_machine.travel(NOW, tick=False):
        opened_30 = set(segment_queryset(workspace=workspace, filter={"all": [{"opened": "P30D"}]}))
        clicked_60 = set(
            segment_queryset(workspace=workspace, filter={"all": [{"clicked": "P60D"}]})
        )
        clicked_30 = set(
            segment_queryset(workspace=workspace, filter={"all": [{"clicked": "P30D"}]})
        )

    # then
    assert opened_30 == {opener}
    assert clicked_60 == {old_clicker}
    assert clicked_30 == set()


def test_mails_are_on_the_timeline_and_in_the_export_with_their_milestones(workspace):
    # given a mail that was opened and clicked
    contact = ContactFactory(workspace=workspace)
    sent_message(contact, opened_at=NOW - timedelta(days=2), clicked_at=NOW - timedelta(days=1))

    # when
    timeline = contact_timeline(contact)
    export = contact_export(contact)

    # then the timeline lists the mail (its opens and clicks are the tracking app's items,
    # tests/tracking), and the export its milestones
    assert [(item.kind, item.title) for item in timeline] == [("message", "Spring news")]
    assert export["messages"] == [
        {
            "subject": "Spring news",
            "status": "sent",
            "sequence_step": None,
            "sent_at": (NOW - timedelta(days=3)).isoformat(),
            "delivered_at": None,
            "opened_at": (NOW - timedelta(days=2)).isoformat(),
            "clicked_at": (NOW - timedelta(days=1)).isoformat(),
            "bounced_at": None,
            "complained_at": None,
            "unsubscribed_at": None,
        }
    ]
