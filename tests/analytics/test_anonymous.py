"""The anonymous tracking mode in the rollups and reports: opens and clicks stored per mail
source (no message) are counted as events per source and day, shown next to the rates, and
the rates built on unique openers or clickers are null where people's anonymous events count.
Mails are sent by the real engine and broadcast services, hits written by tracking's writer."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from rest_framework.test import APIClient

from analytics.models import DirtyKey, MessageDaily
from analytics.rollups import rollups_refresh
from campaigns import engine
from campaigns.broadcasts import broadcast_create, broadcast_send, broadcasts_dispatch
from campaigns.milestones import milestones_set
from campaigns.models import Broadcast, Message, Sequence, SequenceStatus
from campaigns.services import enrollment_create, sequence_create, sequence_set_status
from campaigns.tracking_links import Source
from contacts.models import ContactStatus, MailingList, Subscription, SubscriptionStatus
from core.models import TrackingMode, Workspace
from funnel.models import Funnel, Stage
from funnel.services import funnel_create
from tests.analytics.test_reports import rollup_rows
from tests.factories import ContactFactory
from tracking.hits import CLICK, OPEN, TRAP, Hit
from tracking.ingest import hits_write
from tracking.models import Activity, Origin
from tracking.signals import anonymous_activity

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 4, 6, 9, 0, tzinfo=dt.UTC)  # a Monday
DAY0 = T0.date()
DAY1 = DAY0 + dt.timedelta(days=1)
DAY2 = DAY0 + dt.timedelta(days=2)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
APPLE_PROXY = {"user_agent": "Mozilla/5.0", "ip": "17.58.101.0"}


@dataclass
class Anonymous:
    workspace: Workspace
    funnel: Funnel
    attention: Stage
    sequence: Sequence
    broadcast: Broadcast
    welcome: Source
    news: Source


@pytest.fixture
def anonymous(workspace: Workspace, django_capture_on_commit_callbacks: Any) -> Anonymous:
    """A workspace tracking anonymously: at T0 the welcome mail (tagged attention) goes to
    three contacts, one of them bounces; the newsletter goes to two subscribers."""
    capture = django_capture_on_commit_callbacks
    Workspace.objects.filter(pk=workspace.pk).update(
        tracking_mode=TrackingMode.ANONYMOUS,
        frequency_cap_per_day=10,
        frequency_cap_per_week=30,
        send_rate_per_second=1000,
    )
    workspace.refresh_from_db()
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida", goal_event="purchase")
    attention = funnel.stages.get(key="attention")
    steps = [
        {"key": "welcome", "type": "email", "stage": str(attention.pk), "subject": "Hi",
         "html": '<a href="https://shop.example/">Shop</a>', "next": None},
    ]  # fmt: skip
    sequence = sequence_create(workspace=workspace, funnel=funnel, name="Welcome", steps=steps)
    sequence = sequence_set_status(sequence=sequence, status=SequenceStatus.ACTIVE)
    newsletter = MailingList.objects.create(workspace=workspace, name="News")
    for number in range(2):
        reader = ContactFactory(
            workspace=workspace, email=f"r{number}@example.org", status=ContactStatus.SUBSCRIBED
        )
        Subscription.objects.create(
            contact=reader, mailing_list=newsletter, status=SubscriptionStatus.SUBSCRIBED
        )
    broadcast = broadcast_create(
        workspace=workspace,
        name="April",
        subject="News",
        html="<p>News</p>",
        mailing_list=newsletter,
    )
    with time_machine.travel(T0, tick=False):
        for number in range(3):
            contact = ContactFactory(
                workspace=workspace, email=f"c{number}@example.org", status=ContactStatus.SUBSCRIBED
            )
            enrollment_create(sequence=sequence, contact=contact)
        with capture(execute=True):
            engine.tick()
        broadcast_send(broadcast=broadcast, now=T0)
        with capture(execute=True):
            broadcasts_dispatch(now=T0)
    assert Message.objects.filter(sent_at=T0).count() == 5
    bounced = Message.objects.filter(step_key="welcome").order_by("pk").first()
    assert bounced is not None
    milestones_set("bounced", {bounced.pk: T0 + dt.timedelta(minutes=1)})
    return Anonymous(
        workspace=workspace,
        funnel=funnel,
        attention=attention,
        sequence=sequence,
        broadcast=broadcast,
        welcome=Source(sequence_id=sequence.pk, step_key="welcome"),
        news=Source(broadcast_id=broadcast.pk),
    )


def hit(
    key: str,
    kind: str,
    source: Source,
    at: dt.datetime,
    *,
    user_agent: str = BROWSER,
    ip: str = "198.51.100.0",
) -> Hit:
    return Hit(
        key=key,
        kind=kind,
        message_id=None,
        source=source,
        link_index=0 if kind == CLICK else None,
        url="https://shop.example/" if kind == CLICK else "",
        occurred_at=at,
        user_agent=user_agent,
        ip=ip,
        method="GET",
        origin=Origin.PIXEL if kind == OPEN else Origin.REDIRECT,
    )


def activity(anonymous: Anonymous) -> list[Hit]:
    """Day 0: the welcome mail opened twice by people and once by Apple's proxy, clicked once
    by a person, its trap link followed by a scanner; the newsletter clicked by a person.
    Day 1: the welcome mail opened by a person. Day 2: only Apple's proxy."""
    welcome, news = anonymous.welcome, anonymous.news
    hour = dt.timedelta(hours=1)
    return [
        hit("o1", OPEN, welcome, T0 + hour),
        hit("o2", OPEN, welcome, T0 + 2 * hour),
        hit("o3", OPEN, welcome, T0 + 2 * hour, **APPLE_PROXY),
        hit("c1", CLICK, welcome, T0 + 3 * hour),
        hit("t1", TRAP, welcome, T0 + 4 * hour),
        hit("c2", CLICK, news, T0 + 5 * hour),
        hit("o4", OPEN, welcome, T0 + 25 * hour),
        hit("o5", OPEN, welcome, T0 + 49 * hour, **APPLE_PROXY),
    ]


