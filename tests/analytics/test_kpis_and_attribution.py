"""The seed's worked example (20,000 sent, 2,000 bounced, 10,000 opened, cost 1,000 -> 18,000
delivered, cost per impression 0.10; 100 conversions from 2,000 interactions -> 5 %), built
with bulk rows and the rebuild; attribution models; campaign costs through the API."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from rest_framework.test import APIClient

from analytics.models import CampaignCost
from campaigns.broadcasts import broadcast_create
from campaigns.milestones import milestones_set
from campaigns.models import Broadcast, Message, MessageStatus
from contacts.models import Contact, ContactStatus, MailingList
from core.models import Workspace
from funnel.services import EventInput, events_record, funnel_create
from tests.analytics.conftest import History

pytestmark = pytest.mark.django_db

DAY0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
PERIOD = "from=2026-02-01&to=2026-02-10"


def make_broadcast(workspace: Workspace, name: str) -> Broadcast:
    newsletter, _created = MailingList.objects.get_or_create(workspace=workspace, name="News")
    return broadcast_create(
        workspace=workspace, name=name, subject=name, html="<p>Hi</p>", mailing_list=newsletter
    )


def bulk_contacts(workspace: Workspace, count: int) -> list[Contact]:
    return Contact.objects.bulk_create(
        Contact(workspace=workspace, email=f"p{number}@example.org", status="subscribed")
        for number in range(count)
    )


def purchases(
    workspace: Workspace, capture: Callable[..., Any], items: list[tuple[Contact, str, dt.datetime]]
) -> None:
    with capture(execute=True):
        events_record(
            workspace=workspace,
            inputs=[
                EventInput(
                    name="purchase",
                    contact_id=contact.pk,
                    value=Decimal(value),
                    currency="EUR",
                    occurred_at=at,
                )
                for contact, value, at in items
            ],
        )


@pytest.fixture
def worked_example(
    workspace: Workspace, django_capture_on_commit_callbacks: Callable[..., Any]
) -> Broadcast:
    """20,000 mails of one broadcast sent on day 0: 2,000 bounced, 10,000 of the delivered
    opened by a person, 2,000 of those clicked; 100 clickers bought (25 EUR) two days later,
    10 of them had bought before (40 EUR) already; 1,000 EUR spent on it."""
    funnel_create(workspace=workspace, name="Shop", preset="journey", goal_event="purchase")
    broadcast = make_broadcast(workspace, "Spring sale")
    contacts = bulk_contacts(workspace, 20_000)
    Message.objects.bulk_create(
        (
            Message(
                workspace=workspace,
                contact=contact,
                broadcast=broadcast,
                subject="Spring sale",
                status=MessageStatus.SENT,
                sent_at=DAY0,
                esp_accepted_at=DAY0,
                bounced_at=DAY0 + dt.timedelta(minutes=5) if number < 2_000 else None,
                opened_at=DAY0 + dt.timedelta(hours=1) if 2_000 <= number < 12_000 else None,
                clicked_at=DAY0 + dt.timedelta(hours=2) if 2_000 <= number < 4_000 else None,
            )
            for number, contact in enumerate(contacts)
        ),
        batch_size=5_000,
    )
    buyers = contacts[2_000:2_100]
    earlier = DAY0 - dt.timedelta(days=20)
    with time_machine.travel(earlier, tick=False):
        purchases(
            workspace,
            django_capture_on_commit_callbacks,
            [(contact, "40.00", earlier) for contact in buyers[:10]],
        )
    bought = DAY0 + dt.timedelta(days=2)
    with time_machine.travel(bought, tick=False):
        purchases(
            workspace,
            django_capture_on_commit_callbacks,
            [(contact, "25.00", bought) for contact in buyers],
        )
    CampaignCost.objects.create(
        workspace=workspace,
        broadcast=broadcast,
        amount=Decimal("1000.00"),
        currency="EUR",
        spent_on=DAY0.date(),
    )
    call_command("analytics_rebuild", stdout=io.StringIO())
    return broadcast


def test_the_worked_example_holds(worked_example: Broadcast, api: APIClient) -> None:
    broadcast = worked_example

    # when
    report = api.get(f"/api/v1/broadcasts/{broadcast.pk}/report/").json()
    kpis = api.get(f"/api/v1/analytics/kpis/?broadcast={broadcast.pk}&{PERIOD}").json()
    attribution = api.get(f"/api/v1/analytics/attribution/?{PERIOD}").json()

    # then 18,000 delivered, 10,000 unique opens
    assert (report["sent"], report["bounced"], report["delivered"]) == (20_000, 2_000, 18_000)
    assert (report["opened"], report["clicked"], report["converted"]) == (10_000, 2_000, 100)
    assert report["open_rate"] == 10_000 / 18_000
    assert report["click_rate"] == 2_000 / 18_000
    assert report["conversion_rate"] == 100 / 18_000
    # cost per impression 1,000 / 10,000 = 0.10; per acquisition 1,000 / 100 = 10
    assert kpis["cost"] == {"value": "1000.00", "currency": "EUR"}
    assert (kpis["sent"], kpis["delivered"], kpis["impressions"]) == (20_000, 18_000, 10_000)
    assert Decimal(kpis["cost_per_impression"]) == Decimal("0.10")
    assert (kpis["acquisitions"], Decimal(kpis["cost_per_acquisition"])) == (100, Decimal(10))
    assert (kpis["engaged_contacts"], kpis["reached_contacts"]) == (10_000, 18_000)
    assert kpis["engagement_rate"] == 10_000 / 18_000
    # 100 orders of 25 EUR by 100 customers; 10 of them had spent 40 EUR before
    assert kpis["revenue"] == [
        {
            "currency": "EUR",
            "revenue": "2500.00",
            "orders": 100,
            "customers": 100,
            "average_order_value": "25.00",
            "transaction_frequency": 1.0,
            "customer_lifetime_value": "29.00",
        }
    ]
    # 100 conversions from 2,000 interactions: 5 %
    assert (attribution["conversions"], attribution["attributed"]) == (100, 100)
    assert attribution["interactions"] == 2_000
    assert attribution["conversion_rate"] == 0.05
    (credit,) = attribution["credits"]
    assert credit["key"] == ["broadcast", str(broadcast.pk), "0"]
    assert credit["name"] == "Spring sale / 0"
    assert Decimal(credit["conversions"]) == 100
    assert credit["revenue"] == [{"value": "2500.00", "currency": "EUR"}]
    assert (credit["interactions"], credit["conversion_rate"]) == (2_000, 0.05)


def test_kpis_without_a_cost_have_no_cost_figures(
    worked_example: Broadcast, api: APIClient
) -> None:
    # a period in which nothing was spent (the cost was entered on day 0)
    kpis = api.get(
        f"/api/v1/analytics/kpis/?broadcast={worked_example.pk}&from=2026-02-03&to=2026-02-05"
    ).json()
    assert kpis["cost"] is None
    assert kpis["cost_per_impression"] is None and kpis["cost_per_acquisition"] is None
    assert kpis["impressions"] == 0
    assert kpis["acquisitions"] == 100  # the purchases fall on day 2


@pytest.fixture
def two_touches(
    workspace: Workspace, django_capture_on_commit_callbacks: Callable[..., Any]
) -> tuple[Broadcast, Broadcast]:
    """One buyer clicked broadcast A on day 0 and B on day 3 and bought (80 EUR) on day 4."""
    funnel_create(workspace=workspace, name="Shop", preset="aida", goal_event="purchase")
    first, second = make_broadcast(workspace, "A"), make_broadcast(workspace, "B")
    buyer = Contact.objects.create(
        workspace=workspace, email="buyer@example.org", status=ContactStatus.SUBSCRIBED
    )
    for broadcast, day in ((first, 0), (second, 3)):
        message = Message.objects.create(
            workspace=workspace,
            contact=buyer,
            broadcast=broadcast,
            status=MessageStatus.SENT,
            sent_at=DAY0 + dt.timedelta(days=day),
        )
        milestones_set("clicked", {message.pk: DAY0 + dt.timedelta(days=day, hours=1)})
    bought = DAY0 + dt.timedelta(days=4)
    with time_machine.travel(bought, tick=False):
        purchases(workspace, django_capture_on_commit_callbacks, [(buyer, "80.00", bought)])
    return first, second


@pytest.mark.parametrize(
    ("query", "credited"),
    [
        ("", {"B": ("1.0000", "80.00")}),
        ("&model=first_touch", {"A": ("1.0000", "80.00")}),
        ("&model=linear", {"A": ("0.5000", "40.00"), "B": ("0.5000", "40.00")}),
        # A's click lies outside a two-day window
        ("&model=first_touch&window_days=2", {"B": ("1.0000", "80.00")}),
        ("&model=linear&window_days=2", {"B": ("1.0000", "80.00")}),
    ],
)
def test_attribution_models(
    two_touches: tuple[Broadcast, Broadcast],
    api: APIClient,
    query: str,
    credited: dict[str, tuple[str, str]],
) -> None:
    # when (the live rollups: the receivers marked the keys, the report folds them in)
    body = api.get(f"/api/v1/analytics/attribution/?{PERIOD}&dimension=step{query}").json()

    # then
    names = {str(broadcast.pk): broadcast.name for broadcast in two_touches}
    assert {
        names[credit["key"][1]]: (credit["conversions"], credit["revenue"][0]["value"])
        for credit in body["credits"]
    } == credited
    assert (body["conversions"], body["attributed"], body["interactions"]) == (1, 1, 2)


def test_attribution_refuses_unknown_parameters(history: History, api: APIClient) -> None:
    for query, field in (
        ("model=magic", "model"),
        ("dimension=colour", "dimension"),
        ("window_days=0", "window_days"),
        ("window_days=x", "window_days"),
        ("funnel=not-an-id", "funnel"),
    ):
        response = api.get(f"/api/v1/analytics/attribution/?{query}")
        assert response.status_code == 400, query
        assert list(response.json()) == [field]


def test_attribution_and_kpis_of_the_history(history: History, api: APIClient) -> None:
    # ada bought a day after clicking the welcome mail; cy bought without a click
    period = "from=2025-01-06&to=2025-01-08"
    body = api.get(f"/api/v1/analytics/attribution/?{period}&dimension=stage").json()
    assert (body["conversions"], body["attributed"], body["unattributed"]) == (2, 1, 1)
    (credit,) = body["credits"]
    assert credit["key"] == ["stage", str(history.stages["attention"].pk)]
    assert credit["name"] == "Attention"
    assert (credit["interactions"], credit["conversion_rate"]) == (1, 1.0)

    kpis = api.get(f"/api/v1/analytics/kpis/?sequence={history.sequence.pk}&{period}").json()
    # delivered to ada, bo, di, eve (welcome) and bo, di (offer): 4 people; ada, bo engaged
    assert (kpis["engaged_contacts"], kpis["reached_contacts"]) == (2, 4)
    assert (kpis["impressions"], kpis["acquisitions"], kpis["cost"]) == (2, 1, None)
    (revenue,) = kpis["revenue"]
    assert (revenue["revenue"], revenue["orders"], revenue["average_order_value"]) == (
        "150.00",
        2,
        "75.00",
    )


def test_campaign_costs_api(
    history: History,
    other_workspace: Workspace,
    api: APIClient,
    api_client_for: Callable[..., APIClient],
) -> None:
    sequence = str(history.sequence.pk)
    created = api.post(
        "/api/v1/campaign-costs/",
        {"sequence": sequence, "amount": "250.00", "currency": "eur", "spent_on": "2025-01-06"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    cost = created.json()
    assert {key: cost[key] for key in ("sequence", "broadcast", "amount", "currency")} == {
        "sequence": sequence,
        "broadcast": None,
        "amount": "250.00",
        "currency": "EUR",
    }
    kpis = api.get(f"/api/v1/analytics/kpis/?sequence={sequence}&from=2025-01-06&to=2025-01-08")
    # 250 EUR over 2 unique openers and 1 acquisition
    assert Decimal(kpis.json()["cost_per_impression"]) == Decimal("125")
    assert Decimal(kpis.json()["cost_per_acquisition"]) == Decimal("250")

    patched = api.patch(f"/api/v1/campaign-costs/{cost['id']}/", {"amount": "300"}, format="json")
    assert patched.json()["amount"] == "300.00"
    assert api.get(f"/api/v1/campaign-costs/?sequence={sequence}").json()["count"] == 1

    valid = {"sequence": sequence, "amount": "1", "currency": "EUR", "spent_on": "2025-01-06"}
    for payload, field in (
        ({**valid, "sequence": None}, "sequence"),
        ({**valid, "amount": "-1"}, "amount"),
        ({**valid, "currency": "E1"}, "currency"),
    ):
        refused = api.post("/api/v1/campaign-costs/", payload, format="json")
        assert refused.status_code == 400 and field in refused.json(), payload

    theirs = api_client_for(other_workspace)
    assert theirs.get(f"/api/v1/campaign-costs/{cost['id']}/").status_code == 404
    assert theirs.delete(f"/api/v1/campaign-costs/{cost['id']}/").status_code == 404
    stolen = theirs.post(
        "/api/v1/campaign-costs/",
        {"sequence": sequence, "amount": "1", "currency": "EUR", "spent_on": "2025-01-06"},
        format="json",
    )
    assert stolen.status_code == 400 and "sequence" in stolen.json()
    reader = api_client_for(history.workspace, access="read")
    assert reader.get("/api/v1/campaign-costs/").status_code == 200
    assert reader.delete(f"/api/v1/campaign-costs/{cost['id']}/").status_code == 403
    assert api.delete(f"/api/v1/campaign-costs/{cost['id']}/").status_code == 204
    assert CampaignCost.objects.count() == 0
