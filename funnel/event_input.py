"""Parsing of one event as the API receives it: a plain function rather than a DRF serializer
per item, because /events/batch/ parses a thousand at a time (bench/events.py)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from contacts.validators import normalize_email
from funnel.services import EventInput

NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
CURRENCY = re.compile(r"^[A-Za-z]{3}$")
MAX_VALUE = Decimal("999999999999.99")
# The words DRF uses, so that single and batch endpoints and other endpoints read alike.
REQUIRED = _lazy("This field is required.")
TEXT_LIMITS = {"external_id": 200, "source": 100, "channel": 50}


def parse_event(item: Any) -> tuple[EventInput | None, dict[str, list[str]]]:
    """(EventInput, {}) for a valid item, else (None, {field: [message]}) naming each field."""
    if not isinstance(item, dict):
        return None, {"non_field_errors": [_("Each event must be a JSON object.")]}
    errors: dict[str, list[str]] = {}

    def fail(field: str, message: str | Promise) -> None:
        errors.setdefault(field, []).append(str(message))

    contact_id: uuid.UUID | None = None
    email = ""
    contact = item.get("contact")
    if contact is None:
        fail("contact", REQUIRED)
    elif not isinstance(contact, str) or not contact.strip():
        fail("contact", _("Give the contact's id or email address."))
    else:
        contact = contact.strip()
        try:
            contact_id = uuid.UUID(contact)
        except ValueError:
            if "@" not in contact:
                fail("contact", _("Give the contact's id or email address."))
            else:
                try:
                    email = normalize_email(contact)
                except ValidationError as exc:
                    fail("contact", exc.messages[0])

    name = item.get("name")
    if name is None:
        fail("name", REQUIRED)
    elif not isinstance(name, str) or not NAME.match(name):
        fail("name", _("Use 1 to 100 letters, digits and _ . : -"))

    properties = item.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        fail("properties", _("Properties must be a JSON object."))

    value: Decimal | None = None
    raw_value = item.get("value")
    if raw_value is not None and raw_value != "":
        try:
            value = Decimal(str(raw_value))
            exponent = value.as_tuple().exponent
            if not value.is_finite() or abs(value) > MAX_VALUE:
                raise InvalidOperation
            if isinstance(exponent, int) and exponent < -2:
                raise InvalidOperation  # more than two decimal places
            value = value.quantize(Decimal("0.01"))
        except (InvalidOperation, ValueError):
            fail("value", _('Give the value as a decimal number, e.g. "49.90".'))

    currency = item.get("currency") or ""
    if not isinstance(currency, str) or (currency and not CURRENCY.match(currency)):
        fail("currency", _("Use a three-letter ISO 4217 code, e.g. EUR."))
        currency = ""
    if value is not None and not currency and "currency" not in errors:
        fail("currency", _("Give the currency of the value."))

    occurred_at = None
    raw_time = item.get("occurred_at")
    if raw_time not in (None, ""):
        try:
            parsed = parse_datetime(raw_time) if isinstance(raw_time, str) else None
        except ValueError:  # well formed, but no such date (February 30th)
            parsed = None
        if parsed is None:
            fail("occurred_at", _("Use an ISO 8601 time, e.g. 2025-03-01T12:00:00+01:00."))
        else:
            occurred_at = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    texts: dict[str, str] = {}
    for field, limit in TEXT_LIMITS.items():
        raw = item.get(field)
        if raw is None:
            texts[field] = ""
        elif not isinstance(raw, str | int) or isinstance(raw, bool) or len(str(raw)) > limit:
            fail(field, _("Use text of at most %(count)d characters.") % {"count": limit})
        else:
            texts[field] = str(raw).strip()

    if errors:
        return None, errors
    assert isinstance(name, str) and isinstance(properties, dict)
    return (
        EventInput(
            name=name,
            contact_id=contact_id,
            email=email,
            properties=properties,
            value=value,
            currency=currency.upper(),
            occurred_at=occurred_at,
            external_id=texts["external_id"] or None,
            source=texts["source"],
            channel=texts["channel"],
        ),
        {},
    )
