"""The broadcast report: figures per variant from the rollups, and the A/B test judged on its
sample with a two-proportion z-test, through the real send, decision and tracking services."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Callable
from typing import Any

import pytest
import time_machine
from rest_framework.test import APIClient

from campaigns import engine
from campaigns.broadcasts import (
    broadcast_ab_decide,
    broadcast_create,
    broadcast_send,
    broadcasts_dispatch,
)
from campaigns.milestones import milestones_set
from campaigns.models import Broadcast, Message
from contacts.models import ContactStatus, MailingList, Subscription, SubscriptionStatus
from core.models import Workspace
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 9, 12, 0, tzinfo=dt.UTC)


def z_test(opened_a: int, delivered_a: int, opened_b: int, delivered_b: int) -> tuple[float, float]:
    """The textbook pooled two-proportion z-test, written out independently of the code."""
    pooled = (opened_a + opened_b) / (delivered_a + delivered_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / delivered_a + 1 / delivered_b))
    z = (opened_a / delivered_a - opened_b / delivered_b) / spread
    # two-sided p from the standard normal distribution: 2 * (1 - Phi(|z|))
    p = 2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2))))
    return z, p


def ab_broadcast(
    workspace: Workspace, capture: Callable[..., Any], opens: dict[int, int]
) -> Broadcast:
    """40 subscribers, a 50 % sample split over two variants (10 each), `opens[v]` human
    openers among variant v's sample, the winner decided after the wait, the rest sent."""
    Workspace.objects.filter(pk=workspace.pk).update(send_rate_per_second=1000)
    workspace.refresh_from_db()
    newsletter = MailingList.objects.create(workspace=workspace, name="News")
    for number in range(40):
        contact = ContactFactory(
            workspace=workspace, email=f"r{number}@example.org", status=ContactStatus.SUBSCRIBED
        )
        Subscription.objects.create(
            contact=contact, mailing_list=newsletter, status=SubscriptionStatus.SUBSCRIBED
        )
    broadcast = broadcast_create(
        workspace=workspace,
        name="March",
        subject="Hi",
        html="<p>Hi</p>",
        mailing_list=newsletter,
        variants=[{"subject": "Hey", "html": "<p>Hey</p>"}],
        ab_test={"sample_percent": 50, "metric": "open_rate", "wait": "PT4H"},
    )
    with time_machine.travel(T0, tick=False):
        broadcast_send(broadcast=broadcast, now=T0)
        with capture(execute=True):
            broadcasts_dispatch(now=T0)
    for variant, count in opens.items():
        sample = Message.objects.filter(broadcast=broadcast, variant=variant).order_by("pk")
        for message in sample[:count]:
            engine.message_opened(message.pk, T0 + dt.timedelta(hours=1))
    decide_at = T0 + dt.timedelta(hours=5)
    with time_machine.travel(decide_at, tick=False):
        broadcast_ab_decide(broadcast=broadcast, now=decide_at)
        with capture(execute=True):
            broadcasts_dispatch(now=decide_at)
    broadcast.refresh_from_db()
    return broadcast


def test_a_clear_ab_winner_is_significant(
    workspace: Workspace, api: APIClient, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    # given variant 1 opened by 8 of its 10, variant 0 by 2 of 10, and one bounce in the rest
    broadcast = ab_broadcast(workspace, django_capture_on_commit_callbacks, {0: 2, 1: 8})
    rest = Message.objects.filter(broadcast=broadcast, created_at__gte=broadcast.ab_decide_at)
    milestones_set("bounced", {rest.order_by("pk").first().pk: T0 + dt.timedelta(hours=6)})

    # when
    body = api.get(f"/api/v1/broadcasts/{broadcast.pk}/report/").json()

    # then the whole broadcast: 40 sent, 1 bounced, 10 opened
    assert (body["audience"], body["queued"], body["sent"], body["delivered"]) == (40, 0, 40, 39)
    assert (body["opened"], body["bounced"], body["percent"], body["done"]) == (10, 1, 100, True)
    assert body["open_rate"] == 10 / 39
    assert body["winner"] == 1
    # variant 1 got the rest of the audience (20 more)
    v0, v1 = body["variants"]
    assert (v0["variant"], v0["subject"], v0["sent"], v0["opened"]) == (0, "Hi", 10, 2)
    assert (v1["variant"], v1["subject"], v1["sent"], v1["opened"]) == (1, "Hey", 30, 8)
    assert v1["open_rate"] == 8 / 29
    # the test is judged on the sample alone
    ab = body["ab_test"]
    assert [(v["variant"], v["delivered"], v["successes"]) for v in ab["variants"]] == [
        (0, 10, 2),
        (1, 10, 8),
    ]
    z, p = z_test(8, 10, 2, 10)
    assert ab["z"] == pytest.approx(z, rel=1e-12)
    assert ab["p_value"] == pytest.approx(p, rel=1e-9)
    assert round(ab["p_value"], 5) == 0.00729  # 2 * (1 - Phi(2.6833))
    assert (ab["leader"], ab["runner_up"], ab["decided"]) == (1, 0, True)
    assert (ab["significant"], ab["winner_by_chance"], ab["decided_by_chance"]) == (
        True,
        False,
        False,
    )

    # and the CSV says the same
    response = api.get(f"/api/v1/broadcasts/{broadcast.pk}/report/export/")
    text = b"".join(response.streaming_content).decode().lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert [row[header.index("opened")] for row in rows[1:4]] == ["2", "8", "10"]
    assert rows[-1][3] == "no"


def test_a_narrow_ab_lead_is_called_chance(
    workspace: Workspace, api: APIClient, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    # given 4 of 10 against 3 of 10
    broadcast = ab_broadcast(workspace, django_capture_on_commit_callbacks, {0: 3, 1: 4})

    # when
    ab = api.get(f"/api/v1/broadcasts/{broadcast.pk}/report/").json()["ab_test"]

    # then the winner is variant 1, but nothing says it is better than chance
    _z, p = z_test(4, 10, 3, 10)
    assert (ab["winner"], ab["leader"]) == (1, 1)
    assert ab["p_value"] == pytest.approx(p, rel=1e-9)
    assert ab["p_value"] > 0.05
    assert (ab["significant"], ab["winner_by_chance"], ab["decided_by_chance"]) == (
        False,
        False,
        True,
    )


def test_a_period_limits_the_mail_figures_and_another_workspace_gets_404(
    workspace: Workspace,
    other_workspace: Workspace,
    api: APIClient,
    api_client_for: Callable[..., APIClient],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    broadcast = ab_broadcast(workspace, django_capture_on_commit_callbacks, {0: 0, 1: 0})

    # when a day without sends is asked for
    body = api.get(f"/api/v1/broadcasts/{broadcast.pk}/report/?from=2026-03-10&to=2026-03-10")

    # then
    assert body.json()["sent"] == 0
    assert body.json()["ab_test"]["winner_by_chance"] is True
    assert body.json()["ab_test"]["decided_by_chance"] is True
    theirs = api_client_for(other_workspace)
    assert theirs.get(f"/api/v1/broadcasts/{broadcast.pk}/report/").status_code == 404
    assert theirs.get(f"/api/v1/broadcasts/{broadcast.pk}/report/export/").status_code == 404
