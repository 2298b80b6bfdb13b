"""The funnel report (API.md: GET /funnels/{id}/report/): where the funnel narrows and why.

Per stage, over the stays that began in the period (cohort by entry day, so every rate of a
stage stays between 0 and 1): entered, advanced, converted, drop-off, the median time in the
stage; the contacts in it now; and the mail figures of the mails tagged with the stage (cohort
by send day). The goal: conversions and revenue in the period, over the contacts who were in
the funnel by its end. Everything but the median comes from the daily rollups; a median cannot
be summed over days, so it is read from the stays themselves (analytics' own table, indexed by
stage and day). Definitions: docs/analytics.md.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Sum

from analytics.models import ConversionDaily, MessageDaily, StageDaily, StageStay
from analytics.queries.base import MailFigures, Money, Period, mail_sums, ratio
from analytics.rollups import STAGE_COUNTS, rollups_refresh_pending
from core.models import Workspace
from funnel.models import Funnel, Stage


@dataclass(frozen=True)
class StageFigures:
    """One stage's figures for the period.

    entered: stays that began in the period (a contact who comes back counts again);
    advanced: of those, moved on to a later stage; converted: reached the goal from this stage
    during the stay; drop_off: neither (went back, left or still waiting);
    current: contacts in the stage now, whatever the period.
    """

    stage_id: uuid.UUID
    name: str
    key: str
    position: int
    entered: int
    entrants: int
    advanced: int
    went_back: int
    converted: int
    progressed: int
    current: int
    median_time_in_stage_seconds: int | None
    mail: MailFigures
    loses_most: bool = False

    @property
    def drop_off(self) -> int:
        return self.entered - self.progressed

    @property
    def drop_off_rate(self) -> float:
        return ratio(self.drop_off, self.entered)

    @property
    def conversion_rate(self) -> float:
        return ratio(self.converted, self.entered)

    @property
    def advance_rate(self) -> float:
        return ratio(self.advanced, self.entered)


@dataclass(frozen=True)
class GoalFigures:
    """The funnel's goal in the period: conversions (goal events) and their revenue per
    currency, over the contacts who were in the funnel by the period's end."""

    event: str
    conversions: int
    contacts: int
    revenue: list[Money]

    @property
    def conversion_rate(self) -> float:
        return ratio(self.conversions, self.contacts)

    @property
    def main_revenue(self) -> Money | None:
        """The revenue in the currency with the most money (ties: alphabetical), or None."""
        if not self.revenue:
            return None
        return sorted(self.revenue, key=lambda money: (-money.value, money.currency))[0]


@dataclass(frozen=True)
class FunnelReport:
    funnel_id: uuid.UUID
    name: str
    period: Period
    stages: list[StageFigures]
    goal: GoalFigures
    previous: FunnelReport | None = None

    @property
    def loses_most(self) -> StageFigures | None:
        """The stage that loses the most people (largest drop-off; ties: the earlier one)."""
        return next((stage for stage in self.stages if stage.loses_most), None)


