"""Reads of the funnel app, scoped to a workspace."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db.models import Count, Prefetch, QuerySet

from core.models import Workspace
from funnel.models import ContactStage, Funnel, Stage, StageRule


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