def _refresh() -> None:
    while rollups_refresh():
        pass


COUNTS = (
    "sent",
    "bounced",
    "opened",
    "clicked",
    "anonymous_opens",
    "anonymous_clicks",
    "anonymous_machine_opens",
    "anonymous_bot_clicks",
)


def test_anonymous_activity_is_counted_per_source_and_day(anonymous: Anonymous) -> None:
    # given the mails' activity, written by tracking's writer
    result = hits_write(activity(anonymous))
    assert (result.written, result.human, result.machine) == (8, 5, 3)
    assert not Activity.objects.filter(message__isnull=False).exists()

    # when the marks it left are refreshed
    marks = sorted(
        (str(mark.object_id), mark.is_broadcast, mark.day)
        for mark in DirtyKey.objects.filter(day__gte=DAY0)
    )
    _refresh()

    # then each source counts its events on the day they happened, next to the sends
    sequence, broadcast = str(anonymous.sequence.pk), str(anonymous.broadcast.pk)
    assert (sequence, False, DAY0) in marks and (broadcast, True, DAY0) in marks
    assert (sequence, False, DAY1) in marks and (sequence, False, DAY2) in marks
    rows = {
        (row.day, row.step_key or "news"): (
            row.stage_id,
            tuple(getattr(row, count) for count in COUNTS),
        )
        for row in MessageDaily.objects.filter(workspace=anonymous.workspace)
    }
    attention = anonymous.attention.pk
    assert rows == {
        (DAY0, "welcome"): (attention, (3, 1, 0, 0, 2, 1, 1, 1)),
        (DAY1, "welcome"): (attention, (0, 0, 0, 0, 1, 0, 0, 0)),
        (DAY2, "welcome"): (attention, (0, 0, 0, 0, 0, 0, 1, 0)),
        (DAY0, "news"): (None, (2, 0, 0, 0, 0, 1, 0, 0)),
    }


def test_a_replayed_batch_counts_and_marks_nothing(anonymous: Anonymous) -> None:
    # given the activity written and refreshed
    hits_write(activity(anonymous))
    _refresh()
    before = rollup_rows()

    # when the same batch is written again (a writer that died after its commit)
    result = hits_write(activity(anonymous))

    # then nothing is new, nothing is marked, nothing changes
    assert (result.written, result.duplicates) == (0, 8)
    assert DirtyKey.objects.count() == 0
    assert rollup_rows() == before


def test_the_rebuild_reproduces_the_anonymous_rollups(anonymous: Anonymous) -> None:
    # given the live rollups
    hits_write(activity(anonymous))
    _refresh()
    live = rollup_rows()
    assert len(live["messages"]) == 4

    # when everything is rebuilt from the raw rows
    call_command("analytics_rebuild", stdout=io.StringIO())

    # then it is the same, row for row
    assert rollup_rows() == live


UNKNOWN = {"open_rate": None, "click_rate": None, "click_to_open_rate": None}


