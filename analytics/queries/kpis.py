"""The KPIs of the seeds (docs/analytics.md, "KPIs"), for one sequence or broadcast or the
whole workspace, over a period:

- cost: the CampaignCost entries spent in the period (of the campaign, or all);
- impressions: unique human openers of the mails sent in the period (rollups);
- cost per impression = cost / impressions (seed: 1,000 / 10,000 opens = 0.10);
- acquisitions: conversions credited to the campaign by last human click within 5 days
  (analytics.queries.attribution); cost per acquisition = cost / acquisitions;
- engagement rate = contacts who opened or clicked a mail sent in the period / contacts whose
  mail was delivered (people, not mails: one engaged reader of three mails counts once);
- from the events with a value named `event` (default "purchase"), per currency: revenue,
  orders, customers (distinct contacts), average order value = revenue / orders, transaction
  frequency = orders / customers, customer lifetime value = all revenue of those customers
  up to the period's end / customers.

Cost KPIs need one currency: with costs in several, they are None (never mixed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.utils.translation import gettext as _

from analytics.models import CampaignCost, MessageDaily
from analytics.queries.attribution import AttributionQuery
from analytics.queries.base import MailFigures, Money, Period, mail_total, ratio
from analytics.rollups import rollups_refresh_pending
from campaigns.models import Broadcast, Message, Sequence
from core.exceptions import ApplicationError
from core.models import Workspace
from funnel.models import Event

CENT = Decimal("0.01")


@dataclass(frozen=True)
class RevenueKpis:
    """Revenue KPIs of the valued events of one currency."""

    currency: str
    revenue: Decimal
    orders: int
    customers: int
    lifetime_revenue: Decimal

    @property
    def average_order_value(self) -> Decimal | None:
        return (self.revenue / self.orders).quantize(CENT) if self.orders else None

    @property
    def transaction_frequency(self) -> float:
        return ratio(self.orders, self.customers)

    @property
    def customer_lifetime_value(self) -> Decimal | None:
        return (self.lifetime_revenue / self.customers).quantize(CENT) if self.customers else None


@dataclass(frozen=True)
class Kpis:
    period: Period
    scope: str
    cost: Money | None
    mail: MailFigures
    acquisitions: int
    engaged_contacts: int
    reached_contacts: int
    revenue: list[RevenueKpis]

    @property
    def impressions(self) -> int:
        return self.mail.opened

    @property
    def cost_per_impression(self) -> Decimal | None:
        if self.cost is None or not self.impressions:
            return None
        return (self.cost.value / self.impressions).quantize(Decimal("0.0001"))

    @property
    def cost_per_acquisition(self) -> Decimal | None:
        if self.cost is None or not self.acquisitions:
            return None
        return (self.cost.value / self.acquisitions).quantize(Decimal("0.0001"))

    @property
    def engagement_rate(self) -> float:
        return ratio(self.engaged_contacts, self.reached_contacts)


class KpiQuery:
    """Build the KPIs of one of the workspace's sequences or broadcasts (DoesNotExist for
    another workspace's), or of the workspace when neither is given."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        period: Period,
        sequence_id: uuid.UUID | str | None = None,
        broadcast_id: uuid.UUID | str | None = None,
        event: str = "purchase",
    ) -> None:
        if sequence_id and broadcast_id:
            raise ApplicationError(_("Choose a sequence or a broadcast, not both."), field="scope")
        self.workspace = workspace
        self.period = period
        self.event = event.strip() or "purchase"
        self.sequence = (
            Sequence.objects.get(workspace=workspace, pk=sequence_id) if sequence_id else None
        )
        self.broadcast = (
            Broadcast.objects.get(workspace=workspace, pk=broadcast_id) if broadcast_id else None
        )

    def _campaign(self) -> dict[str, Any]:
        if self.sequence is not None:
            return {"sequence": self.sequence}
        if self.broadcast is not None:
            return {"broadcast": self.broadcast}
        return {}

    def run(self) -> Kpis:
        rollups_refresh_pending(workspace_id=str(self.workspace.pk))
        campaign = self._campaign()
        period = self.period
        costs = list(
            CampaignCost.objects.filter(
                workspace=self.workspace,
                spent_on__gte=period.start,
                spent_on__lte=period.end,
                **campaign,
            )
            .order_by()
            .values("currency")
            .annotate(amount=Sum("amount"))
            .values_list("currency", "amount")
        )
        cost = Money(value=costs[0][1], currency=costs[0][0]) if len(costs) == 1 else None
        mail = mail_total(
            MessageDaily.objects.filter(
                workspace=self.workspace, day__gte=period.start, day__lte=period.end, **campaign
            )
        )
        attribution = AttributionQuery(
            workspace=self.workspace,
            period=period,
            sequence_id=self.sequence.pk if self.sequence else None,
            broadcast_id=self.broadcast.pk if self.broadcast else None,
        ).run()
        engaged, reached = self._engagement()
        scope = (
            f"sequence:{self.sequence.pk}"
            if self.sequence
            else f"broadcast:{self.broadcast.pk}"
            if self.broadcast
            else "workspace"
        )
        return Kpis(
            period=period,
            scope=scope,
            cost=cost,
            mail=mail,
            acquisitions=attribution.attributed,
            engaged_contacts=engaged,
            reached_contacts=reached,
            revenue=self._revenue(),
        )

    def _engagement(self) -> tuple[int, int]:
        messages = Message.objects.filter(
            workspace=self.workspace,
            sent_at__gte=self.period.starts_at,
            sent_at__lt=self.period.ends_at,
            bounced_at__isnull=True,
        )
        if self.sequence is not None:
            messages = messages.filter(enrollment__sequence=self.sequence)
        elif self.broadcast is not None:
            messages = messages.filter(broadcast=self.broadcast)
        else:
            messages = messages.filter(Q(enrollment__isnull=False) | Q(broadcast__isnull=False))
        counts = messages.aggregate(
            reached=Count("contact_id", distinct=True),
            engaged=Count(
                "contact_id",
                distinct=True,
                filter=Q(opened_at__isnull=False) | Q(clicked_at__isnull=False),
            ),
        )
        return int(counts["engaged"]), int(counts["reached"])

    def _revenue(self) -> list[RevenueKpis]:
        valued = Event.objects.filter(
            workspace=self.workspace, name=self.event, value__isnull=False
        )
        in_period = valued.filter(
            occurred_at__gte=self.period.starts_at, occurred_at__lt=self.period.ends_at
        )
        rows = (
            in_period.order_by()
            .values("currency")
            .annotate(
                revenue=Sum("value"), orders=Count("pk"), customers=Count("contact", distinct=True)
            )
        )
        result = []
        for row in rows:
            customers = in_period.filter(currency=row["currency"]).values("contact_id")
            lifetime = valued.filter(
                currency=row["currency"],
                contact_id__in=customers,
                occurred_at__lt=self.period.ends_at,
            ).aggregate(total=Sum("value"))["total"]
            result.append(
                RevenueKpis(
                    currency=row["currency"],
                    revenue=row["revenue"],
                    orders=row["orders"],
                    customers=row["customers"],
                    lifetime_revenue=lifetime or Decimal(0),
                )
            )
        return sorted(result, key=lambda kpis: kpis.currency)
