"""Time series of every mail rate (and, for a funnel, its entries and conversions) by day or
by ISO week, from the daily rollups; days without mails are there, as zeros, so a chart has a
point for every bucket.

Scope: the whole workspace, or one sequence, broadcast, funnel stage, or funnel (the mails
tagged with its stages, plus its stage entries and goal conversions).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import Sum
from django.utils.translation import gettext as _

from analytics.models import ConversionDaily, MessageDaily, StageDaily
from analytics.queries.base import MAIL_COUNTS, MailFigures, Period
from analytics.rollups import rollups_refresh_pending
from campaigns.models import Broadcast, Sequence
from core.exceptions import ApplicationError
from core.models import Workspace
from funnel.models import Funnel, Stage

INTERVALS = ("day", "week")


@dataclass(frozen=True)
class Point:
    """One bucket: its first and last day, the mail figures of mails sent in it and (for a
    funnel) the stays begun and the goal conversions in it."""

    start: dt.date
    end: dt.date
    mail: MailFigures
    entered: int = 0
    conversions: int = 0


@dataclass(frozen=True)
class TimeSeries:
    period: Period
    interval: str
    points: list[Point]
    previous: TimeSeries | None = None


def _bucket(day: dt.date, interval: str) -> dt.date:
    return day - dt.timedelta(days=day.weekday()) if interval == "week" else day


class TimeSeriesQuery:
    """Build the series. Scope by at most one of sequence_id, broadcast_id, stage_id,
    funnel_id (each must be the workspace's: DoesNotExist otherwise); interval "day" or
    "week" (ApplicationError naming "interval" otherwise)."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        period: Period,
        interval: str = "day",
        sequence_id: uuid.UUID | str | None = None,
        broadcast_id: uuid.UUID | str | None = None,
        stage_id: uuid.UUID | str | None = None,
        funnel_id: uuid.UUID | str | None = None,
        compare: bool = False,
    ) -> None:
        if interval not in INTERVALS:
            raise ApplicationError(_("Use day or week."), field="interval")
        scopes = [sequence_id, broadcast_id, stage_id, funnel_id]
        if sum(scope is not None for scope in scopes) > 1:
            raise ApplicationError(
                _("Choose at most one of sequence, broadcast, stage and funnel."), field="scope"
            )
        self.workspace = workspace
        self.period = period
        self.interval = interval
        self.compare = compare
        self.mail_filter: dict[str, Any] = {}
        self.funnel: Funnel | None = None
        if sequence_id is not None:
            self.mail_filter["sequence"] = Sequence.objects.get(workspace=workspace, pk=sequence_id)
        elif broadcast_id is not None:
            self.mail_filter["broadcast"] = Broadcast.objects.get(
                workspace=workspace, pk=broadcast_id
            )
        elif stage_id is not None:
            stage = Stage.objects.get(funnel__workspace=workspace, pk=stage_id)
            self.mail_filter["stage_id"] = stage.pk
        elif funnel_id is not None:
            self.funnel = Funnel.objects.get(workspace=workspace, pk=funnel_id)
            self.mail_filter["stage_id__in"] = list(
                Stage.objects.filter(funnel=self.funnel).values_list("pk", flat=True)
            )

    def run(self) -> TimeSeries:
        rollups_refresh_pending(workspace_id=str(self.workspace.pk))
        series = self._series(self.period)
        if self.compare:
            series = TimeSeries(
                **{**series.__dict__, "previous": self._series(self.period.previous())}
            )
        return series

    def _series(self, period: Period) -> TimeSeries:
        in_period = {"day__gte": period.start, "day__lte": period.end}
        mail: dict[dt.date, MailFigures] = {}
        rows = (
            MessageDaily.objects.filter(workspace=self.workspace, **in_period, **self.mail_filter)
            .order_by()
            .values("day")
            .annotate(**{count: Sum(count) for count in MAIL_COUNTS})
        )
        for row in rows:
            bucket = _bucket(row["day"], self.interval)
            mail[bucket] = mail.get(bucket, MailFigures()) + MailFigures.of(row)
        entered: dict[dt.date, int] = {}
        conversions: dict[dt.date, int] = {}
        if self.funnel is not None:
            for day, count in (
                StageDaily.objects.filter(funnel=self.funnel, **in_period)
                .order_by()
                .values("day")
                .annotate(count=Sum("entered"))
                .values_list("day", "count")
            ):
                bucket = _bucket(day, self.interval)
                entered[bucket] = entered.get(bucket, 0) + int(count)
            for day, count in (
                ConversionDaily.objects.filter(funnel=self.funnel, **in_period)
                .order_by()
                .values("day")
                .annotate(count=Sum("conversions"))
                .values_list("day", "count")
            ):
                bucket = _bucket(day, self.interval)
                conversions[bucket] = conversions.get(bucket, 0) + int(count)
        points = []
        bucket = _bucket(period.start, self.interval)
        step = dt.timedelta(days=7 if self.interval == "week" else 1)
        while bucket <= period.end:
            points.append(
                Point(
                    start=max(bucket, period.start),
                    end=min(bucket + step - dt.timedelta(days=1), period.end),
                    mail=mail.get(bucket, MailFigures()),
                    entered=entered.get(bucket, 0),
                    conversions=conversions.get(bucket, 0),
                )
            )
            bucket += step
        return TimeSeries(period=period, interval=self.interval, points=points)
