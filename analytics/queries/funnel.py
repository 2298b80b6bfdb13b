"""The funnel report (API.md: GET /funnels/{id}/report/): where the funnel narrows and why.

Per stage, over the stays that began in the period (cohort by entry day, so every rate of a
stage stays between 0 and 1): entered, advanced, converted, drop-off, the median time in the
stage; the contacts in it now; and the mail figures of the mails tagged with the stage (cohort
by send day). The goal: conversions and revenue in the period, over the contacts who were in
the funnel by its end. Everything comes from the daily rollups; the median, which cannot be
summed over days, from the daily duration buckets and, where they do not tell it, one read of
the stays of one bucket (analytics' own table, indexed by stage and duration).
Definitions: docs/analytics.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection, models

from analytics.models import (
    ConversionDaily,
    MessageDaily,
    StageDaily,
    StageDurationDaily,
    StageStay,
)
from analytics.queries.base import MAIL_COUNTS, MailFigures, Money, Period, ratio
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


@dataclass(frozen=True)
class _StageRow:
    stage_id: uuid.UUID
    name: str
    key: str
    position: int


@dataclass(frozen=True)
class _MedianBucket:
    """Where the middle stay of a (period, stage) lies: the bucket's shortest and longest
    duration in the period, how many stays it holds and the middle one's rank among them."""

    shortest: int
    longest: int
    stays: int
    rank: int

    @property
    def known(self) -> int | None:
        """The median when the bucket alone tells it (the rank at an end, or one duration)."""
        if self.rank == 0 or self.shortest == self.longest:
            return self.shortest
        if self.rank == self.stays - 1:
            return self.longest
        return None


