"""Reads of the funnel app, scoped to a workspace."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Count, F, Prefetch, QuerySet, Window
from django.db.models.functions import RowNumber

from core.models import Workspace
from funnel.models import ContactStage, Funnel, Stage, StageRule

CARDS_PER_COLUMN = 50


def funnel_list(*, workspace: Workspace) -> QuerySet[Funnel]:
    return Funnel.objects.filter(workspace=workspace).prefetch_related(
        Prefetch("stages", queryset=Stage.objects.order_by("position"))
    )


def funnel_get(*, workspace: Workspace, funnel_id: uuid.UUID | str) -> Funnel:
    """Funnel.DoesNotExist for another workspace's funnel."""
    return funnel_list(workspace=workspace).get(pk=funnel_id)


def stage_counts(*, funnel: Funnel) -> dict[uuid.UUID, int]:
    """How many contacts are in each stage now."""
    rows = (
        ContactStage.objects.filter(funnel=funnel)
        .values("stage_id")
        .annotate(count=Count("pk"))
        .values_list("stage_id", "count")
    )
    return dict(rows)


def funnel_rules(*, funnel: Funnel) -> QuerySet[StageRule]:
    return StageRule.objects.filter(funnel=funnel).select_related("move_to")


def contact_stage_map(*, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
    """For each contact: funnel id -> current stage id (the "stages" of API.md's contact)."""
    stages: dict[uuid.UUID, dict[str, str]] = {}
    rows = ContactStage.objects.filter(contact_id__in=list(contact_ids)).values_list(
        "contact_id", "funnel_id", "stage_id"
    )
    for contact_id, funnel_id, stage_id in rows:
        stages.setdefault(contact_id, {})[str(funnel_id)] = str(stage_id)
    return stages


@dataclass(frozen=True)
class FunnelSummary:
    funnel: Funnel
    stages: list[tuple[Stage, int]]
    total: int


@dataclass(frozen=True)
class BoardColumn:
    stage: Stage
    count: int
    cards: list[ContactStage] = field(default_factory=list)

    @property
    def more(self) -> int:
        return max(self.count - len(self.cards), 0)


def funnel_summaries(*, workspace: Workspace) -> list[FunnelSummary]:
    """Every funnel of the workspace with the number of contacts in each stage (two queries)."""
    counts = dict(
        ContactStage.objects.filter(funnel__workspace=workspace)
        .values("stage_id")
        .annotate(count=Count("pk"))
        .values_list("stage_id", "count")
    )
    summaries = []
    for funnel in funnel_list(workspace=workspace):
        stages = [(stage, counts.get(stage.pk, 0)) for stage in funnel.stages.all()]
        summaries.append(
            FunnelSummary(funnel=funnel, stages=stages, total=sum(count for _s, count in stages))
        )
    return summaries


def board_columns(*, funnel: Funnel) -> list[BoardColumn]:
    """One column per stage in order: its count and its newest-entered contacts (a fixed
    number of queries whatever the number of stages or contacts)."""
    counts = stage_counts(funnel=funnel)
    ranked = (
        ContactStage.objects.filter(funnel=funnel)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("stage_id")],
                order_by=[F("entered_at").desc(), F("contact_id").desc()],
            )
        )
        .filter(rank__lte=CARDS_PER_COLUMN)
        .select_related("contact")
        .order_by("stage_id", "rank")
    )
    cards: dict[uuid.UUID, list[ContactStage]] = defaultdict(list)
    for membership in ranked:
        cards[membership.stage_id].append(membership)
    return [
        BoardColumn(stage=stage, count=counts.get(stage.pk, 0), cards=cards[stage.pk])
        for stage in funnel.stages.all()
    ]
