"""The Shopify adapter: orders/create webhooks, verified by X-Shopify-Hmac-Sha256, become
purchase events; the integration pages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contacts.models import Contact, ContactStatus
from core.models import Role
from funnel.models import Event, ShopifyIntegration
from funnel.shopify import (
    ShopifyPayloadError,
    shopify_integration_create,
    shopify_order_to_event,
    shopify_verify,
)
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

SHOP_SECRET = "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"
ORDER = json.loads((Path(__file__).parent / "fixtures" / "shopify_order.json").read_text())


def order_body(**changes: Any) -> bytes:
    return json.dumps({**ORDER, **changes}).encode()


def shopify_signature(body: bytes, secret: str = SHOP_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@pytest.fixture
def integration(workspace) -> ShopifyIntegration:
    return shopify_integration_create(workspace=workspace, name="Acme Outdoor", secret=SHOP_SECRET)


def orders_url(integration_id: Any) -> str:
    return f"/integrations/shopify/{integration_id}/orders-create/"


def post_order(client, integration_id: Any, body: bytes, signature: str | None) -> Any:
    headers = {"HTTP_X_SHOPIFY_TOPIC": "orders/create"}
    if signature is not None:
        headers["HTTP_X_SHOPIFY_HMAC_SHA256"] = signature
    return client.post(
        orders_url(integration_id), data=body, content_type="application/json", **headers
    )


def test_a_signed_order_becomes_one_purchase_event(client, workspace, integration) -> None:
    # given
    body = order_body()

    # when
    response = post_order(client, integration.pk, body, shopify_signature(body))

    # then
    assert (response.status_code, response.json()) == (200, {"created": 1, "duplicates": 0})
    event = Event.objects.get()
    contact = Contact.objects.get()
    assert (contact.workspace_id, contact.email, contact.status) == (
        workspace.pk,
        "erika.musterfrau@example.org",
        ContactStatus.NOT_SUBSCRIBED,
    )
    assert event.contact_id == contact.pk
    assert (event.workspace_id, event.name, event.value, event.currency) == (
        workspace.pk,
        "purchase",
        Decimal("129.70"),
        "EUR",
    )
    assert event.external_id == "shopify:order:5912345678901"
    assert event.occurred_at == datetime(2024, 5, 14, 14, 42, 7, tzinfo=UTC)
    assert (event.source, event.channel) == ("shopify", "shop")
    assert event.properties == {
        "order_id": 5912345678901,
        "order_number": 1042,
        "name": "#1042",
        "line_items_count": 2,
        "financial_status": "paid",
    }


def test_the_same_order_again_is_a_duplicate(client, integration) -> None:
    body = order_body()
    post_order(client, integration.pk, body, shopify_signature(body))

    again = post_order(client, integration.pk, body, shopify_signature(body))

    assert (again.status_code, again.json()) == (200, {"created": 0, "duplicates": 1})
    assert Event.objects.count() == 1
    assert Contact.objects.count() == 1


def test_an_existing_subscriber_keeps_their_status(client, workspace, integration) -> None:
    contact = ContactFactory(
        workspace=workspace,
        email="erika.musterfrau@example.org",
        status=ContactStatus.SUBSCRIBED,
    )
    body = order_body()

    response = post_order(client, integration.pk, body, shopify_signature(body))

    assert response.status_code == 200
    contact.refresh_from_db()
    assert contact.status == ContactStatus.SUBSCRIBED
    assert Event.objects.get().contact_id == contact.pk
    assert Contact.objects.count() == 1


@pytest.mark.parametrize(
    "signature",
    [
        shopify_signature(order_body(), secret="shpss_someone_elses_secret_000000"),
        shopify_signature(order_body(total_price="0.01")),
        "",
        "not base64 at all",
        "Zm9v\u00e9",
    ],
    ids=["other-secret", "other-body", "empty", "garbage", "non-ascii"],
)
def test_a_wrong_signature_is_401_and_stores_nothing(client, integration, signature) -> None:
    response = post_order(client, integration.pk, order_body(), signature)

    assert (response.status_code, response.json()) == (401, {"error": "invalid signature"})
    assert Event.objects.count() == 0
    assert Contact.objects.count() == 0


def test_a_missing_signature_header_is_401(client, integration) -> None:
    response = post_order(client, integration.pk, order_body(), signature=None)

    assert response.status_code == 401
    assert Event.objects.count() == 0
    assert Contact.objects.count() == 0


def test_an_unknown_integration_is_401_like_a_bad_signature(client, integration) -> None:
    body = order_body()

    response = post_order(client, uuid.uuid4(), body, shopify_signature(body))

    assert (response.status_code, response.json()) == (401, {"error": "invalid signature"})
    assert Event.objects.count() == 0


def test_only_post_is_accepted(client, integration) -> None:
    assert client.get(orders_url(integration.pk)).status_code == 405


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "the body is not JSON"),
        (
            order_body(email=None, contact_email=None, customer=None),
            "The order has no email address.",
        ),
        (json.dumps([1, 2]).encode(), "This is not a Shopify order."),
    ],
    ids=["not-json", "no-email", "not-an-order"],
)
def test_a_signed_but_unusable_body_is_400(client, integration, body, error) -> None:
    response = post_order(client, integration.pk, body, shopify_signature(body))

    assert (response.status_code, response.json()) == (400, {"error": error})
    assert Event.objects.count() == 0
    assert Contact.objects.count() == 0


def test_the_customer_email_is_used_when_the_order_has_none() -> None:
    payload = {**ORDER, "email": "", "contact_email": None}

    event = shopify_order_to_event(payload, event_name="order")

    assert (event.name, event.email, event.value, event.currency) == (
        "order",
        "erika.musterfrau@example.org",
        Decimal("129.70"),
        "EUR",
    )


def test_a_malformed_total_is_refused() -> None:
    with pytest.raises(ShopifyPayloadError) as refused:
        shopify_order_to_event({**ORDER, "total_price": "12,99"})

    assert str(refused.value) == "total_price is not a number."


def test_verify_accepts_exactly_the_signature_of_the_raw_body() -> None:
    body = order_body()
    signature = shopify_signature(body)

    assert shopify_verify(secret=SHOP_SECRET, body=body, header=signature) is True
    assert shopify_verify(secret=SHOP_SECRET, body=body + b" ", header=signature) is False
    assert shopify_verify(secret="", body=body, header=signature) is False


# --- pages


def test_admin_connects_a_shop_and_sees_the_url(client, workspace, owner, logged_in) -> None:
    client = logged_in(owner)

    created = client.post(
        "/funnels/integrations/new/",
        {"name": "Acme Outdoor", "secret": SHOP_SECRET, "event_name": "purchase"},
    )
    listing = client.get("/funnels/integrations/")

    integration = ShopifyIntegration.objects.get()
    assert (created.status_code, created["Location"]) == (302, "/funnels/integrations/")
    assert (integration.workspace_id, integration.secret) == (workspace.pk, SHOP_SECRET)
    html = listing.content.decode()
    assert f"http://testserver/integrations/shopify/{integration.pk}/orders-create/" in html
    assert SHOP_SECRET not in html


def test_admin_disconnects_a_shop(client, owner, logged_in, integration) -> None:
    client = logged_in(owner)

    confirm = client.get(f"/funnels/integrations/{integration.pk}/delete/")
    deleted = client.post(f"/funnels/integrations/{integration.pk}/delete/")

    assert confirm.status_code == 200
    assert (deleted.status_code, deleted["Location"]) == (302, "/funnels/integrations/")
    assert ShopifyIntegration.objects.count() == 0


def test_editor_cannot_connect_a_shop(workspace, member_of, logged_in) -> None:
    client = logged_in(member_of(workspace, Role.EDITOR))

    response = client.post(
        "/funnels/integrations/new/",
        {"name": "Acme Outdoor", "secret": SHOP_SECRET, "event_name": "purchase"},
    )

    assert response.status_code == 403
    assert ShopifyIntegration.objects.count() == 0


def test_another_workspaces_shop_is_404(other_workspace, owner, logged_in) -> None:
    foreign = shopify_integration_create(
        workspace=other_workspace, name="Other shop", secret=SHOP_SECRET
    )
    client = logged_in(owner)

    assert client.post(f"/funnels/integrations/{foreign.pk}/delete/").status_code == 404
    assert ShopifyIntegration.objects.count() == 1
