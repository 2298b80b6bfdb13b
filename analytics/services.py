"""Writes of the analytics app: the costs entered per sequence or broadcast."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from analytics.models import CampaignCost
from campaigns.models import Broadcast, Sequence
from core.exceptions import ApplicationError
from core.models import Workspace

CURRENCY = re.compile(r"^[A-Z]{3}$")


def _validated(
    *,
    workspace: Workspace,
    sequence: Sequence | None,
    broadcast: Broadcast | None,
    amount: Decimal,
    currency: str,
) -> str:
    if (sequence is None) == (broadcast is None):
        raise ApplicationError(_("Choose either a sequence or a broadcast."), field="sequence")
    for campaign, field in ((sequence, "sequence"), (broadcast, "broadcast")):
        if campaign is not None and campaign.workspace_id != workspace.pk:
            raise ApplicationError(_("No such %(field)s.") % {"field": field}, field=field)
    if amount < 0:
        raise ApplicationError(_("A cost cannot be negative."), field="amount")
    currency = currency.strip().upper()
    if not CURRENCY.match(currency):
        raise ApplicationError(_("Use a three-letter ISO 4217 code, e.g. EUR."), field="currency")
    return currency


@transaction.atomic
def campaign_cost_create(
    *,
    workspace: Workspace,
    amount: Decimal,
    currency: str,
    spent_on: dt.date,
    sequence: Sequence | None = None,
    broadcast: Broadcast | None = None,
    note: str = "",
) -> CampaignCost:
    """Record money spent on a sequence or a broadcast on a day. Not safe to run twice (two
    entries); the API guards it with an idempotency key."""
    currency = _validated(
        workspace=workspace,
        sequence=sequence,
        broadcast=broadcast,
        amount=amount,
        currency=currency,
    )
    return CampaignCost.objects.create(
        workspace=workspace,
        sequence=sequence,
        broadcast=broadcast,
        amount=amount,
        currency=currency,
        spent_on=spent_on,
        note=note.strip()[:200],
    )


@transaction.atomic
def campaign_cost_update(*, cost: CampaignCost, **changes: Any) -> CampaignCost:
    """Change amount, currency, day or note of a cost entry (the campaign stays). Safe to run
    twice."""
    cost = CampaignCost.objects.select_for_update().get(pk=cost.pk)
    for name in ("amount", "currency", "spent_on", "note"):
        if name in changes:
            setattr(cost, name, changes[name])
    cost.currency = _validated(
        workspace=cost.workspace,
        sequence=cost.sequence,
        broadcast=cost.broadcast,
        amount=cost.amount,
        currency=cost.currency,
    )
    cost.note = cost.note.strip()[:200]
    cost.save()
    return cost


def campaign_cost_delete(*, cost: CampaignCost) -> None:
    """Delete a cost entry. Safe to run twice."""
    CampaignCost.objects.filter(pk=cost.pk).delete()
