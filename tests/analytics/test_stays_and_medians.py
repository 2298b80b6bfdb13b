"""Stage stays, which the rollups compute in SQL (rollups.stays_insert), against their
definition written out in Python over a random history; the median time in stage, which the
funnel report finds through the daily duration buckets, against a sorted list."""

from __future__ import annotations

import datetime as dt
import io
import random
import uuid
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.core.management import call_command

from analytics.models import StageStay
from analytics.queries.base import Period
from analytics.queries.funnel import FunnelReportQuery
from analytics.rollups import DURATION_BUCKETS, rollups_refresh
from contacts.models import Contact, ContactStatus
from core.models import Workspace
from funnel.models import Conversion, Funnel, StageTransition, TransitionCause
from funnel.services import EventInput, contact_move, events_record, funnel_create
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 3, 8, 0, tzinfo=dt.UTC)
DAY0 = T0.date()


def _refresh() -> None:
    while rollups_refresh():
        pass


def _move(funnel: Funnel, contact: Contact, stage_key: str, at: dt.datetime) -> None:
    contact_move(
        funnel=funnel,
        contact=contact,
        stage=funnel.stages.get(key=stage_key),
        cause=TransitionCause.MANUAL,
        occurred_at=at,
    )


def _stays_by_definition(funnel: Funnel) -> list[dict[str, Any]]:
    """What docs/analytics.md says a stay is, written out over the raw rows: a stay per
    move, ended by the contact's next move in the funnel (time order, ties by id); advanced
    when that went to a later position; converted when a conversion credited to its stage
    happened within it, both ends included; the duration in whole seconds, cut down."""
    positions = {stage.pk: stage.position for stage in funnel.stages.all()}
    conversions: dict[uuid.UUID, list[tuple[uuid.UUID | None, dt.datetime]]] = defaultdict(list)
    for conversion in Conversion.objects.filter(funnel=funnel):
        conversions[conversion.contact_id].append((conversion.stage_id, conversion.occurred_at))
    moves: dict[uuid.UUID, list[StageTransition]] = defaultdict(list)
    for transition in StageTransition.objects.filter(funnel=funnel).order_by("occurred_at", "id"):
        moves[transition.contact_id].append(transition)
    stays = []
    for contact_id, transitions in moves.items():
        for index, transition in enumerate(transitions):
            following = transitions[index + 1] if index + 1 < len(transitions) else None
            left_at = following.occurred_at if following else None
            if following is None:
                outcome = "open"
            elif positions[following.to_stage_id] > positions[transition.to_stage_id]:
                outcome = "advanced"
            else:
                outcome = "went_back"
            stays.append(
                {
                    "id": transition.pk,
                    "stage_id": transition.to_stage_id,
                    "contact_id": contact_id,
                    "entered_at": transition.occurred_at,
                    "day": transition.occurred_at.date(),
                    "entrant": transition.from_stage_id is None,
                    "left_at": left_at,
                    "outcome": outcome,
                    "converted": any(
                        stage_id == transition.to_stage_id
                        and transition.occurred_at <= at
                        and (left_at is None or at <= left_at)
                        for stage_id, at in conversions[contact_id]
                    ),
                    "duration_seconds": int((left_at - transition.occurred_at).total_seconds())
                    if left_at
                    else None,
                }
            )
    return sorted(stays, key=lambda stay: stay["id"])


def _stored_stays() -> list[dict[str, Any]]:
    return list(
        StageStay.objects.order_by("id").values(
            "id",
            "stage_id",
            "contact_id",
            "entered_at",
            "day",
            "entrant",
            "left_at",
            "outcome",
            "converted",
            "duration_seconds",
        )
    )


