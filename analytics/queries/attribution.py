"""Attribution: which mails, sequence steps and funnel stages earned the conversions.

Every goal conversion in the period (one per goal event, even when two funnels share the
goal) looks back `window_days` (default 5) for the mails its contact clicked as a person
(Message.clicked_at: the first human click of each mail). Models:
- last_click (default): all credit to the mail clicked last before the conversion;
- first_touch: all credit to the mail clicked first within the window;
- linear: the credit split evenly over every mail clicked within the window.
A conversion without a click in the window is unattributed. Credit carries the conversion's
value (revenue per currency). The interactions of a source are its mails' unique human
clickers in the period (from the rollups), so conversion_rate = credited conversions /
interactions (the seed: 100 conversions from 2,000 interactions = 5 %).

Attribution is per conversion, so it reads the period's conversions and their contacts'
clicked mails (the contact-time index of messages), not the daily rollups.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Sum
from django.utils.translation import gettext as _

from analytics.models import MessageDaily
from analytics.queries.base import Money, Period, ratio
from analytics.rollups import CONVERSION_WINDOW, rollups_refresh_pending
from campaigns.models import Broadcast, Message, Sequence
from core.exceptions import ApplicationError
from core.models import Workspace
from funnel.models import Conversion, Funnel, Stage

MODELS = ("last_click", "first_touch", "linear")
DIMENSIONS = ("mail", "step", "stage")
MAX_WINDOW_DAYS = 90


@dataclass
class Credit:
    """Conversions (fractional under linear) and revenue credited to one source."""

    key: tuple[str, ...]
    label: str
    conversions: Decimal = Decimal(0)
    revenue: dict[str, Decimal] = field(default_factory=dict)
    interactions: int = 0

    @property
    def conversion_rate(self) -> float:
        return ratio(self.conversions, self.interactions)

    @property
    def revenue_money(self) -> list[Money]:
        return [
            Money(value=value.quantize(Decimal("0.01")), currency=currency)
            for currency, value in sorted(self.revenue.items())
        ]


@dataclass(frozen=True)
class AttributionReport:
    period: Period
    model: str
    window_days: int
    dimension: str
    conversions: int
    attributed: int
    interactions: int
    credits: list[Credit]

    @property
    def unattributed(self) -> int:
        return self.conversions - self.attributed

    @property
    def conversion_rate(self) -> float:
        """Attributed conversions per interaction (unique human clicker) in the period."""
        return ratio(self.attributed, self.interactions)


class AttributionQuery:
    """Credit the period's conversions (of one funnel, or every funnel of the workspace) to
    mails ("mail": sequence step and variant or broadcast and variant), steps ("step":
    sequence step or broadcast) or stages ("stage": the mail's funnel stage). Optionally only
    the credit of one sequence or broadcast. ApplicationError naming the parameter for an
    unknown model, dimension or a window outside 1 to 90 days."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        period: Period,
        model: str = "last_click",
        window_days: int = CONVERSION_WINDOW.days,
        dimension: str = "mail",
        funnel_id: uuid.UUID | str | None = None,
        sequence_id: uuid.UUID | str | None = None,
        broadcast_id: uuid.UUID | str | None = None,
    ) -> None:
        if model not in MODELS:
            raise ApplicationError(_("Use last_click, first_touch or linear."), field="model")
        if dimension not in DIMENSIONS:
            raise ApplicationError(_("Use mail, step or stage."), field="dimension")
        if not 1 <= window_days <= MAX_WINDOW_DAYS:
            raise ApplicationError(
                _("Choose 1 to %(days)d days.") % {"days": MAX_WINDOW_DAYS}, field="window_days"
            )
        self.workspace = workspace
        self.period = period
        self.model = model
        self.window = dt.timedelta(days=window_days)
        self.dimension = dimension
        self.funnel = Funnel.objects.get(workspace=workspace, pk=funnel_id) if funnel_id else None
        self.sequence = (
            Sequence.objects.get(workspace=workspace, pk=sequence_id) if sequence_id else None
        )
        self.broadcast = (
            Broadcast.objects.get(workspace=workspace, pk=broadcast_id) if broadcast_id else None
        )

    def _conversions(self) -> list[dict[str, Any]]:
        conversions = Conversion.objects.filter(
            funnel__workspace=self.workspace,
            occurred_at__gte=self.period.starts_at,
            occurred_at__lt=self.period.ends_at,
        )
        if self.funnel is not None:
            conversions = conversions.filter(funnel=self.funnel)
        # One per goal event: two funnels with the same goal record the purchase twice.
        unique: dict[uuid.UUID, dict[str, Any]] = {}
        for row in conversions.order_by("occurred_at", "event_id").values(
            "event_id", "contact_id", "occurred_at", "value", "currency"
        ):
            unique.setdefault(row["event_id"], dict(row))
        return list(unique.values())

    def _touches(self, conversions: list[dict[str, Any]]) -> dict[uuid.UUID, list[dict[str, Any]]]:
        if not conversions:
            return {}
        earliest = min(row["occurred_at"] for row in conversions) - self.window
        latest = max(row["occurred_at"] for row in conversions)
        touches: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
        rows = (
            Message.objects.filter(
                workspace=self.workspace,
                contact_id__in={row["contact_id"] for row in conversions},
                clicked_at__gte=earliest,
                clicked_at__lte=latest,
            )
            .order_by("clicked_at", "pk")
            .values(
                "contact_id",
                "clicked_at",
                "enrollment__sequence_id",
                "step_key",
                "broadcast_id",
                "variant",
                "stage_id",
            )
        )
        for row in rows:
            touches[row["contact_id"]].append(dict(row))
        return touches

    def _key(self, touch: dict[str, Any]) -> tuple[str, ...]:
        if self.dimension == "stage":
            return ("stage", str(touch["stage_id"] or ""))
        if touch["broadcast_id"]:
            source = ("broadcast", str(touch["broadcast_id"]))
            step: tuple[str, ...] = ()
        else:
            source = ("sequence", str(touch["enrollment__sequence_id"]))
            step = (touch["step_key"],)
        if self.dimension == "step":
            return (*source, *step)
        return (*source, *step, str(touch["variant"]))

    def _in_scope(self, touch: dict[str, Any]) -> bool:
        if self.sequence is not None:
            return touch["enrollment__sequence_id"] == self.sequence.pk
        if self.broadcast is not None:
            return touch["broadcast_id"] == self.broadcast.pk
        return True

    def run(self) -> AttributionReport:
        rollups_refresh_pending(workspace_id=str(self.workspace.pk))
        conversions = self._conversions()
        touches = self._touches(conversions)
        credits: dict[tuple[str, ...], Credit] = {}
        attributed = 0
        for conversion in conversions:
            at = conversion["occurred_at"]
            window = [
                touch
                for touch in touches.get(conversion["contact_id"], [])
                if at - self.window <= touch["clicked_at"] <= at
            ]
            if not window:
                continue
            if self.model == "last_click":
                shares = [(window[-1], Decimal(1))]
            elif self.model == "first_touch":
                shares = [(window[0], Decimal(1))]
            else:
                shares = [(touch, Decimal(1) / len(window)) for touch in window]
            shares = [(touch, share) for touch, share in shares if self._in_scope(touch)]
            if not shares:
                continue
            attributed += 1
            for touch, share in shares:
                key = self._key(touch)
                credit = credits.setdefault(key, Credit(key=key, label=""))
                credit.conversions += share
                if conversion["value"] is not None:
                    currency = conversion["currency"]
                    credit.revenue[currency] = (
                        credit.revenue.get(currency, Decimal(0)) + conversion["value"] * share
                    )
        interactions = self._interactions(credits)
        return AttributionReport(
            period=self.period,
            model=self.model,
            window_days=self.window.days,
            dimension=self.dimension,
            conversions=len(conversions),
            attributed=attributed,
            interactions=interactions,
            credits=sorted(credits.values(), key=lambda c: (-c.conversions, c.key)),
        )

    def _interactions(self, credits: dict[tuple[str, ...], Credit]) -> int:
        """Unique human clickers per credited source in the period (rollups), filled into the
        credits; returns the total of the scope."""
        rollups = MessageDaily.objects.filter(
            workspace=self.workspace, day__gte=self.period.start, day__lte=self.period.end
        )
        if self.sequence is not None:
            rollups = rollups.filter(sequence=self.sequence)
        if self.broadcast is not None:
            rollups = rollups.filter(broadcast=self.broadcast)
        if self.funnel is not None:
            rollups = rollups.filter(
                stage_id__in=Stage.objects.filter(funnel=self.funnel).values("pk")
            )
        total = 0
        for row in (
            rollups.order_by()
            .values("sequence_id", "step_key", "broadcast_id", "variant", "stage_id")
            .annotate(clickers=Sum("clicked"))
        ):
            touch = {**row, "enrollment__sequence_id": row["sequence_id"]}
            clickers = int(row["clickers"] or 0)
            total += clickers
            credit = credits.get(self._key(touch))
            if credit is not None:
                credit.interactions += clickers
        labels = _labels(self.workspace, credits)
        for key, credit in credits.items():
            credit.label = labels.get(key, "")
        return total


def _labels(
    workspace: Workspace, credits: dict[tuple[str, ...], Credit]
) -> dict[tuple[str, ...], str]:
    """A readable name per credited source: the sequence or broadcast name, step, variant."""
    ids = {key[1] for key in credits if key[1]}
    names = {
        str(pk): name
        for pk, name in [
            *Sequence.objects.filter(workspace=workspace, pk__in=ids).values_list("pk", "name"),
            *Broadcast.objects.filter(workspace=workspace, pk__in=ids).values_list("pk", "name"),
            *Stage.objects.filter(funnel__workspace=workspace, pk__in=ids).values_list(
                "pk", "name"
            ),
        ]
    }
    return {key: " / ".join([names.get(key[1], key[1]), *key[2:]]) for key in credits}