class FunnelReportQuery:
    """Build the funnel report of one of the workspace's funnels.

    Funnel.DoesNotExist for another workspace's funnel (the API answers 404). With
    compare=True the report carries the same figures for the period right before.

    At scale a report's time is its number of statements and their ORM cost, so each rollup
    table is read once, for both periods, grouped by the period a row's day falls in (one
    CASE, not a filtered sum per figure and period): the report is seven statements whatever
    the number of stages, eight when a median needs a read of stays (bench/analytics.py).
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
        stages = [
            _StageRow(*row)
            for row in Stage.objects.filter(funnel=self.funnel)
            .order_by("position")
            .values_list("pk", "name", "key", "position")
        ]
        periods = [self.period, self.period.previous()] if self.compare else [self.period]
        counts, current, contacts = self._stay_sums(periods)
        mail = self._mail_sums(stages, periods)
        medians = self._medians(periods)
        goals = self._goals(periods, contacts)
        reports = [
            FunnelReport(
                funnel_id=self.funnel.pk,
                name=self.funnel.name,
                period=period,
                stages=_flag_loses_most(
                    [
                        _stage_figures(
                            stage,
                            counts.get((index, stage.stage_id), {}),
                            current.get(stage.stage_id, 0),
                            medians.get((index, stage.stage_id)),
                            mail.get((index, stage.stage_id), MailFigures()),
                        )
                        for stage in stages
                    ]
                ),
                goal=goals[index],
            )
            for index, period in enumerate(periods)
        ]
        if self.compare:
            return FunnelReport(**{**reports[0].__dict__, "previous": reports[1]})
        return reports[0]

    def _stay_sums(
        self, periods: list[Period]
    ) -> tuple[dict[tuple[int, uuid.UUID], dict[str, int]], dict[uuid.UUID, int], list[int]]:
        """StageDaily, every day of the funnel, in one query grouped by stage and by where
        the day lies (a period's index, BEFORE or AFTER them): the counts per period and
        stage, the open stays of all time per stage (the contacts in it now), and per period
        the first entries up to its end (the goal's contacts)."""
        rows = _rollup_sums(
            StageDaily,
            where={"funnel": self.funnel.pk},
            group_by=["stage"],
            aggregates={count: "SUM" for count in (*STAGE_COUNTS, "still_in")},
            periods=periods,
            every_day=True,
        )
        counts = {
            (row["period"], row["stage"]): {count: int(row[count]) for count in STAGE_COUNTS}
            for row in rows
            if row["period"] >= 0
        }
        current: dict[uuid.UUID, int] = {}
        for row in rows:
            current[row["stage"]] = current.get(row["stage"], 0) + int(row["still_in"])
        contacts = [
            sum(
                int(row["entrants"])
                for row in rows
                if row["period"] == BEFORE
                or (row["period"] >= 0 and periods[row["period"]].end <= period.end)
            )
            for period in periods
        ]
        return counts, current, contacts

    def _mail_sums(
        self, stages: list[_StageRow], periods: list[Period]
    ) -> dict[tuple[int, uuid.UUID], MailFigures]:
        """MessageDaily of the stages' mails in one query, summed per period and stage."""
        rows = _rollup_sums(
            MessageDaily,
            where={
                "workspace": self.workspace.pk,
                "stage_id": [stage.stage_id for stage in stages],
            },
            group_by=["stage_id"],
            aggregates={count: "SUM" for count in MAIL_COUNTS},
            periods=periods,
        )
        return {(row["period"], row["stage_id"]): MailFigures.of(row) for row in rows}

    def _medians(self, periods: list[Period]) -> dict[tuple[int, uuid.UUID], int]:
        """The median duration of the stays begun in each period that have ended, per stage
        (the lower middle for an even count: always a duration that occurred).

        A median cannot be summed over days. StageDurationDaily, summed over the period, says
        which duration bucket holds the middle stay and its rank there; that bucket's
        shortest or longest duration is the answer when the rank is at an end or all its
        durations are equal. Otherwise the stays of the bucket's range are read from StageStay
        in duration order up to that rank (one statement for all such stages and periods):
        a bucket holds a small share of the stays, and the read starts from its nearer end.
        """
        buckets: dict[tuple[int, uuid.UUID], list[tuple[int, int, int, int]]] = {}
        for row in _rollup_sums(
            StageDurationDaily,
            where={"funnel": self.funnel.pk},
            group_by=["stage", "bucket"],
            aggregates={"stays": "SUM", "shortest": "MIN", "longest": "MAX"},
            periods=periods,
        ):
            buckets.setdefault((row["period"], row["stage"]), []).append(
                (int(row["bucket"]), int(row["stays"]), int(row["shortest"]), int(row["longest"]))
            )
        medians: dict[tuple[int, uuid.UUID], int] = {}
        unknown: list[tuple[tuple[int, uuid.UUID], _MedianBucket]] = []
        for key, found in buckets.items():
            middle = _median_bucket(found)
            if middle.known is not None:
                medians[key] = middle.known
            else:
                unknown.append((key, middle))
        if unknown:
            medians.update(self._read_medians(periods, unknown))
        return medians

    def _read_medians(
        self, periods: list[Period], unknown: list[tuple[tuple[int, uuid.UUID], _MedianBucket]]
    ) -> dict[tuple[int, uuid.UUID], int]:
        selects: list[str] = []
        params: list[Any] = []
        for (index, stage_id), middle in unknown:
            period = periods[index]
            # From the nearer end of the bucket: at most half of it is read.
            from_top = middle.rank >= middle.stays // 2
            offset = middle.stays - 1 - middle.rank if from_top else middle.rank
            durations = (
                StageStay.objects.filter(
                    stage_id=stage_id,
                    day__gte=period.start,
                    day__lte=period.end,
                    duration_seconds__isnull=False,
                    duration_seconds__gte=middle.shortest,
                    duration_seconds__lte=middle.longest,
                )
                .order_by("-duration_seconds" if from_top else "duration_seconds")
                .values("duration_seconds")[offset : offset + 1]
            )
            sql, subquery_params = durations.query.sql_with_params()
            selects.append(f"({sql})")
            params.extend(subquery_params)
        with connection.cursor() as cursor:
            # One row of scalar subqueries, each compiled by the ORM with its parameters.
            cursor.execute("SELECT " + ", ".join(selects), params)
            values = cursor.fetchone()
        return {key: int(value) for (key, _middle), value in zip(unknown, values, strict=True)}

    def _goals(self, periods: list[Period], contacts: list[int]) -> list[GoalFigures]:
        """ConversionDaily in one query: conversions and revenue per period and currency."""
        rows = _rollup_sums(
            ConversionDaily,
            where={"funnel": self.funnel.pk},
            group_by=["currency"],
            aggregates={"conversions": "SUM", "valued": "SUM", "revenue": "SUM"},
            periods=periods,
        )
        goals = []
        for index in range(len(periods)):
            mine = [row for row in rows if row["period"] == index]
            # SQLite sums decimals as floats: back to the cents they were.
            revenue = {
                row["currency"]: Decimal(str(row["revenue"])) for row in mine if row["valued"]
            }
            goals.append(
                GoalFigures(
                    event=self.funnel.goal_event,
                    conversions=sum(int(row["conversions"]) for row in mine),
                    contacts=contacts[index],
                    revenue=[
                        Money(value=amount.quantize(Decimal("0.01")), currency=currency)
                        for currency, amount in sorted(revenue.items())
                    ],
                )
            )
        return goals


# Where a rollup row's day lies when it is in none of the periods (StageDaily: every day).
BEFORE, AFTER = -1, -2


def _rollup_sums(
    model: type[models.Model],
    *,
    where: dict[str, Any],
    group_by: list[str],
    aggregates: dict[str, str],
    periods: list[Period],
    every_day: bool = False,
) -> list[dict[str, Any]]:
    """One statement over the daily rollup rows of `model` matching `where` (field: value,
    or a list of values): per `group_by` fields and the period a row's day lies in ("period":
    its index in `periods`; BEFORE or AFTER them), the `aggregates` (field: SUM, MIN or
    MAX). Only the rows of the periods' days unless `every_day`.

    Written out rather than built with the ORM: a report's rollup rows are few, and building
    and compiling the aggregates (a CASE and a dozen sums per table) took longer than running
    them (bench/analytics.py). Names come from the model's fields, every value is a
    parameter, and the SQL is the same for PostgreSQL and SQLite."""
    fields: dict[str, Any] = {
        name: model._meta.get_field(name) for name in [*where, *group_by, *aggregates]
    }
    quote, date = connection.ops.quote_name, connection.ops.adapt_datefield_value
    column = {name: quote(field.column) for name, field in fields.items()}
    day = quote("day")
    first, last = min(p.start for p in periods), max(p.end for p in periods)
    period = f"CASE WHEN {day} < %s THEN {BEFORE} WHEN {day} > %s THEN {AFTER}"
    params: list[Any] = [date(first), date(last)]
    for index, each in enumerate(periods):
        period += f" WHEN {day} >= %s AND {day} <= %s THEN {index}"
        params += [date(each.start), date(each.end)]
    conditions = []
    for name, value in where.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            return []
        conditions.append(f"{column[name]} IN ({', '.join(['%s'] * len(values))})")
        params += [fields[name].get_db_prep_value(each, connection) for each in values]
    if not every_day:
        conditions.append(f"{day} >= %s AND {day} <= %s")
        params += [date(first), date(last)]
    assert set(aggregates.values()) <= {"SUM", "MIN", "MAX"}
    groups = ", ".join(column[name] for name in group_by)
    sql = (  # Names from the model, every value a parameter.
        f"SELECT {groups}, {period} END AS period, "  # noqa: S608
        + ", ".join(f"{function}({column[name]})" for name, function in aggregates.items())
        + f" FROM {quote(model._meta.db_table)} WHERE {' AND '.join(conditions)}"
        f" GROUP BY {groups}, period"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = [
            dict(zip([*group_by, "period", *aggregates], row, strict=True))
            for row in cursor.fetchall()
        ]
    # Ids as the ORM gives them (SQLite stores uuids as hex text).
    for name in group_by:
        if isinstance(fields[name], models.ForeignKey | models.UUIDField):
            for row in rows:
                row[name] = fields[name].to_python(row[name])
    return rows


def _median_bucket(buckets: list[tuple[int, int, int, int]]) -> _MedianBucket:
    """The bucket (lower bound, stays, shortest, longest) holding the lower middle stay."""
    rank = (sum(stays for _bucket, stays, _shortest, _longest in buckets) - 1) // 2
    for _bucket, stays, shortest, longest in sorted(buckets):
        if rank < stays:
            return _MedianBucket(shortest=shortest, longest=longest, stays=stays, rank=rank)
        rank -= stays
    raise AssertionError("the rank lies within the buckets")


def _stage_figures(
    stage: _StageRow,
    counts: dict[str, int],
    current: int,
    median: int | None,
    mail: MailFigures,
) -> StageFigures:
    return StageFigures(
        stage_id=stage.stage_id,
        name=stage.name,
        key=stage.key,
        position=stage.position,
        current=current,
        median_time_in_stage_seconds=median,
        mail=mail,
        entered=counts.get("entered", 0),
        entrants=counts.get("entrants", 0),
        advanced=counts.get("advanced", 0),
        went_back=counts.get("went_back", 0),
        converted=counts.get("converted", 0),
        progressed=counts.get("progressed", 0),
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