def test_stays_follow_their_definition_over_a_random_history(
    workspace: Workspace, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    # given 25 contacts moving forward, back and skipping at random, some at the very same
    # moment (ties go by id), with sub-second times, and buying (a conversion credited to the
    # stage they are in), some right at a move
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida", goal_event="purchase")
    keys = [stage.key for stage in funnel.stages.order_by("position")]
    chance = random.Random(7)
    purchases: list[EventInput] = []
    for number in range(25):
        contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED)
        at = T0 + dt.timedelta(minutes=chance.randrange(0, 3000))
        stage = chance.choice(keys)
        _move(funnel, contact, stage, at)
        for _move_number in range(chance.randrange(0, 6)):
            at += chance.choice(
                [dt.timedelta(0), dt.timedelta(microseconds=999_999)]
                + [dt.timedelta(seconds=chance.randrange(1, 200_000))] * 3
            )
            if number % 3 == 0 and chance.random() < 0.5:
                purchases.append(
                    EventInput(
                        name="purchase",
                        contact_id=contact.pk,
                        value=Decimal("10.00"),
                        currency="EUR",
                        occurred_at=at,
                    )
                )
            stage = chance.choice([key for key in keys if key != stage])
            _move(funnel, contact, stage, at)
    with (
        time_machine.travel(T0 + dt.timedelta(days=60), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        events_record(workspace=workspace, inputs=purchases)
    assert Conversion.objects.filter(funnel=funnel).count() == len(purchases) > 5
    expected = _stays_by_definition(funnel)
    outcomes = {stay["outcome"] for stay in expected}
    assert outcomes == {"open", "advanced", "went_back"}
    assert any(stay["converted"] for stay in expected)
    assert any(stay["duration_seconds"] == 0 for stay in expected)

    # when the live refresh keeps the stays, and when they are rebuilt
    _refresh()
    live = _stored_stays()
    call_command("analytics_rebuild", stdout=io.StringIO())
    rebuilt = _stored_stays()

    # then both are the definition, row for row
    assert live == expected
    assert rebuilt == expected


def _bucket_bounds(seconds: int) -> tuple[int, int]:
    index = max(i for i, bound in enumerate(DURATION_BUCKETS) if bound <= seconds)
    return DURATION_BUCKETS[index], DURATION_BUCKETS[index + 1]


@pytest.fixture
def stays_of_durations(
    workspace: Workspace,
) -> Callable[[list[tuple[dt.date, int]]], Funnel]:
    """A funnel where each (entry day, duration) is one contact's ended stay in attention (it
    moves on to interest after that many seconds, and stays there)."""

    def build(stays: list[tuple[dt.date, int]]) -> Funnel:
        funnel = funnel_create(
            workspace=workspace, name="AIDA", preset="aida", goal_event="purchase"
        )
        for number, (day, seconds) in enumerate(stays):
            contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED)
            entered = dt.datetime.combine(day, dt.time(6), tzinfo=dt.UTC)
            entered += dt.timedelta(seconds=number)
            _move(funnel, contact, "attention", entered)
            _move(funnel, contact, "interest", entered + dt.timedelta(seconds=seconds))
        _refresh()
        return funnel

    return build


def _median(
    workspace: Workspace, funnel: Funnel, period: Period, compare: bool = False
) -> list[int | None]:
    report = FunnelReportQuery(
        workspace=workspace, funnel_id=funnel.pk, period=period, compare=compare
    ).run()
    medians = [report.stages[0].median_time_in_stage_seconds]
    if report.previous is not None:
        medians.append(report.previous.stages[0].median_time_in_stage_seconds)
    return medians


def test_the_median_is_read_within_its_bucket_when_the_bucket_does_not_tell_it(
    workspace: Workspace,
    stays_of_durations: Callable[[list[tuple[dt.date, int]]], Funnel],
    django_assert_num_queries: Callable[..., Any],
) -> None:
    # given nine ended stays on day 0: two short, two long, and five different ones in one
    # bucket, the middle one (rank 4 of 0..8) third among them
    low, high = _bucket_bounds(3600)
    assert high - low > 6
    inside = [low + 5, low + 1, low + 3, low + 2, low + 4]
    funnel = stays_of_durations([(DAY0, seconds) for seconds in [5, 60, *inside, 86_400, 90_000]])

    # when the report is read (seven statements and the one read within the bucket)
    with django_assert_num_queries(8):
        medians = _median(workspace, funnel, Period(start=DAY0, end=DAY0))

    # then it is the lower middle of the sorted durations
    assert medians == [sorted([5, 60, *inside, 86_400, 90_000])[4]] == [low + 3]


def test_the_median_comes_from_the_buckets_alone_where_they_tell_it(
    workspace: Workspace,
    stays_of_durations: Callable[[list[tuple[dt.date, int]]], Funnel],
    django_assert_num_queries: Callable[..., Any],
) -> None:
    # given day 0: four stays of one day each and one of an hour; day 1: two stays whose
    # lower middle is the shortest of its bucket
    low, _high = _bucket_bounds(7200)
    funnel = stays_of_durations(
        [(DAY0, 86_400)] * 4
        + [(DAY0, 3600)]
        + [(DAY0 + dt.timedelta(days=1), low), (DAY0 + dt.timedelta(days=1), low + 3)]
    )

    # when day 1 is read, compared with day 0
    day1 = DAY0 + dt.timedelta(days=1)
    with django_assert_num_queries(7):
        medians = _median(workspace, funnel, Period(start=day1, end=day1), compare=True)

    # then day 1: the lower middle of two; day 0: one day (all durations in that bucket equal)
    assert medians == [low, 86_400]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_median_equals_the_sorted_middle_for_any_period(
    workspace: Workspace,
    stays_of_durations: Callable[[list[tuple[dt.date, int]]], Funnel],
    seed: int,
) -> None:
    # given 60 stays over five days, with durations from a second to weeks and repeats (not
    # zero: two moves at one moment go in the order of their ids)
    chance = random.Random(seed)
    stays = [
        (
            DAY0 + dt.timedelta(days=chance.randrange(0, 5)),
            chance.choice([1, 1, 59, 3600, 3600, 86_400])
            if chance.random() < 0.3
            else int(10 ** chance.uniform(0, 6.2)),
        )
        for _number in range(60)
    ]
    funnel = stays_of_durations(stays)

    for first, last in [(0, 4), (0, 0), (1, 3), (2, 2), (4, 4)]:
        period = Period(start=DAY0 + dt.timedelta(days=first), end=DAY0 + dt.timedelta(days=last))
        durations = sorted(seconds for day, seconds in stays if period.start <= day <= period.end)
        expected = durations[(len(durations) - 1) // 2] if durations else None

        # when / then
        assert _median(workspace, funnel, period) == [expected], (first, last)