def test_reports_show_anonymous_events_and_no_unique_rates(
    anonymous: Anonymous, api: APIClient
) -> None:
    # given
    hits_write(activity(anonymous))

    # when the reports of days 0 and 1 are read
    period = f"from={DAY0}&to={DAY1}"
    sequence = api.get(f"/api/v1/sequences/{anonymous.sequence.pk}/report/?{period}").json()
    funnel = api.get(f"/api/v1/funnels/{anonymous.funnel.pk}/report/?{period}").json()
    broadcast = api.get(f"/api/v1/broadcasts/{anonymous.broadcast.pk}/report/").json()

    # then the welcome step: three sent, one bounced, people opened three times (day 0 and 1)
    # and clicked once; the machines apart; unique openers and clickers unknown
    (welcome,) = sequence["steps"]
    expected = {
        "sent": 3,
        "delivered": 2,
        "opened": 0,
        "clicked": 0,
        "anonymous_opens": 3,
        "anonymous_clicks": 1,
        "anonymous_machine_opens": 1,
        "anonymous_bot_clicks": 1,
        "delivery_rate": 2 / 3,
        "bounce_rate": 1 / 3,
        "unsubscribe_rate": 0.0,
        **UNKNOWN,
        "conversion_rate": None,
    }
    assert {key: welcome[key] for key in expected} == expected
    assert {key: sequence["totals"][key] for key in expected} == expected
    # the attention stage shows its mail's figures alike
    attention = funnel["stages"][0]
    assert attention["key"] == "attention"
    assert {key: attention[key] for key in expected if key != "conversion_rate"} == {
        key: value for key, value in expected.items() if key != "conversion_rate"
    }
    # the newsletter: one click by a person (a click counts as an open: unknown too)
    assert (broadcast["sent"], broadcast["anonymous_clicks"], broadcast["anonymous_opens"]) == (
        2,
        1,
        0,
    )
    assert {key: broadcast[key] for key in UNKNOWN} == UNKNOWN
    assert broadcast["variants"][0]["click_rate"] is None


def test_machines_alone_leave_the_rates_known(anonymous: Anonymous, api: APIClient) -> None:
    # given day 2 saw only Apple's proxy open the welcome mail
    hits_write(activity(anonymous))

    # when day 2 alone is read, by day
    body = api.get(
        "/api/v1/analytics/timeseries/"
        f"?from={DAY2}&to={DAY2}&sequence={anonymous.sequence.pk}&interval=day"
    ).json()

    # then no person's event is unknown there: the rates are numbers (nothing was sent)
    (point,) = body["points"]
    assert (point["sent"], point["anonymous_machine_opens"], point["anonymous_opens"]) == (0, 1, 0)
    assert (point["open_rate"], point["click_rate"], point["conversion_rate"]) == (0.0, 0.0, 0.0)


def test_a_dropped_hit_marks_nothing(workspace: Workspace) -> None:
    # given a hit of a message that is gone (erased): dropped, nothing stored
    stray = Hit(
        key="gone",
        kind=OPEN,
        message_id=Message._meta.pk.to_python("6b1d2f9e-5a4b-4c1e-9f00-000000000001"),
        source=None,
        link_index=None,
        url="",
        occurred_at=T0,
        user_agent=BROWSER,
        ip="198.51.100.0",
        method="GET",
        origin=Origin.PIXEL,
    )

    # when it is written
    result = hits_write([stray])

    # then nothing is announced or marked
    assert (result.written, result.dropped) == (0, 1)
    assert DirtyKey.objects.count() == 0


def test_personal_activity_is_not_announced_as_anonymous(anonymous: Anonymous) -> None:
    # given a listener, and a person's open of one message (a personal token names it)
    announced: list[Any] = []

    def listen(sender: Any, *, sources: list[Any], **kwargs: Any) -> None:
        announced.extend(sources)

    message = Message.objects.filter(broadcast=anonymous.broadcast).order_by("pk").first()
    assert message is not None
    personal = Hit(
        key="personal",
        kind=OPEN,
        message_id=message.pk,
        source=None,
        link_index=None,
        url="",
        occurred_at=T0 + dt.timedelta(hours=1),
        user_agent=BROWSER,
        ip="198.51.100.0",
        method="GET",
        origin=Origin.PIXEL,
    )

    # when it is written
    anonymous_activity.connect(listen)
    try:
        result = hits_write([personal])
    finally:
        anonymous_activity.disconnect(listen)

    # then its milestone tells the rollups, not the anonymous signal
    assert result.written == 1 and announced == []
    _refresh()
    news = MessageDaily.objects.get(broadcast=anonymous.broadcast)
    assert (news.opened, news.anonymous_opens) == (1, 0)
