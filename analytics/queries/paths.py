"""Conversion paths: the most frequent sequences of touchpoints before a funnel's goal, and the
paths that end without one.

A journey is one contact who moved in the funnel or converted during the period. Its
touchpoints in the period, in time order: mails clicked by a person ("mail:<sequence> /
<step>" or "mail:<broadcast>"), events other than the goal ("event:<name>"), and stage moves
("stage:<stage>"); a repeat of the same touchpoint right after itself counts once, and only
the last MAX_STEPS before the end count. A converting journey ends at its first conversion in
the period; the others at the period's end. Per path: journeys, conversions, and the
conversion rate (converting journeys / journeys).

Paths are per contact and ordered, which no daily sum can give: this report reads the period's
moves, events and clicked mails of the funnel's contacts.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

from django.utils.translation import gettext as _

from analytics.queries.base import Period, ratio
from campaigns.models import Broadcast, Message, Sequence
from core.exceptions import ApplicationError
from core.models import Workspace
from funnel.models import Conversion, Event, Funnel, Stage, StageTransition

MAX_STEPS = 5
MAX_LIMIT = 100


@dataclass(frozen=True)
class PathFigures:
    steps: tuple[str, ...]
    journeys: int
    conversions: int

    @property
    def conversion_rate(self) -> float:
        return ratio(self.conversions, self.journeys)

    @property
    def without_conversion(self) -> int:
        return self.journeys - self.conversions


@dataclass(frozen=True)
class PathsReport:
    period: Period
    funnel_id: uuid.UUID
    journeys: int
    conversions: int
    converting: list[PathFigures]
    non_converting: list[PathFigures]

    @property
    def conversion_rate(self) -> float:
        return ratio(self.conversions, self.journeys)


class ConversionPathsQuery:
    """Build the paths of one of the workspace's funnels (DoesNotExist for another's); at most
    `limit` (1 to 100) paths in each list."""

    def __init__(
        self, *, workspace: Workspace, funnel_id: uuid.UUID | str, period: Period, limit: int = 20
    ) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise ApplicationError(
                _("Choose 1 to %(limit)d.") % {"limit": MAX_LIMIT}, field="limit"
            )
        self.workspace = workspace
        self.funnel = Funnel.objects.get(workspace=workspace, pk=funnel_id)
        self.period = period
        self.limit = limit

    def run(self) -> PathsReport:
        window = {
            "occurred_at__gte": self.period.starts_at,
            "occurred_at__lt": self.period.ends_at,
        }
        moves = list(
            StageTransition.objects.filter(funnel=self.funnel, **window).values_list(
                "contact_id", "occurred_at", "to_stage_id"
            )
        )
        first_conversion: dict[uuid.UUID, dt.datetime] = {}
        for contact_id, at in (
            Conversion.objects.filter(funnel=self.funnel, **window)
            .order_by("occurred_at")
            .values_list("contact_id", "occurred_at")
        ):
            first_conversion.setdefault(contact_id, at)
        contacts = {contact_id for contact_id, _at, _stage in moves} | set(first_conversion)
        touches: dict[uuid.UUID, list[tuple[dt.datetime, int, str]]] = defaultdict(list)
        stage_names = dict(Stage.objects.filter(funnel=self.funnel).values_list("pk", "name"))
        for contact_id, at, stage_id in moves:
            touches[contact_id].append((at, 2, f"stage:{stage_names.get(stage_id, '')}"))
        events = Event.objects.filter(workspace=self.workspace, contact_id__in=contacts, **window)
        if self.funnel.goal_event:
            events = events.exclude(name=self.funnel.goal_event)
        for contact_id, at, name in events.values_list("contact_id", "occurred_at", "name"):
            touches[contact_id].append((at, 1, f"event:{name}"))
        for contact_id, at, label in self._clicks(contacts):
            touches[contact_id].append((at, 0, label))
        paths: Counter[tuple[str, ...]] = Counter()
        converted: Counter[tuple[str, ...]] = Counter()
        for contact_id in contacts:
            end = first_conversion.get(contact_id)
            ordered = sorted(
                touch for touch in touches[contact_id] if end is None or touch[0] <= end
            )
            steps: list[str] = []
            for _at, _rank, label in ordered:
                if not steps or steps[-1] != label:
                    steps.append(label)
            path = tuple(steps[-MAX_STEPS:])
            paths[path] += 1
            if end is not None:
                converted[path] += 1
        figures = [
            PathFigures(steps=path, journeys=count, conversions=converted[path])
            for path, count in paths.items()
        ]
        return PathsReport(
            period=self.period,
            funnel_id=self.funnel.pk,
            journeys=len(contacts),
            conversions=len(first_conversion),
            converting=sorted(
                (path for path in figures if path.conversions),
                key=lambda path: (-path.conversions, path.steps),
            )[: self.limit],
            non_converting=sorted(
                (path for path in figures if path.without_conversion),
                key=lambda path: (-path.without_conversion, path.steps),
            )[: self.limit],
        )

    def _clicks(self, contacts: set[uuid.UUID]) -> list[tuple[uuid.UUID, dt.datetime, str]]:
        rows = list(
            Message.objects.filter(
                workspace=self.workspace,
                contact_id__in=contacts,
                clicked_at__gte=self.period.starts_at,
                clicked_at__lt=self.period.ends_at,
            ).values_list(
                "contact_id", "clicked_at", "enrollment__sequence_id", "step_key", "broadcast_id"
            )
        )
        names = dict(
            Sequence.objects.filter(pk__in={row[2] for row in rows if row[2]}).values_list(
                "pk", "name"
            )
        ) | dict(
            Broadcast.objects.filter(pk__in={row[4] for row in rows if row[4]}).values_list(
                "pk", "name"
            )
        )
        return [
            (
                contact_id,
                at,
                f"mail:{names.get(broadcast_id, '')}"
                if broadcast_id
                else f"mail:{names.get(sequence_id, '')} / {step_key}",
            )
            for contact_id, at, sequence_id, step_key, broadcast_id in rows
            if at is not None
        ]
