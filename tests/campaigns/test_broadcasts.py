"""Broadcasts: audience, scheduling, local time, pause/resume, A/B test, frequency cap, API.

Mails go to a real SMTP server on loopback (aiosmtpd, the pattern of test_sending.py); time is
controlled with time-machine; Celery runs eagerly and sending tasks are scheduled on commit.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import time_machine
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns import broadcast_tasks
from campaigns.broadcasts import (
    broadcast_ab_decide,
    broadcast_create,
    broadcast_pause,
    broadcast_resume,
    broadcast_send,
    broadcast_start,
    broadcasts_dispatch,
)
from campaigns.models import Broadcast, BroadcastStatus, Message, MessageStatus
from campaigns.sending import messages_retry_due, messages_send
from contacts.models import (
    Contact,
    ContactStatus,
    MailingList,
    Segment,
    Subscription,
    SubscriptionStatus,
    SuppressionReason,
    Tag,
)
from contacts.services import suppression_add
from core.models import Membership, Role, Workspace
from tests.campaigns.test_sending import ScriptedSMTP, smtp_server
from tests.factories import ContactFactory

T0 = dt.datetime(2026, 3, 9, 12, 0, tzinfo=dt.UTC)
CONTENT = {"subject": "News for {{ contact.first_name }}", "html": "<p>Hello</p>"}


@pytest.fixture
def newsletter(workspace: Workspace) -> MailingList:
    # Fast enough that the frozen clock never waits for the rate limit.
    Workspace.objects.filter(pk=workspace.pk).update(send_rate_per_second=1000)
    workspace.refresh_from_db()
    return MailingList.objects.create(workspace=workspace, name="Newsletter")


@pytest.fixture
def smtp() -> Iterator[ScriptedSMTP]:
    handler = ScriptedSMTP()
    with smtp_server(handler):
        yield handler


def subscriber(
    mailing_list: MailingList,
    email: str,
    *,
    status: str = ContactStatus.SUBSCRIBED,
    subscription: str = SubscriptionStatus.SUBSCRIBED,
    timezone: str = "",
) -> Contact:
    contact = ContactFactory(
        workspace=mailing_list.workspace, email=email, status=status, timezone=timezone
    )
    Subscription.objects.create(contact=contact, mailing_list=mailing_list, status=subscription)
    return contact


def dispatch(capture: Any, now: dt.datetime) -> None:
    with capture(execute=True):
        broadcasts_dispatch(now=now)


def received(smtp: ScriptedSMTP) -> Counter[str]:
    return Counter(smtp.recipients())


def make_broadcast(workspace: Workspace, **fields: Any) -> Broadcast:
    return broadcast_create(workspace=workspace, name="March news", **{**CONTENT, **fields})


# --- audience and exactly-once ---------------------------------------------------------------


def test_list_broadcast_reaches_every_mailable_subscriber_once(
    workspace: Workspace,
    newsletter: MailingList,
    smtp: ScriptedSMTP,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given
    for number in range(3):
        subscriber(newsletter, f"reader{number}@example.org")
    subscriber(newsletter, "left@example.org", subscription=SubscriptionStatus.UNSUBSCRIBED)
    subscriber(newsletter, "gone@example.org", status=ContactStatus.UNSUBSCRIBED)
    suppressed = subscriber(newsletter, "blocked@example.org")
    suppression_add(workspace=workspace, email=suppressed.email, reason=SuppressionReason.BOUNCED)
    ContactFactory(workspace=workspace, email="elsewhere@example.org", status="subscribed")
    broadcast = make_broadcast(workspace, mailing_list=newsletter)

    # when
    with time_machine.travel(T0, tick=False):
        broadcast_send(broadcast=broadcast, now=T0)
        dispatch(django_capture_on_commit_callbacks, T0)
        dispatch(django_capture_on_commit_callbacks, T0)

    # then
    expected = {f"reader{number}@example.org": 1 for number in range(3)}
    assert received(smtp) == expected
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.SENT
    assert broadcast.audience_count == 3
    assert broadcast.finished_at == T0
    assert Message.objects.filter(broadcast=broadcast, status=MessageStatus.SENT).count() == 3
    assert Message.objects.filter(broadcast=broadcast).count() == 3


def test_segment_broadcast(
    workspace: Workspace,
    newsletter: MailingList,
    smtp: ScriptedSMTP,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given
    vip = Tag.objects.create(workspace=workspace, name="vip")
    member = ContactFactory(workspace=workspace, email="vip@example.org", status="subscribed")
    member.tags.add(vip)
    ContactFactory(workspace=workspace, email="plain@example.org", status="subscribed")
    segment = Segment.objects.create(
        workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]}
    )
    broadcast = make_broadcast(workspace, segment=segment)

    # when
    with time_machine.travel(T0, tick=False):
        broadcast_send(broadcast=broadcast, now=T0)
        dispatch(django_capture_on_commit_callbacks, T0)

    # then
    assert received(smtp) == {"vip@example.org": 1}


def test_send_at_in_the_future_waits(
    workspace: Workspace,
    newsletter: MailingList,
    smtp: ScriptedSMTP,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given
    subscriber(newsletter, "reader@example.org")
    send_at = T0 + dt.timedelta(hours=5)
    broadcast = make_broadcast(workspace, mailing_list=newsletter, send_at=send_at)

    # when
    with time_machine.travel(T0, tick=False):
        broadcast_send(broadcast=broadcast, now=T0)
        dispatch(django_capture_on_commit_callbacks, T0)
        assert messages_retry_due(limit=100) == []

    # then nothing left before send_at
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.SCHEDULED
    assert smtp.recipients() == []
    assert Message.objects.get(broadcast=broadcast).next_attempt_at == send_at

    # when the time has come
    with time_machine.travel(send_at, tick=False):
        dispatch(django_capture_on_commit_callbacks, send_at)
        dispatch(django_capture_on_commit_callbacks, send_at)  # the next tick sees it done

    # then
    assert received(smtp) == {"reader@example.org": 1}
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.SENT


def test_local_time_sends_at_the_same_wall_clock_time_in_each_zone(
    workspace: Workspace, newsletter: MailingList
) -> None:
    # given a workspace in Berlin, a broadcast at 09:00 Berlin time on 10 March 2026
    Workspace.objects.filter(pk=workspace.pk).update(timezone="Europe/Berlin")
    workspace.refresh_from_db()
    berlin = subscriber(newsletter, "berlin@example.org", timezone="Europe/Berlin")
    new_york = subscriber(newsletter, "ny@example.org", timezone="America/New_York")
    send_at = dt.datetime(2026, 3, 10, 8, 0, tzinfo=dt.UTC)  # 09:00 CET
    broadcast = make_broadcast(workspace, mailing_list=newsletter, send_at=send_at, local_time=True)

    # when
    broadcast_send(broadcast=broadcast, now=T0)

    # then 09:00 local: CET is UTC+1, New York is already on EDT (UTC-4) since 8 March
    due = dict(
        Message.objects.filter(broadcast=broadcast).values_list("contact_id", "next_attempt_at")
    )
    assert due == {
        berlin.pk: dt.datetime(2026, 3, 10, 8, 0, tzinfo=dt.UTC),
        new_york.pk: dt.datetime(2026, 3, 10, 13, 0, tzinfo=dt.UTC),
    }


def test_pause_in_the_middle_and_resume_sends_each_mail_exactly_once(
    workspace: Workspace,
    newsletter: MailingList,
    smtp: ScriptedSMTP,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given a broadcast whose second half is due a minute later (as the throttle defers it)
    for number in range(4):
        subscriber(newsletter, f"reader{number}@example.org")
    broadcast = make_broadcast(workspace, mailing_list=newsletter)
    later = T0 + dt.timedelta(minutes=1)
    with time_machine.travel(T0, tick=False):
        broadcast_send(broadcast=broadcast, now=T0)
        second_half = list(
            Message.objects.filter(broadcast=broadcast).order_by("pk").values_list("pk", flat=True)
        )[2:]
        Message.objects.filter(pk__in=second_half).update(next_attempt_at=later)
        dispatch(django_capture_on_commit_callbacks, T0)
    assert len(smtp.recipients()) == 2

    # when paused: neither dispatch, nor the retry tick, nor a batch handed out earlier sends
    broadcast_pause(broadcast=broadcast)
    with time_machine.travel(later, tick=False):
        dispatch(django_capture_on_commit_callbacks, later)
        assert messages_retry_due(limit=100) == []
        result = messages_send(message_ids=[str(pk) for pk in second_half])
    assert result.sent == 0
    assert result.skipped == 2
    assert len(smtp.recipients()) == 2
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.PAUSED

    # when resumed
    broadcast_resume(broadcast=broadcast)
    with time_machine.travel(later, tick=False):
        broadcast_send(broadcast=broadcast, now=later)  # a repeated send changes nothing
        dispatch(django_capture_on_commit_callbacks, later)
        dispatch(django_capture_on_commit_callbacks, later)

    # then
    assert received(smtp) == {f"reader{number}@example.org": 1 for number in range(4)}
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.SENT


def test_send_twice_creates_no_duplicate_rows(
    workspace: Workspace, newsletter: MailingList
) -> None:
    # given
    for number in range(3):
        subscriber(newsletter, f"reader{number}@example.org")
    broadcast = make_broadcast(workspace, mailing_list=newsletter)
    broadcast_send(broadcast=broadcast, now=T0)
    first = set(Message.objects.filter(broadcast=broadcast).values_list("pk", flat=True))

    # when
    broadcast_send(broadcast=broadcast, now=T0)

    # then
    assert set(Message.objects.filter(broadcast=broadcast).values_list("pk", flat=True)) == first
    assert len(first) == 3


# --- A/B test --------------------------------------------------------------------------------


def ab_broadcast(workspace: Workspace, newsletter: MailingList, metric: str) -> Broadcast:
    for number in range(10):
        subscriber(newsletter, f"reader{number}@example.org")
    return make_broadcast(
        workspace,
        mailing_list=newsletter,
        variants=[{"subject": "Variant B", "html": "<p>B</p>"}],
        ab_test={"sample_percent": 20, "metric": metric, "wait": "PT4H"},
    )


def test_ab_test_sends_the_winner_by_opens_to_the_rest(
    workspace: Workspace,
    newsletter: MailingList,
    smtp: ScriptedSMTP,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given a sample of 2 of 10, one per variant, sent
    broadcast = ab_broadcast(workspace, newsletter, "open_rate")
    with time_machine.travel(T0, tick=False):
        broadcast_send(broadcast=broadcast, now=T0)
        dispatch(django_capture_on_commit_callbacks, T0)
    sample = list(Message.objects.filter(broadcast=broadcast))
    assert sorted(message.variant for message in sample) == [0, 1]
    assert len(smtp.recipients()) == 2
    broadcast.refresh_from_db()
    assert broadcast.ab_decide_at == T0 + dt.timedelta(hours=4)
    assert broadcast.status == BroadcastStatus.SENDING  # not done: the rest is to come

    # and variant 1 was opened by a human (as the tracking records it)
    Message.objects.filter(broadcast=broadcast, variant=1).update(
        opened_at=T0 + dt.timedelta(hours=1)
    )

    # when the wait is not over yet, nothing is decided
    early = T0 + dt.timedelta(hours=3)
    with time_machine.travel(early, tick=False):
        broadcast_ab_decide(broadcast=broadcast, now=early)
    assert Message.objects.filter(broadcast=broadcast).count() == 2

    # when it is over
    after = T0 + dt.timedelta(hours=4)
    with time_machine.travel(after, tick=False):
        broadcast_tasks.broadcast_ab_decide.delay()
        dispatch(django_capture_on_commit_callbacks, after)
        dispatch(django_capture_on_commit_callbacks, after)

    # then
    broadcast.refresh_from_db()
    assert broadcast.winner == 1
    assert broadcast.winner_by_chance is False
    rest = Message.objects.filter(broadcast=broadcast).exclude(pk__in=[m.pk for m in sample])
    assert rest.count() == 8
    assert set(rest.values_list("variant", flat=True)) == {1}
    assert Counter(str(mail["Subject"]) for mail in smtp.received[2:]) == {"Variant B": 8}
    assert received(smtp) == {f"reader{number}@example.org": 1 for number in range(10)}
    assert broadcast.status == BroadcastStatus.SENT


def test_ab_test_without_opens_is_decided_by_chance(
    workspace: Workspace,
    newsletter: MailingList,
    smtp: ScriptedSMTP,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given
    broadcast = ab_broadcast(workspace, newsletter, "click_rate")
    with time_machine.travel(T0, tick=False):
        broadcast_send(broadcast=broadcast, now=T0)
        dispatch(django_capture_on_commit_callbacks, T0)

    # when
    after = T0 + dt.timedelta(hours=5)
    broadcast_ab_decide(broadcast=broadcast, now=after)

    # then
    broadcast.refresh_from_db()
    assert broadcast.winner == 0
    assert broadcast.winner_by_chance is True
    assert Message.objects.filter(broadcast=broadcast, variant=0).count() == 9


# --- frequency cap ---------------------------------------------------------------------------


def test_frequency_cap_defers_a_broadcast_mail(
    workspace: Workspace,
    newsletter: MailingList,
    smtp: ScriptedSMTP,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given a contact mailed an hour ago (cap: 1 a day) and one not
    mailed = subscriber(newsletter, "mailed@example.org")
    subscriber(newsletter, "fresh@example.org")
    earlier = make_broadcast(workspace, mailing_list=newsletter)
    Message.objects.create(
        workspace=workspace,
        contact=mailed,
        broadcast=earlier,
        status=MessageStatus.SENT,
        sent_at=T0 - dt.timedelta(hours=1),
    )
    broadcast = make_broadcast(workspace, mailing_list=newsletter)

    # when
    with time_machine.travel(T0, tick=False):
        broadcast_send(broadcast=broadcast, now=T0)
        dispatch(django_capture_on_commit_callbacks, T0)

    # then deferred to when the cap allows, not dropped
    message = Message.objects.get(broadcast=broadcast, contact=mailed)
    assert message.status == MessageStatus.QUEUED
    assert message.next_attempt_at == T0 + dt.timedelta(hours=23)
    assert received(smtp) == {"fresh@example.org": 1}
    later = T0 + dt.timedelta(hours=23)
    with time_machine.travel(later, tick=False):
        dispatch(django_capture_on_commit_callbacks, later)
    assert received(smtp) == {"fresh@example.org": 1, "mailed@example.org": 1}


# --- API -------------------------------------------------------------------------------------


def test_api_create_send_report_and_isolation(
    workspace: Workspace,
    other_workspace: Workspace,
    newsletter: MailingList,
    api: APIClient,
    api_client_for: Callable[..., APIClient],
    smtp: ScriptedSMTP,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given
    subscriber(newsletter, "reader@example.org")
    payload = {
        "name": "March",
        "list": str(newsletter.pk),
        "subject": "Hi",
        "html": "<p>Hi</p>",
        "variants": [{"subject": "Hey", "html": "<p>Hey</p>"}],
        "ab_test": {"sample_percent": 50, "metric": "open_rate", "wait": "PT4H"},
    }

    # when
    created = api.post("/api/v1/broadcasts/", payload, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    # then
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["list"] == str(newsletter.pk)
    assert body["segment"] is None
    assert body["status"] == "draft"
    assert body["ab_test"] == {"sample_percent": 50, "metric": "open_rate", "wait": "PT4H"}
    pk = body["id"]

    assert api.get("/api/v1/broadcasts/").json()["results"][0]["id"] == pk
    patched = api.patch(f"/api/v1/broadcasts/{pk}/", {"name": "April"}, format="json")
    assert patched.status_code == 200
    assert patched.json()["name"] == "April"

    invalid = api.post(
        "/api/v1/broadcasts/",
        {**payload, "ab_test": {"sample_percent": 60, "metric": "open_rate", "wait": "PT4H"}},
        format="json",
    )
    assert invalid.status_code == 400
    assert "ab_test" in invalid.json()

    with time_machine.travel(T0, tick=False):
        # the messages are made by a task after commit (Celery runs eagerly in tests)
        with django_capture_on_commit_callbacks(execute=True):
            sent = api.post(f"/api/v1/broadcasts/{pk}/send/")
        assert sent.status_code == 202
        assert sent.json()["status"] == "sending"
        dispatch(django_capture_on_commit_callbacks, T0)
    report = api.get(f"/api/v1/broadcasts/{pk}/report/").json()
    # The report is analytics' now (tests/analytics/test_broadcast_report.py): it adds fields,
    # these are the ones it always had.
    legacy = ("audience", "queued", "sent", "failed", "cancelled", "opened", "clicked")
    legacy += ("open_rate", "click_rate", "winner")
    report = {key: report[key] for key in (*legacy, "variants")} | {
        "variants": [
            {key: variant[key] for key in ("variant", "subject", "sent", "opened", "clicked")}
            for variant in report["variants"]
        ]
    }
    assert report == {
        "audience": 1,
        "queued": 0,
        "sent": 1,
        "failed": 0,
        "cancelled": 0,
        "opened": 0,
        "clicked": 0,
        "open_rate": 0.0,
        "click_rate": 0.0,
        "variants": [
            {"variant": 0, "subject": "Hi", "sent": 1, "opened": 0, "clicked": 0},
            {"variant": 1, "subject": "Hey", "sent": 0, "opened": 0, "clicked": 0},
        ],
        "winner": None,
    }
    assert api.post(f"/api/v1/broadcasts/{pk}/pause/").json()["status"] == "paused"
    assert api.post(f"/api/v1/broadcasts/{pk}/resume/").json()["status"] == "sending"
    assert api.patch(f"/api/v1/broadcasts/{pk}/", {"name": "X"}, format="json").status_code == 409

    # and another workspace sees nothing of it
    theirs = api_client_for(other_workspace)
    for url in ("", "report/"):
        assert theirs.get(f"/api/v1/broadcasts/{pk}/{url}").status_code == 404
    for url in ("send/", "pause/", "resume/"):
        assert theirs.post(f"/api/v1/broadcasts/{pk}/{url}").status_code == 404
    assert theirs.delete(f"/api/v1/broadcasts/{pk}/").status_code == 404
    assert theirs.get("/api/v1/broadcasts/").json()["results"] == []
    their_list = api_client_for(other_workspace).post(
        "/api/v1/broadcasts/", {**payload, "ab_test": None, "variants": []}, format="json"
    )
    assert their_list.status_code == 400  # our list is not theirs
    assert Broadcast.objects.filter(workspace=other_workspace).count() == 0


# --- pages -----------------------------------------------------------------------------------


def test_pages_editor_creates_sends_and_sees_progress_viewer_reads_only(
    workspace: Workspace,
    newsletter: MailingList,
    member_of: Callable[..., Membership],
    logged_in: Callable[[Membership], Any],
    smtp: ScriptedSMTP,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given
    subscriber(newsletter, "reader@example.org")
    editor = member_of(workspace, Role.EDITOR)
    client = logged_in(editor)

    # when the editor creates a broadcast with an A/B test
    response = client.post(
        reverse("broadcast-create"),
        {
            "name": "Spring",
            "audience": f"list:{newsletter.pk}",
            "subject": "Spring is here",
            "html": "<p>Spring</p>",
            "when": "now",
            "ab_enabled": "on",
            "variant_subject": "Spring sale",
            "variant_html": "",
            "sample_percent": "50",
            "metric": "click_rate",
            "wait_hours": "2",
            "utm_medium": "email",
        },
    )

    # then
    broadcast = Broadcast.objects.get(workspace=workspace)
    assert response.status_code == 302
    assert broadcast.utm == {"utm_medium": "email"}
    assert response["Location"] == reverse("broadcast-detail", args=[broadcast.pk])
    assert broadcast.variants == [{"subject": "Spring sale", "html": "<p>Spring</p>"}]
    assert broadcast.ab_test == {"sample_percent": 50, "metric": "click_rate", "wait": "PT2H"}

    # when sent, the progress fragment polls every 2 s while sending
    with time_machine.travel(T0, tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            assert client.post(reverse("broadcast-send", args=[broadcast.pk])).status_code == 302
        fragment = client.get(reverse("broadcast-progress", args=[broadcast.pk]))
    assert 'hx-trigger="every 2s"' in fragment.content.decode()
    assert 'data-testid="count-queued">1<' in fragment.content.decode()

    # and stops once it is done
    Broadcast.objects.filter(pk=broadcast.pk).update(status=BroadcastStatus.SENT)
    done = client.get(reverse("broadcast-progress", args=[broadcast.pk])).content.decode()
    assert "hx-trigger" not in done

    # a viewer reads but may not act
    viewer = logged_in(member_of(workspace, Role.VIEWER))
    assert viewer.get(reverse("broadcast-list")).status_code == 200
    assert viewer.get(reverse("broadcast-detail", args=[broadcast.pk])).status_code == 200
    Broadcast.objects.filter(pk=broadcast.pk).update(status=BroadcastStatus.SENDING)
    assert viewer.post(reverse("broadcast-pause", args=[broadcast.pk])).status_code == 403
    assert viewer.get(reverse("broadcast-create")).status_code == 403
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.SENDING


def test_pages_of_another_workspace_are_404(
    workspace: Workspace,
    other_workspace: Workspace,
    newsletter: MailingList,
    member_of: Callable[..., Membership],
    logged_in: Callable[[Membership], Any],
) -> None:
    # given
    broadcast = make_broadcast(workspace, mailing_list=newsletter)
    stranger = logged_in(member_of(other_workspace, Role.OWNER))

    # then
    assert stranger.get(reverse("broadcast-detail", args=[broadcast.pk])).status_code == 404
    assert stranger.post(reverse("broadcast-send", args=[broadcast.pk])).status_code == 404
    assert Message.objects.count() == 0


def test_start_makes_the_messages_after_commit_and_a_pause_before_that_holds_them(
    workspace: Workspace,
    newsletter: MailingList,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # given a started broadcast whose message-making task has not run yet
    for number in range(2):
        subscriber(newsletter, f"reader{number}@example.org")
    broadcast = make_broadcast(workspace, mailing_list=newsletter)
    with django_capture_on_commit_callbacks(execute=False) as start_callbacks:
        started = broadcast_start(broadcast=broadcast, now=T0)
    assert started.status == BroadcastStatus.SENDING
    assert Message.objects.filter(broadcast=broadcast).count() == 0

    # when it is paused before the task runs, the task makes nothing
    broadcast_pause(broadcast=broadcast)
    for callback in start_callbacks:
        callback()
    assert Message.objects.filter(broadcast=broadcast).count() == 0

    # then resuming makes the messages, once, however often it runs
    with django_capture_on_commit_callbacks(execute=True):
        broadcast_resume(broadcast=broadcast)
    with django_capture_on_commit_callbacks(execute=True):
        broadcast_start(broadcast=broadcast, now=T0)
    assert Message.objects.filter(broadcast=broadcast).count() == 2
    broadcast.refresh_from_db()
    assert broadcast.audience_count == 2