class FunnelReportQuery:
    """Build the funnel report of one of the workspace's funnels.

    Funnel.DoesNotExist for another workspace's funnel (the API answers 404). With
    compare=True the report carries the same figures for the period right before.
    """

    def __init__(
        self,
        *,
        workspace: Workspace,
        funnel_id: uuid.UUID | str,
        period: Period,
        compare: bool = False,
    ) -> None:
        self.workspace = workspace
        self.funnel = Funnel.objects.get(workspace=workspace, pk=funnel_id)
        self.period = period
        self.compare = compare

    def run(self) -> FunnelReport:
        rollups_refresh_pending(workspace_id=str(self.workspace.pk))
        stages = list(Stage.objects.filter(funnel=self.funnel).order_by("position"))
        report = self._report(stages, self.period)
        if self.compare:
            previous = self._report(stages, self.period.previous())
            report = FunnelReport(**{**report.__dict__, "previous": previous})
        return report

    def _report(self, stages: list[Stage], period: Period) -> FunnelReport:
        in_period = {"day__gte": period.start, "day__lte": period.end}
        stage_rows = {
            row["stage_id"]: row
            for row in StageDaily.objects.filter(funnel=self.funnel, **in_period)
            .order_by()
            .values("stage_id")
            .annotate(open=Sum("still_in"), **{count: Sum(count) for count in STAGE_COUNTS})
        }
        current = dict(
            StageDaily.objects.filter(funnel=self.funnel)
            .order_by()
            .values("stage_id")
            .annotate(still_in=Sum("still_in"))
            .values_list("stage_id", "still_in")
        )
        mail = mail_sums(
            MessageDaily.objects.filter(
                workspace=self.workspace, stage_id__in=[stage.pk for stage in stages], **in_period
            ),
            "stage_id",
        )
        figures = []
        for stage in stages:
            row = stage_rows.get(stage.pk, {})
            counts = {count: int(row.get(count) or 0) for count in STAGE_COUNTS}
            completed = counts["entered"] - int(row.get("open") or 0)
            figures.append(
                StageFigures(
                    stage_id=stage.pk,
                    name=stage.name,
                    key=stage.key,
                    position=stage.position,
                    current=int(current.get(stage.pk) or 0),
                    median_time_in_stage_seconds=self._median(stage, period, completed),
                    mail=mail.get((stage.pk,), MailFigures()),
                    entered=counts["entered"],
                    entrants=counts["entrants"],
                    advanced=counts["advanced"],
                    went_back=counts["went_back"],
                    converted=counts["converted"],
                    progressed=counts["progressed"],
                )
            )
        return FunnelReport(
            funnel_id=self.funnel.pk,
            name=self.funnel.name,
            period=period,
            stages=_flag_loses_most(figures),
            goal=self._goal(period),
        )

    def _median(self, stage: Stage, period: Period, completed: int) -> int | None:
        """The median duration of the stays that began in the period and have ended (the lower
        middle value for an even count: always a duration that occurred)."""
        if completed <= 0:
            return None
        durations = (
            StageStay.objects.filter(
                stage=stage,
                day__gte=period.start,
                day__lte=period.end,
                duration_seconds__isnull=False,
            )
            .order_by("duration_seconds")
            .values_list("duration_seconds", flat=True)
        )
        value = durations[(completed - 1) // 2 : (completed - 1) // 2 + 1].first()
        return int(value) if value is not None else None

    def _goal(self, period: Period) -> GoalFigures:
        conversions = ConversionDaily.objects.filter(
            funnel=self.funnel, day__gte=period.start, day__lte=period.end
        )
        revenue: dict[str, Decimal] = defaultdict(Decimal)
        total = 0
        for currency, count, valued, amount in (
            conversions.order_by()
            .values("currency")
            .annotate(count=Sum("conversions"), valued=Sum("valued"), amount=Sum("revenue"))
            .values_list("currency", "count", "valued", "amount")
        ):
            total += int(count)
            if valued:
                revenue[currency] += amount
        contacts = StageDaily.objects.filter(funnel=self.funnel, day__lte=period.end).aggregate(
            contacts=Sum("entrants")
        )["contacts"]
        return GoalFigures(
            event=self.funnel.goal_event,
            conversions=total,
            contacts=int(contacts or 0),
            revenue=[
                Money(value=amount.quantize(Decimal("0.01")), currency=currency)
                for currency, amount in sorted(revenue.items())
            ],
        )


def _flag_loses_most(stages: list[StageFigures]) -> list[StageFigures]:
    losing = [stage for stage in stages if stage.drop_off > 0]
    if not losing:
        return stages
    worst = max(losing, key=lambda stage: (stage.drop_off, -stage.position))
    return [StageFigures(**{**stage.__dict__, "loses_most": stage is worst}) for stage in stages]


def funnel_report(
    *, workspace: Workspace, funnel_id: uuid.UUID | str, period: Period, compare: bool = False
) -> FunnelReport:
    """Shorthand for FunnelReportQuery(...).run()."""
    return FunnelReportQuery(
        workspace=workspace, funnel_id=funnel_id, period=period, compare=compare
    ).run()
