"""The Shopify adapter: orders/create webhooks become purchase events.

Shopify signs each webhook with the shop's webhook signing secret: X-Shopify-Hmac-Sha256 is the
base64 of HMAC-SHA256 over the raw request body. It retries deliveries that get no 2xx answer, so
the event's external_id ("shopify:order:<id>") makes a repeated order a duplicate.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from contacts.validators import normalize_email
from core.exceptions import ApplicationError
from core.models import Workspace
from funnel.models import ShopifyIntegration
from funnel.services import EventInput


class ShopifyPayloadError(ValueError):
    """The order cannot be turned into an event (no usable email address, bad fields)."""


def shopify_verify(*, secret: str, body: bytes, header: str) -> bool:
    """Whether `header` (X-Shopify-Hmac-Sha256) is the base64 HMAC-SHA256 of the raw body."""
    if not secret or not header:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    try:
        given = header.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected, given)


def _order_email(payload: dict[str, Any]) -> str:
    customer = payload.get("customer")
    candidates = [
        payload.get("email"),
        payload.get("contact_email"),
        customer.get("email") if isinstance(customer, dict) else None,
    ]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            try:
                return normalize_email(candidate)
            except ValidationError as exc:
                raise ShopifyPayloadError(exc.messages[0]) from exc
    raise ShopifyPayloadError(_("The order has no email address."))


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ShopifyPayloadError(_("total_price is not a number.")) from exc
    if not amount.is_finite():
        raise ShopifyPayloadError(_("total_price is not a number."))
    return amount.quantize(Decimal("0.01"))


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ShopifyPayloadError(_("created_at is not an ISO 8601 time.")) from exc
    if moment.tzinfo is None:
        raise ShopifyPayloadError(_("created_at has no UTC offset."))
    return moment


def shopify_order_to_event(payload: Any, *, event_name: str = "purchase") -> EventInput:
    """The event for one orders/create payload. Raises ShopifyPayloadError when it has no
    usable email address or malformed fields."""
    if not isinstance(payload, dict) or payload.get("id") in (None, ""):
        raise ShopifyPayloadError(_("This is not a Shopify order."))
    email = _order_email(payload)
    value = _decimal(payload.get("total_price"))
    currency = payload.get("currency") or payload.get("presentment_currency") or ""
    if not isinstance(currency, str) or (currency and len(currency) != 3):
        raise ShopifyPayloadError(_("currency is not an ISO 4217 code."))
    if value is not None and not currency:
        raise ShopifyPayloadError(_("The order total has no currency."))
    line_items = payload.get("line_items")
    return EventInput(
        name=event_name,
        email=email,
        properties={
            "order_id": payload["id"],
            "order_number": payload.get("order_number"),
            "name": payload.get("name"),
            "line_items_count": len(line_items) if isinstance(line_items, list) else 0,
            "financial_status": payload.get("financial_status"),
        },
        value=value,
        currency=currency.upper(),
        occurred_at=_datetime(payload.get("created_at")),
        external_id=f"shopify:order:{payload['id']}",
        source="shopify",
        channel="shop",
    )


@transaction.atomic
def shopify_integration_create(
    *, workspace: Workspace, name: str, secret: str, event_name: str = "purchase"
) -> ShopifyIntegration:
    """Connect a shop: its name and the webhook signing secret from Shopify's admin."""
    name, secret, event_name = name.strip(), secret.strip(), event_name.strip()
    if not name:
        raise ApplicationError(_("Give the shop a name."), field="name")
    if len(secret) < 16:
        raise ApplicationError(
            _("Paste the webhook signing secret shown in Shopify's notification settings."),
            field="secret",
        )
    if not event_name:
        raise ApplicationError(_("Name the event, e.g. purchase."), field="event_name")
    return ShopifyIntegration.objects.create(
        workspace=workspace, name=name[:150], secret=secret[:200], event_name=event_name[:100]
    )


@transaction.atomic
def shopify_integration_delete(*, integration: ShopifyIntegration) -> None:
    """Disconnect the shop; its later webhooks get 401. Stored events stay."""
    integration.delete()
